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


async def open_upstream(url: str, **kwargs: Any) -> UpstreamConnection:
    """``websockets.asyncio.client.connect(url, **kwargs)`` with frame-level delivery; attach a sink next."""
    conn = await connect(url, create_connection=FrameClientConnection, **kwargs)
    assert isinstance(conn, FrameClientConnection)
    return conn
