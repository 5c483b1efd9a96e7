"""Frame-level WebSocket I/O for hot paths: messages delivered by callback as they are parsed, written by a plain
synchronous call, with no task, future, queue or ASGI message per frame.

The relay (:mod:`voicecall.gateway.relay`) moves two WebSocket frames per audio append (client -> upstream and the
answer back) at 50 appends a second per client. Through ASGI each of them costs an ``asyncio.Queue`` hop, a task
wake-up, a dict per message and (uvicorn) a pause/resume of reading per message; together several times what the
frame itself costs. Here:

* :class:`FrameSink` is what a consumer implements: :meth:`~FrameSink.on_message` is called from the socket's
  ``data_received`` with the message's payload (``bytes``; text frames already checked to be UTF-8),
  :meth:`~FrameSink.on_writable` when a paused peer buffer drained, :meth:`~FrameSink.on_closed` once.
* :class:`FrameSocket` is what a socket offers: :meth:`~FrameSocket.send_frame` frames and writes at once (never waits;
  the transport buffers), :attr:`~FrameSocket.buffered` says how many bytes wait in the kernel-side write buffer,
  :meth:`~FrameSocket.pause_reading` / :meth:`~FrameSocket.resume_reading` give back-pressure: a relay pipes one
  socket into another and stops reading the source while the destination is above its high-water mark.

Two implementations: the server side of ``voicecall serve`` (:mod:`voicecall.server.ws_protocol`, uvicorn's
sans-I/O WebSocket protocol plus the ``voicecall.frames`` ASGI scope extension) and the upstream client side
(:mod:`voicecall.gateway.upstream_ws`). :class:`AsgiFrameSocket` gives the same interface over plain ASGI (another
server), one reader task and one writer task per socket, for when the extension is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections import deque
from typing import Protocol

from starlette.websockets import WebSocket

try:
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - websockets ships compiled speedups for every platform we run on
    from websockets.utils import apply_mask as _apply_mask

EXTENSION = "voicecall.frames"
"""The ASGI scope extension under which :mod:`voicecall.server.ws_protocol` offers its :class:`FrameSocket`
(``scope["extensions"]["voicecall.frames"]["socket"]``)."""
HIGH_WATER = 256 * 1024
"""Bytes waiting in a socket's write buffer past which a relay stops reading the other side."""

_H7 = struct.Struct("!BB").pack
_H16 = struct.Struct("!BBH").pack
_H64 = struct.Struct("!BBQ").pack


class FrameSink(Protocol):
    """Receives a :class:`FrameSocket`'s messages. Every method is called from the event loop's thread, from inside
    the socket's I/O callbacks: it must not block and should not raise."""

    def on_message(self, data: bytes, text: bool) -> None:
        """One whole message (fragments already joined)."""

    def on_writable(self) -> None:
        """The socket's write buffer went back under its low-water mark after having been over its high-water
        mark."""

    def on_closed(self, code: int | None, reason: str) -> None:
        """The socket is closed: ``code``/``reason`` of the peer's close frame, ``code`` ``None`` when the connection
        dropped without one. Called once."""


class FrameSocket(Protocol):
    """A WebSocket at frame level. See the module documentation."""

    def attach(self, sink: FrameSink) -> None:
        """Deliver messages to ``sink`` from now on (messages that arrived before are delivered first)."""

    def send_frame(self, data: bytes, text: bool = True) -> bool:
        """Frame ``data`` and write it now; ``False`` when the socket is closing (the message is dropped)."""

    @property
    def buffered(self) -> int:
        """Bytes waiting to be written."""

    @property
    def writable(self) -> bool:
        """``False`` between the transport's pause_writing and resume_writing: stop feeding it."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def flush(self) -> None:
        """Wait until what :meth:`send_frame` accepted was handed to the connection (before an ASGI close)."""


def frame_socket(ws: WebSocket) -> FrameSocket:
    """The frame-level socket of an accepted ASGI WebSocket: the server's (``voicecall.frames`` extension) when it
    offers one, else an :class:`AsgiFrameSocket`."""
    ext = (ws.scope.get("extensions") or {}).get(EXTENSION)
    sock = ext.get("socket") if isinstance(ext, dict) else None
    return sock if sock is not None else AsgiFrameSocket(ws)


def encode_frame(data: bytes, text: bool = True, mask: bool = False) -> bytes:
    """One final, uncompressed data frame. ``mask``: client-to-server frames (RFC 6455 5.3), with a fresh key from
    the operating system's random source, as the RFC asks."""
    n = len(data)
    op = 0x81 if text else 0x82
    m = 0x80 if mask else 0
    if n < 126:
        head = _H7(op, m | n)
    elif n < 65536:
        head = _H16(op, m | 126, n)
    else:
        head = _H64(op, m | 127, n)
    if not mask:
        return head + data
    key = os.urandom(4)
    return head + key + _apply_mask(data, key)


def check_text(data: bytes) -> bool:
    """Whether a text message's payload is valid UTF-8 (ASCII, the usual case, checked in C without decoding)."""
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# ------------------------------------------------------------------------------------------ ASGI fallback
class AsgiFrameSocket:
    """:class:`FrameSocket` over a Starlette/ASGI WebSocket, for servers without the ``voicecall.frames``
    extension: one reader task delivers messages to the sink, one writer task sends a byte-bounded queue."""

    def __init__(self, ws: WebSocket, high_water: int = HIGH_WATER) -> None:
        self.ws = ws
        self.high_water = high_water
        self._sink: FrameSink | None = None
        self._out: deque[tuple[bytes, bool]] = deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._paused_writing = False
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed_once = False

    def attach(self, sink: FrameSink) -> None:
        self._sink = sink
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
            self._writer = asyncio.get_running_loop().create_task(self._write())

    def send_frame(self, data: bytes, text: bool = True) -> bool:
        if self._closing:
            return False
        self._out.append((data, text))
        self._out_bytes += len(data)
        if self._out_bytes > self.high_water:
            self._paused_writing = True
        self._wake.set()
        return True

    @property
    def buffered(self) -> int:
        return self._out_bytes

    @property
    def writable(self) -> bool:
        return not self._paused_writing

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()

    async def flush(self) -> None:
        """Let the writer send what is queued (at most 5 s), then stop both tasks."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), 5.0)
        for task in (self._reader, self._writer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _closed(self, code: int | None, reason: str) -> None:
        if not self._closed_once:
            self._closed_once = True
            self._closing = True
            if self._sink is not None:
                self._sink.on_closed(code, reason)

    async def _read(self) -> None:
        try:
            while True:
                if not self._readable.is_set():
                    await self._readable.wait()
                msg = await self.ws.receive()
                if msg["type"] == "websocket.disconnect":
                    self._closed(msg.get("code") or 1005, msg.get("reason") or "")
                    return
                text = msg.get("text")
                if text is not None:
                    data, is_text = text.encode(), True
                else:
                    raw = msg.get("bytes")
                    if raw is None:
                        continue
                    data, is_text = raw, False
                if self._sink is not None:
                    self._sink.on_message(data, is_text)
        except (OSError, RuntimeError):
            self._closed(None, "")

    async def _write(self) -> None:
        try:
            while True:
                while not self._out:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                data, text = self._out.popleft()
                self._out_bytes -= len(data)
                if text:
                    await self.ws.send_text(data.decode())
                else:
                    await self.ws.send_bytes(data)
                if self._paused_writing and self._out_bytes <= self.high_water // 4:
                    self._paused_writing = False
                    if self._sink is not None:
                        self._sink.on_writable()
        except (OSError, RuntimeError):
            self._closed(None, "")
