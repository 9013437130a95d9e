"""Resumable SSE streams: a client whose stream drops reconnects with Last-Event-ID and misses nothing.

The SDK hands one event store to every session, and names a stream by its JSON-RPC request id, which repeats
from session to session. A store shared that way would replay one session's answers to another. So each session
gets its own small store, and event ids carry a random part, so an id seen by one client is useless to another.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Any

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import JSONRPCMessage

EVENTS_PER_SESSION = 512


class SessionEventStore(EventStore):
    """The last few hundred events of one session, for replay after a dropped stream."""

    def __init__(self, capacity: int = EVENTS_PER_SESSION) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = 0
        self._events: deque[tuple[EventId, StreamId, JSONRPCMessage | None]] = deque(maxlen=capacity)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._next += 1
        event_id = f"{self._prefix}-{self._next}"
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        prefix, _, number = last_event_id.partition("-")
        if prefix != self._prefix or not number.isdigit():
            return None
        position = next((i for i, (eid, _, _) in enumerate(self._events) if eid == last_event_id), None)
        if position is None:
            return None  # too old: it has left the window
        stream_id = self._events[position][1]
        for event_id, stream, message in list(self._events)[position + 1:]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _fresh_store(_: Any) -> SessionEventStore:
    return SessionEventStore()


def _ignore(_: Any, __: Any) -> None:
    return None


def give_each_session_its_own_store(manager: StreamableHTTPSessionManager) -> None:
    """Make the session manager hand every new session a fresh store instead of one shared store.

    The manager reads its public `event_store` attribute each time it admits a session; a property on a
    subclass answers that read with a new store. Tests prove replay works and stays within its session.
    """
    cls = type(manager)
    if getattr(cls, "_insight_per_session_store", False):
        return
    manager.__class__ = type(
        f"PerSessionStore{cls.__name__}", (cls,),
        {"event_store": property(_fresh_store, _ignore), "_insight_per_session_store": True},
    )
