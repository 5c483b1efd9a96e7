"""A bare WebSocket client for hostile tests: sends whatever it is told, reads only when asked."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


async def connect(url: str, **kwargs: Any) -> ClientConnection:
    return await websockets.connect(url, subprotocols=["realtime"], max_size=None, compression=None,  # type: ignore[list-item]
                                    open_timeout=30, **kwargs)


async def next_event(ws: ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def events_until(ws: ClientConnection, etype: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``etype``."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        ev = await next_event(ws, max(0.1, deadline - time.monotonic()))
        out.append(ev)
        if ev["type"] == etype:
            return out


async def closed_with(ws: ClientConnection, timeout: float = 60.0) -> tuple[int | None, str, list[dict[str, Any]]]:
    """Read until the server closes; returns (close code, reason, events read meanwhile)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            events.append(json.loads(raw))
    except websockets.ConnectionClosed as exc:
        rcvd = exc.rcvd
        return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else ""), events
