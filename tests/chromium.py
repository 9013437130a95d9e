"""Headless Chromium driven over the DevTools protocol, so tests can check what a real browser makes of our HTML.

Chromium speaks CDP over two pipes (`--remote-debugging-pipe`: commands on fd 3, replies on fd 4, each message
JSON ended by a NUL byte), so no websocket library, port or Playwright download is needed. Every wait has a
timeout and the whole process group is killed on close, so a test can fail but never hang or leak a browser.

    with Browser() as browser:
        page = browser.new_page()
        page.navigate(path.as_uri())
        assert page.evaluate("document.title") == "..."
        assert page.problems == []
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

DEFAULT_TIMEOUT = 20.0
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Moves the browser's pipe ends to fds 3 and 4 and execs it: `sh` cannot name fds above 9, and preexec_fn is
# unsafe in a process with threads.
TRAMPOLINE = """
import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--mute-audio",
)


class ChromiumError(RuntimeError):
    """Chromium is missing, died, or refused a command."""


class ChromiumTimeout(ChromiumError, TimeoutError):
    """A reply or event did not come in time: the test fails instead of hanging."""


class EvaluationError(ChromiumError):
    """The page's JavaScript threw while evaluating an expression."""


def find_chromium() -> str:
    """The browser to run: $CHROMIUM_PATH, else the first known name on PATH; a clear error when there is none."""
    override = os.environ.get("CHROMIUM_PATH")
    if override:
        return shutil.which(override) or override
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumError("Chromium is required for the HTML report tests and was not found on PATH: install it with "
                        "`apt-get install -y chromium` (Debian) or set CHROMIUM_PATH to the browser's executable.")


