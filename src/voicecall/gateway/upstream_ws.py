"""The relay's upstream WebSocket at frame level: ``websockets``' asyncio client (handshake, TLS, proxies,
keepalive pings, the closing handshake, size limits all unchanged) whose data messages go straight from
``data_received`` to a :class:`~voicecall.transports.frames.FrameSink` and whose data frames are written by a plain
call (:class:`~voicecall.transports.frames.FrameConnectionMixin`): no ``recv()`` future, no send lock, no task per
message.
"""

from __future__ import annotations

from typing import Any

from websockets.asyncio.client import connect

from voicecall.transports.frames import FrameClientConnection

UpstreamConnection = FrameClientConnection


PING_INTERVAL = 20.0
"""Keepalive pings to upstream every 15-20 s (each relay draws its interval), sent by the relay's watchdog."""
PONG_TIMEOUT = 20.0
"""A ping unanswered this long fails the upstream connection (``websockets``' default ``ping_timeout``)."""


async def open_upstream(url: str, **kwargs: Any) -> UpstreamConnection:
    """``websockets.asyncio.client.connect(url, **kwargs)`` with frame-level delivery; attach a sink next.

    No keepalive task: the relay's watchdog pings upstream (:meth:`UpstreamConnection.send_keepalive_ping`) on its
    once-a-second tick, every :data:`PING_INTERVAL` x 0.75-1.0 (drawn per connection: sessions opened together, a
    load test or clients reconnecting after a restart, would otherwise ping together for ever), so that the pings of
    all relays due in the same second go out in one wake-up instead of a task waking for each."""
    kwargs.setdefault("ping_interval", None)
    conn = await connect(url, create_connection=FrameClientConnection, **kwargs)
    assert isinstance(conn, FrameClientConnection)
    return conn
