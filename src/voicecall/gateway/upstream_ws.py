"""The relay's upstream WebSocket at frame level: ``websockets``' asyncio client (handshake, TLS, proxies,
keepalive pings, the closing handshake, size limits all unchanged) whose data messages go straight from
``data_received`` to a :class:`~voicecall.transports.frames.FrameSink` and whose data frames are written by a plain
call (:class:`~voicecall.transports.frames.FrameConnectionMixin`): no ``recv()`` future, no send lock, no task per
message.
"""

from __future__ import annotations

import random
from typing import Any

from websockets.asyncio.client import connect

from voicecall.transports.frames import FrameClientConnection

UpstreamConnection = FrameClientConnection


PING_INTERVAL = 20.0
"""Keepalive pings to upstream every 15-20 s (``websockets``' default is 20 s for every connection)."""


async def open_upstream(url: str, **kwargs: Any) -> UpstreamConnection:
    """``websockets.asyncio.client.connect(url, **kwargs)`` with frame-level delivery; attach a sink next.

    Each connection pings at its own interval, drawn from 15-20 s: sessions opened together (a load test, clients
    reconnecting after a restart) would otherwise ping together for ever, and a burst of a hundred pings and pongs
    at once shows as a millisecond stall in every session's audio."""
    kwargs.setdefault("ping_interval", PING_INTERVAL * random.uniform(0.75, 1.0))
    conn = await connect(url, create_connection=FrameClientConnection, **kwargs)
    assert isinstance(conn, FrameClientConnection)
    return conn