class Browser:
    """One headless Chromium process with a private profile; use as a context manager so it is always killed."""

    def __init__(self, executable: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.executable = executable or find_chromium()
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._to_browser = -1
        self._from_browser = -1
        self._next_id = 0
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._responses: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._closed = False
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- process -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the browser and check it answers; on any failure the process is killed before raising."""
        self._tmp = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        tmp = Path(self._tmp.name)
        cmd_read, cmd_write = os.pipe()
        reply_read, reply_write = os.pipe()
        args = [self.executable, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={tmp / 'profile'}",
                "about:blank"]
        try:
            with (tmp / "stderr.log").open("wb") as stderr:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", TRAMPOLINE, str(cmd_read), str(reply_write), *args],
                    pass_fds=(cmd_read, reply_write),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                )
        except OSError as exc:
            for fd in (cmd_read, cmd_write, reply_read, reply_write):
                os.close(fd)
            self._cleanup_tmp()
            raise ChromiumError(f"could not start {self.executable}: {exc}") from exc
        os.close(cmd_read)
        os.close(reply_write)
        self._to_browser, self._from_browser = cmd_write, reply_read
        self._reader = threading.Thread(target=self._read_loop, name="chromium-cdp", daemon=True)
        self._reader.start()
        try:
            self.send("Browser.getVersion")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Ask the browser to quit, then kill its whole process group; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None and not self._closed:
            with contextlib.suppress(ChromiumError, OSError):
                self.send("Browser.close", timeout=3)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        # Renderers and helpers share the group we created; none may outlive the test.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        # The reader sees end-of-file once the browser is gone; join it before its descriptor is closed.
        if self._reader is not None:
            self._reader.join(timeout=5)
        for fd in (self._to_browser, self._from_browser):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_browser = self._from_browser = -1
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._proc = None
        self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def stderr_tail(self, chars: int = 2000) -> str:
        """The end of the browser's stderr, for error messages when it dies."""
        if self._tmp is None:
            return ""
        log = Path(self._tmp.name) / "stderr.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    # -- protocol ------------------------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._responses[message["id"]] = message
                    else:
                        self._events.append(message)
                self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one command and wait for its result; a protocol error or a dead browser raises ChromiumError."""
        with self._cond:
            if self._closed:
                raise ChromiumError(f"{method}: the browser has exited\n{self.stderr_tail()}")
            self._next_id += 1
            msg_id = self._next_id
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        data = json.dumps(message).encode() + b"\0"
        with self._write_lock:
            view = memoryview(data)
            while view:
                try:
                    written = os.write(self._to_browser, view)
                except OSError as exc:
                    raise ChromiumError(f"{method}: cannot write to the browser: {exc}") from exc
                view = view[written:]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            while msg_id not in self._responses:
                if self._closed:
                    raise ChromiumError(f"{method}: the browser exited before answering\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChromiumTimeout(f"{method}: no answer from Chromium within the timeout")
                self._cond.wait(remaining)
            reply = self._responses.pop(msg_id)
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}".strip())
        result: dict[str, Any] = reply.get("result", {})
        return result

    def events(self, session_id: str | None = None, method: str | None = None) -> list[dict[str, Any]]:
        """Events received so far, optionally only one session's and one method's."""
        with self._cond:
            return [e for e in self._events if (session_id is None or e.get("sessionId") == session_id)
                    and (method is None or e.get("method") == method)]

    def event_count(self) -> int:
        """A mark to wait for events after: pass it to wait_event as `after`."""
        with self._cond:
            return len(self._events)

    def wait_event(self, method: str, *, session_id: str | None = None, after: int = 0,
                   timeout: float | None = None) -> dict[str, Any]:
        """The first event named `method` received after mark `after`, waiting for it at most `timeout` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cond:
            index = after
            while True:
                for event in self._events[index:]:
                    if event.get("method") == method and (session_id is None or event.get("sessionId") == session_id):
                        return event
                index = len(self._events)
                if self._closed:
                    raise ChromiumError(f"the browser exited while waiting for {method}\n{self.stderr_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChromiumTimeout(f"no {method} event within the timeout")
                self._cond.wait(remaining)

    def new_page(self) -> Page:
        """A fresh tab in its own browser context (no shared storage), with Page, Runtime, Log and Network on."""
        context = self.send("Target.createBrowserContext")["browserContextId"]
        target = self.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target, context)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        return page


class Page:
    """One tab: navigate, evaluate JavaScript, and read what went wrong (console, exceptions, network)."""

    def __init__(self, browser: Browser, session_id: str, target_id: str, context_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.target_id = target_id
        self.context_id = context_id

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
             ) -> dict[str, Any]:
        """A CDP command addressed to this tab."""
        return self.browser.send(method, params, session_id=self.session_id, timeout=timeout)

    def navigate(self, url: str, *, timeout: float | None = None) -> None:
        """Load `url` and return once its load event fired."""
        mark = self.browser.event_count()
        result = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise ChromiumError(f"navigating to {url}: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", session_id=self.session_id, after=mark, timeout=timeout)

    def evaluate(self, expression: str, *, timeout: float | None = None) -> Any:
        """The JSON value of a JavaScript expression (promises awaited); a thrown error raises EvaluationError."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise EvaluationError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout: float | None = None, interval: float = 0.05) -> Any:
        """Poll `expression` until it is truthy and return its value; ChromiumTimeout if it never is."""
        deadline = time.monotonic() + (self.browser.timeout if timeout is None else timeout)
        while True:
            value = self.evaluate(expression, timeout=timeout)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ChromiumTimeout(f"{expression!r} was still {value!r} after the timeout")
            time.sleep(interval)

    @property
    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and error log entries (CSP violations among them)."""
        found: list[str] = []
        for event in self.browser.events(self.session_id):
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in {"error", "warning", "assert"}:
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                found.append(f"console.{params['type']}: {args}")
            elif event["method"] == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                found.append(f"uncaught: {text}")
            elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return found

    @property
    def requests(self) -> list[str]:
        """Every URL the tab asked for, the document itself included."""
        return [e["params"]["request"]["url"]
                for e in self.browser.events(self.session_id, "Network.requestWillBeSent")]

    def close(self) -> None:
        """Close the tab and drop its browser context."""
        with contextlib.suppress(ChromiumError):
            self.browser.send("Target.closeTarget", {"targetId": self.target_id})
            self.browser.send("Target.disposeBrowserContext", {"browserContextId": self.context_id})
