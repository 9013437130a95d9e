"""`insight-mcp serve` as a real subprocess for end-to-end tests, its log kept in a file that tests can read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from insight_mcp.clients.demo import free_port

EXE = Path(sys.executable).with_name("insight-mcp")


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def serve(workspace: Path, home: Path, *args: str, **env: str) -> Served:
    """Start `insight-mcp serve` on a free loopback port and wait until /health answers."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "serve.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHT_") and k != "MLFLOW_TRACKING_URI"}
    full_env |= {"INSIGHT_HOME": str(home), "INSIGHT_WORKSPACE_FILE": str(workspace), **env}
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(EXE), "serve", "--port", str(port), *args], env=full_env, stderr=sink,
                                stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return Served(proc, base, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("serve did not answer /health within 60 s")
