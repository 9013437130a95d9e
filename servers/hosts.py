"""Who may address the HTTP server: Host and Origin checks against DNS rebinding, and no open network serving.

A browser tricked by DNS rebinding sends the attacker's host name in `Host`; a page on another site sends its
own `Origin`. Both are refused unless listed. Host patterns take `*` for any run of characters (`*.example.com`)
and an optional port (`:9000`, or `:*` for any, the default included). Without a port a pattern matches any
port: the name is what DNS rebinding forges.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

import structlog
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from insight_mcp.agents.settings import Settings, SettingsError

log = structlog.get_logger("insight_mcp.hosts")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
LOOPBACK_BINDS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", "[::]", ""})
MEMO = 256  # Host and Origin values whose answer the middleware remembers
LOOPBACK_ORIGINS = tuple(f"http://{h}" for h in LOOPBACK_HOSTS) + tuple(f"https://{h}" for h in LOOPBACK_HOSTS)


def split_host(value: str) -> tuple[str, str | None]:
    """`name[:port]` into name and port; IPv6 literals keep their brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, None
        rest = value[end + 1:]
        return value[: end + 1], rest[1:] if rest.startswith(":") else None
    name, sep, port = value.rpartition(":")
    if not sep or ":" in name:  # no port, or a bare IPv6 address
        return value, None
    return name, port


@lru_cache(maxsize=256)
def _name_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + "[^:/]*".join(re.escape(part) for part in pattern.split("*")) + "$")


def host_matches(host: str, pattern: str) -> bool:
    """Whether a Host header value is covered by one allowed-host pattern."""
    name, port = split_host(host)
    want_name, want_port = split_host(pattern)
    if not _name_pattern(want_name).match(name):
        return False
    return want_port in (None, "*") or want_port == port


def origin_matches(origin: str, pattern: str) -> bool:
    """Whether an Origin (`scheme://host[:port]`) is covered by one allowed-origin pattern."""
    scheme, sep, host = origin.strip().lower().partition("://")
    want_scheme, want_sep, want_host = pattern.strip().lower().partition("://")
    if not sep or not want_sep or scheme != want_scheme or "/" in host:
        return False
    return host_matches(host, want_host.rstrip("/"))


def allowed_hosts(settings: Settings) -> list[str]:
    """Loopback names, the bind address itself when it is a specific one, and INSIGHT_ALLOWED_HOSTS."""
    hosts = list(LOOPBACK_HOSTS)
    bind = settings.host.strip().lower()
    if bind not in LOOPBACK_BINDS and bind not in WILDCARD_BINDS:
        hosts.append(f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind)
    return hosts + list(settings.allowed_hosts)


def allowed_origins(settings: Settings) -> list[str]:
    """Pages served from this machine, plus INSIGHT_ALLOWED_ORIGINS."""
    return list(LOOPBACK_ORIGINS) + list(settings.allowed_origins)


def check_exposure(settings: Settings) -> None:
    """Refuse to serve a network address that nobody could reach, or that anyone could use without a token."""
    bind = settings.host.strip().lower()
    if bind in LOOPBACK_BINDS:
        return
    missing = []
    if settings.api_token is None:
        missing.append("INSIGHT_API_TOKEN (the bearer token every client must send)")
    if bind in WILDCARD_BINDS and not settings.allowed_hosts:
        missing.append("INSIGHT_ALLOWED_HOSTS (the host names clients use to reach this server, e.g. "
                       "insight.corp.example:* or *.example.com)")
    if missing:
        raise SettingsError(
            f"refusing to serve on {settings.host or '0.0.0.0'} beyond this machine: set " + " and ".join(missing)
            + ". Both INSIGHT_API_TOKEN and INSIGHT_ALLOWED_HOSTS are needed to serve other machines; "
            "or bind 127.0.0.1."
        )


class HostOriginMiddleware:
    """421 for a Host not allowed, 403 for a foreign Origin, on every route, before anything else runs."""

    def __init__(self, app: ASGIApp, hosts: list[str], origins: list[str]) -> None:
        self.app = app
        self.hosts = tuple(hosts)
        self.origins = tuple(origins)
        # Every request asks again about the same few values: the answers are kept, up to MEMO entries each, so
        # that a request pays a dictionary lookup rather than the patterns (an eighth of run_query's own cost).
        self._host_ok: dict[bytes, bool] = {}
        self._origin_ok: dict[bytes, bool] = {}

    def _allowed(self, memo: dict[bytes, bool], raw: bytes, check: Callable[[str], bool]) -> bool:
        known = memo.get(raw)
        if known is None:
            known = check(raw.decode("latin-1"))
            if len(memo) < MEMO:  # a client that sends ever new values is checked every time, never remembered
                memo[raw] = known
        return known

    def _host_allowed(self, host: str) -> bool:
        return bool(host) and any(host_matches(host, p) for p in self.hosts)

    def _origin_allowed(self, origin: str) -> bool:
        return any(origin_matches(origin, p) for p in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_host: bytes | None = None
        raw_origin: bytes | None = None
        for key, value in scope["headers"]:  # the first of each, as Starlette's Headers.get reads them
            if key == b"host" and raw_host is None:
                raw_host = value
            elif key == b"origin" and raw_origin is None:
                raw_origin = value
        if not self._allowed(self._host_ok, raw_host or b"", self._host_allowed):
            host = (raw_host or b"").decode("latin-1")
            log.warning("host_refused", host=host[:200])
            detail = "this Host is not allowed; the server's operator can add it to INSIGHT_ALLOWED_HOSTS"
            await JSONResponse({"error": "misdirected_request", "detail": detail}, status_code=421)(
                scope, receive, send)
            return
        if raw_origin is not None and not self._allowed(self._origin_ok, raw_origin, self._origin_allowed):
            log.warning("origin_refused", origin=raw_origin.decode("latin-1")[:200])
            detail = "this Origin is not allowed; the server's operator can add it to INSIGHT_ALLOWED_ORIGINS"
            await JSONResponse({"error": "forbidden", "detail": detail}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)
