"""Host and Origin patterns, and the refusal to serve a network address unprotected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from insight_mcp.agents.settings import SettingsError, load_settings
from insight_mcp.servers.hosts import (
    MEMO,
    HostOriginMiddleware,
    allowed_hosts,
    check_exposure,
    host_matches,
    origin_matches,
)


@pytest.mark.parametrize(("host", "pattern", "ok"), [
    ("insight.corp.example:9000", "insight.corp.example:*", True),
    ("insight.corp.example", "insight.corp.example:*", True),  # a default port is a port too
    ("insight.corp.example:9000", "insight.corp.example", True),
    ("insight.corp.example:9000", "insight.corp.example:9000", True),
    ("insight.corp.example:9001", "insight.corp.example:9000", False),
    ("INSIGHT.Corp.Example", "insight.corp.example", True),
    ("a.example.com", "*.example.com", True),
    ("a.b.example.com:443", "*.example.com", True),
    ("example.com", "*.example.com", False),
    ("example.com.attacker.net", "*.example.com", False),
    ("evilexample.com", "*.example.com", False),
    ("[::1]:8765", "[::1]", True),
    ("[::1]:8765", "[::2]", False),
    ("127.0.0.1:8765", "127.0.0.1", True),
    ("127.0.0.10:8765", "127.0.0.1", False),
])
def test_host_patterns(host: str, pattern: str, ok: bool) -> None:
    assert host_matches(host, pattern) is ok


@pytest.mark.parametrize(("origin", "pattern", "ok"), [
    ("http://localhost:5173", "http://localhost", True),
    ("https://localhost:5173", "http://localhost", False),
    ("https://app.example.com", "https://*.example.com", True),
    ("https://app.example.com.evil.net", "https://*.example.com", False),
    ("null", "http://localhost", False),
    ("http://localhost/path", "http://localhost", False),
])
def test_origin_patterns(origin: str, pattern: str, ok: bool) -> None:
    assert origin_matches(origin, pattern) is ok


def test_a_specific_bind_address_is_an_allowed_host(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, host="10.1.2.3", api_token="t")
    assert "10.1.2.3" in allowed_hosts(settings)
    check_exposure(settings)  # reachable by its address, and protected by a token


def test_loopback_needs_nothing(tmp_path: Path) -> None:
    check_exposure(load_settings(home=tmp_path))


def test_wildcard_bind_needs_token_and_hosts(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"INSIGHT_API_TOKEN.*INSIGHT_ALLOWED_HOSTS"):
        check_exposure(load_settings(home=tmp_path, host="0.0.0.0"))
    check_exposure(load_settings(home=tmp_path, host="0.0.0.0", api_token="t", allowed_hosts=["h.example"]))


def test_allowed_hosts_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIGHT_ALLOWED_HOSTS", "insight.corp.example:*, *.example.com")
    assert load_settings(home=tmp_path).allowed_hosts == ["insight.corp.example:*", "*.example.com"]
    monkeypatch.setenv("INSIGHT_ALLOWED_HOSTS", '["a.example"]')
    assert load_settings(home=tmp_path).allowed_hosts == ["a.example"]
    monkeypatch.setenv("INSIGHT_ALLOWED_HOSTS", "[broken")
    with pytest.raises(SettingsError, match="INSIGHT_ALLOWED_HOSTS"):
        load_settings(home=tmp_path)


def _status_of(app: HostOriginMiddleware, headers: list[tuple[bytes, bytes]]) -> int:
    """Drive the middleware as a server would, with one request; the status it answered."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""}
    anyio.run(app, scope, receive, send)
    return int(sent[0]["status"])  # type: ignore[call-overload]


def test_the_middleware_answers_the_same_each_time_and_remembers_only_so_many_values() -> None:
    async def ok(scope: object, receive: object, send: Callable[[dict[str, object]], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = HostOriginMiddleware(ok, hosts=["127.0.0.1", "*.example.com"], origins=["http://127.0.0.1"])
    for _ in range(2):  # the second time from what the middleware remembers
        assert _status_of(app, [(b"host", b"127.0.0.1:8765")]) == 200
        assert _status_of(app, [(b"host", b"evil.test")]) == 421
        assert _status_of(app, []) == 421
        assert _status_of(app, [(b"host", b"a.example.com"), (b"origin", b"http://127.0.0.1")]) == 200
        assert _status_of(app, [(b"host", b"a.example.com"), (b"origin", b"http://evil.test")]) == 403
        # The first Host header decides, as Starlette reads them.
        assert _status_of(app, [(b"host", b"evil.test"), (b"host", b"127.0.0.1")]) == 421
    for n in range(MEMO + 50):  # a client inventing host names cannot grow the server's memory
        assert _status_of(app, [(b"host", f"h{n}.example.com".encode())]) == 200
    assert len(app._host_ok) == MEMO
    assert _status_of(app, [(b"host", b"evil.test")]) == 421
    assert _status_of(app, [(b"host", b"new.evil.test")]) == 421
