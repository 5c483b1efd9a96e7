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

Implementations: the server side of ``voicecall serve`` (:mod:`voicecall.server.ws_protocol`, uvicorn's sans-I/O
WebSocket protocol plus the ``voicecall.frames`` ASGI scope extension); ``websockets``' asyncio connections with
:class:`FrameConnectionMixin` (:class:`FrameClientConnection`: the relay's upstream socket and the relay
benchmark's clients; :class:`FrameServerConnection`: the benchmark's echo upstream); :class:`AsgiFrameSocket`, the
same interface over plain ASGI (another server), one reader task and one writer task per socket, for when the
extension is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import struct
from collections import deque
from typing import Any, Protocol

from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships compiled speedups for every platform we run on
    from websockets.utils import apply_mask

EXTENSION = "voicecall.frames"
"""The ASGI scope extension under which :mod:`voicecall.server.ws_protocol` offers its :class:`FrameSocket`
(``scope["extensions"]["voicecall.frames"]["socket"]``)."""
HIGH_WATER = 256 * 1024
"""Bytes waiting in a socket's write buffer past which a relay stops reading the other side."""

_H7 = struct.Struct("!BB").pack
_H16 = struct.Struct("!BBH").pack
_H64 = struct.Struct("!BBQ").pack
_H16_KEY = struct.Struct("!BBH4s").pack


def whole_second(loop: asyncio.AbstractEventLoop, delay: float) -> float:
    """The first whole second of ``loop``'s clock at least ``delay`` from now: for the timers of idle connections
    (keepalive pings, watchdogs), so that all those that fall in the same second fire in one wake-up of the process
    instead of one each (on an idle server each wake-up costs far more than the work it does)."""
    return float(math.ceil(loop.time() + delay))


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

    # Optional: ``on_text_frame(data, frame)``. A sink that has it gets the usual message of a server's socket --
    # one whole unmasked final text frame, ASCII, in one read -- there instead of ``on_message(data, True)``, with
    # ``frame`` the frame as received (``data`` is its payload), which :meth:`FrameSocket.send_framed` can
    # forward without framing it again.


class FrameSocket(Protocol):
    """A WebSocket at frame level. See the module documentation."""

    writable: bool
    """``False`` between the transport's pause_writing and resume_writing: stop feeding it (a plain attribute, read
    once per relayed message)."""

    def attach(self, sink: FrameSink) -> None:
        """Deliver messages to ``sink`` from now on (messages that arrived before are delivered first)."""

    def send_frame(self, data: bytes, text: bool = True) -> bool:
        """Frame ``data`` and write it now; ``False`` when the socket is closing (the message is dropped)."""

    def send_framed(self, frame: bytes, data: bytes) -> bool:
        """:meth:`send_frame` ``(data)`` for a text message that is already framed as an unmasked final text
        frame (``frame``, from :meth:`FrameSink.on_text_frame <FrameSink>`): a server's socket writes ``frame`` as
        it is; a client's (its frames must be masked) frames ``data``."""

    @property
    def buffered(self) -> int:
        """Bytes waiting to be written."""

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


class MaskKeys:
    """Masking keys for one client connection, from the operating system's random source (as RFC 6455 5.3 asks),
    read 1 KiB at a time: one ``getrandom`` system call per 256 frames instead of one per frame. One per
    connection (not shared between threads)."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(1024), 0
        self._at = at + 4
        return self._pool[at:at + 4]

    def frame(self, data: bytes, text: bool = True) -> bytes:
        """One client frame of ``data``, masked with the next key (:meth:`next`)."""
        key = self.next()
        n = len(data)
        if 125 < n < 65536:  # an append's size: header and key packed at once
            return _H16_KEY(0x81 if text else 0x82, 0xFE, n, key) + apply_mask(data, key)
        return encode_frame(data, text, key)


def encode_frame(data: bytes, text: bool = True, key: bytes | None = None) -> bytes:
    """One final, uncompressed data frame; masked with ``key`` (4 bytes) when given: client-to-server frames (RFC
    6455 5.3), see :class:`MaskKeys`."""
    n = len(data)
    op = 0x81 if text else 0x82
    m = 0x80 if key is not None else 0
    if n < 126:
        head = _H7(op, m | n)
    elif n < 65536:
        head = _H16(op, m | 126, n)
    else:
        head = _H64(op, m | 127, n)
    if key is None:
        return head + data
    return head + key + apply_mask(data, key)


def split_frames(buf: bytes, masked: bool, max_size: int | None) -> tuple[list[tuple[int, bytes, int]], int]:
    """The complete frames at the start of ``buf``: ``(opcode, payload, start)`` for final, uncompressed text (1)
    and binary (2) frames (payload unmasked; the raw frame is ``buf[start:start + next]``), ``(0, raw frame bytes,
    start)`` for any other frame (control frames, fragments, reserved bits: for the full parser), ``(-1, rest of
    buf, start)`` at a frame longer than ``max_size`` (the full parser refuses it); and how many bytes were
    consumed. ``masked``: frames from a client must be masked (those from a server
    must not); a frame that is not is handed to the full parser, which refuses it."""
    out: list[tuple[int, bytes, int]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            if n - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
        elif length == 127:
            if n - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
        if max_size is not None and length > max_size:
            out.append((-1, buf[pos:], pos))
            return out, n
        is_masked = b1 & 0x80
        if is_masked:
            head += 4
        end = pos + head + length
        if end > n:
            break
        op = b0 & 0x0F
        if (b0 & 0xF0) == 0x80 and (op == 1 or op == 2) and bool(is_masked) == masked:
            payload = buf[pos + head:end]
            out.append((op, apply_mask(payload, buf[pos + head - 4:pos + head]) if masked else payload, pos))
        else:
            out.append((0, buf[pos:end], pos))
        pos = end
    return out, pos


def at_frame_boundary(protocol: Any) -> bool:
    """Whether a ``websockets`` sans-I/O protocol's parser waits for the first byte of a frame, with nothing
    buffered and no fragmented message under way, so that :func:`split_frames` can take over the byte stream (and
    hand it whole frames only). ``False`` whenever that cannot be told for sure."""
    try:
        if protocol.reader.buffer or protocol.cur_size is not None:
            return False
        gen = protocol.parser
        while gen is not None:
            code = gen.gi_code
            if code.co_name == "at_eof" and code.co_filename.endswith("streams.py"):
                return True  # Protocol.parse, between frames
            if code.co_name == "parse" and code.co_filename.endswith("frames.py"):
                return "head1" not in gen.gi_frame.f_locals  # the frame's first two bytes not read yet
            gen = gen.gi_yieldfrom
    except AttributeError:
        return False
    return False


def check_text(data: bytes) -> bool:
    """Whether a text message's payload is valid UTF-8 (ASCII, the usual case, checked in C without decoding)."""
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# ------------------------------------------------------------------------------------------ websockets connections
class FrameConnectionMixin:
    """Makes a ``websockets`` asyncio connection a :class:`FrameSocket`: data messages go from ``data_received``
    (``process_event``, the documented override point) to the sink; :meth:`send_frame` writes a frame at once.
    Handshake, TLS, proxies, keepalive pings, the closing handshake and size limits stay ``websockets``'. Messages
    that arrive between the handshake and :meth:`attach` are kept and delivered first; ``recv()`` never sees a data
    message (``send()``, ``ping()`` and ``close()`` work as usual)."""

    protocol: Any
    transport: Any
    loop: Any
    pong_waiters: dict[bytes, tuple[Any, float]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink: FrameSink | None = None
        self._early: deque[tuple[bytes, bool]] = deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self.writable = True
        self._reading_paused = False
        self._closed_told = False
        self._on_frame: Any = None  # the sink's on_text_frame, when it has one
        self._keys = MaskKeys() if self.protocol.side is CLIENT else None
        self._fast: bool | None = None  # parsing data frames here (None: not decided yet)
        self._buf = b""

    def attach(self, sink: FrameSink) -> None:
        self.sink = sink
        self._on_frame = getattr(sink, "on_text_frame", None)
        while self._early:
            data, text = self._early.popleft()
            sink.on_message(data, text)
        if self.protocol.state is State.CLOSED:
            self._tell_closed()

    def send_frame(self, data: bytes, text: bool = True) -> bool:
        """Write one data frame now (masked on a client); ``False`` once the connection is closing or closed."""
        if self.protocol.state is not State.OPEN:
            return False
        keys = self._keys
        self.transport.write(keys.frame(data, text) if keys is not None else encode_frame(data, text))
        return True

    def send_framed(self, frame: bytes, data: bytes) -> bool:
        """``frame`` written as it is on a server's connection; ``data`` framed (and masked) on a client's."""
        if self._keys is not None or self.protocol.state is not State.OPEN:
            return self.send_frame(data)
        self.transport.write(frame)
        return True

    def send_keepalive_ping(self) -> bytes | None:
        """Write a keepalive ping now, without a task (the relay's watchdog sends them on its once-a-second tick
        instead of ``websockets``' keepalive task waking for each connection): its payload, which stays in
        ``pong_waiters`` until the pong comes (:meth:`pong_awaited`); ``None`` when the connection is not open."""
        if self.protocol.state is not State.OPEN:
            return None
        data = struct.pack("!I", random.getrandbits(32))
        while data in self.pong_waiters:
            data = struct.pack("!I", random.getrandbits(32))
        self.pong_waiters[data] = (self.loop.create_future(), self.loop.time())  # (websockets' ping() does the same)
        self.protocol.send_ping(data)
        self.send_data()  # type: ignore[attr-defined]
        return data

    def pong_awaited(self, ping: bytes) -> bool:
        """Whether the pong of :meth:`send_keepalive_ping`'s ``ping`` is still missing."""
        return ping in self.pong_waiters

    def fail_keepalive(self) -> None:
        """No pong in time: fail the connection as ``websockets``' keepalive does (close 1011 "keepalive ping
        timeout") and drop it at once (the peer does not answer): the sink hears ``on_closed(None, "")``."""
        if self.protocol.state is State.OPEN:
            self.protocol.fail(1011, "keepalive ping timeout")
            self.send_data()  # type: ignore[attr-defined]
        self.transport.abort()

    async def flush(self) -> None:
        """Nothing to do: :meth:`send_frame` writes to the transport at once."""

    @property
    def buffered(self) -> int:
        return int(self.transport.get_write_buffer_size())

    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            if not self.transport.is_closing():
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # websockets hooks
    def data_received(self, data: bytes) -> None:
        """Data frames parsed here (:func:`split_frames`) once ``websockets``' parser is at a frame boundary after the
        handshake; anything else (handshake, control frames, fragments) goes to ``websockets`` whole."""
        n = len(data)
        if self._fast is True and n > 4 and data[0] == 0x81 and data[1] == 126 and n == 4 + ((data[2] << 8) | data[3]) \
                and not self._buf and self.protocol.cur_size is None:
            # the usual case, one whole text frame of 126..65535 bytes in one read: no loop, no list; to the sink's
            # on_text_frame with the frame as read when it can take it (ASCII, the usual case, needs no decoding)
            if self.protocol.state is State.OPEN:
                payload = data[4:]
                on_frame = self._on_frame
                if on_frame is not None and payload.isascii():
                    on_frame(payload, data)
                else:
                    self._deliver(payload, True)
            return
        fast = self._fast
        if fast is None:
            if self.protocol.state is not State.OPEN or not at_frame_boundary(self.protocol):
                super().data_received(data)  # type: ignore[misc]
                return
            fast = self._fast = True
        if not fast:
            super().data_received(data)  # type: ignore[misc]
            return
        buf = self._buf + data if self._buf else data
        frames, used = split_frames(buf, False, self.protocol.max_size)
        self._buf = buf[used:]
        for i, (op, payload, start) in enumerate(frames):
            if op > 0 and self.protocol.cur_size is None:  # (not inside a fragmented message)
                if self.protocol.state is State.OPEN:  # data after a close frame is dropped
                    self._deliver(payload, op == 1)
                continue
            if op < 0:
                self._fast = False
            elif op > 0:  # a final data frame inside a fragmented message: websockets refuses it
                payload = buf[start:frames[i + 1][2] if i + 1 < len(frames) else used]
            super().data_received(payload)  # type: ignore[misc]

    def process_event(self, event: Any) -> None:
        if not isinstance(event, Frame):
            super().process_event(event)  # type: ignore[misc]  # the handshake
            return
        opcode = event.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if event.fin:
                self._deliver(bytes(event.data), opcode is Opcode.TEXT)
            else:
                self._fragments = [bytes(event.data)]
                self._fragment_text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(bytes(event.data))
            if event.fin:
                data, self._fragments = b"".join(self._fragments), []
                self._deliver(data, self._fragment_text)
        else:
            super().process_event(event)  # type: ignore[misc]  # ping, pong, close

    def _deliver(self, data: bytes, text: bool) -> None:
        if text and not check_text(data):
            self.protocol.fail(1007, "invalid UTF-8 in a text message")
            self.send_data()  # type: ignore[attr-defined]
            return
        sink = self.sink
        if sink is None:
            self._early.append((data, text))
        else:
            sink.on_message(data, text)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        if self.sink is not None:
            self._tell_closed()

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        self.writable = False

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self.writable = True
        if self.sink is not None:
            self.sink.on_writable()

    def _tell_closed(self) -> None:
        if self._closed_told or self.sink is None:
            return
        self._closed_told = True
        close = self.protocol.close_rcvd
        if close is None:
            self.sink.on_closed(None, "")
        else:
            self.sink.on_closed(close.code, close.reason)


class FrameClientConnection(FrameConnectionMixin, ClientConnection):
    """``websockets.asyncio.client.connect(url, create_connection=FrameClientConnection)``: a client
    :class:`FrameSocket`."""


class FrameServerConnection(FrameConnectionMixin, ServerConnection):
    """``websockets.asyncio.server.serve(handler, create_connection=FrameServerConnection)``: a server-side
    :class:`FrameSocket` (the handler attaches a sink and awaits ``wait_closed()``)."""


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
        self.writable = True
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
            self.writable = False
        self._wake.set()
        return True

    def send_framed(self, frame: bytes, data: bytes) -> bool:
        return self.send_frame(data)

    @property
    def buffered(self) -> int:
        return self._out_bytes

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
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the reader and writer tasks."""
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
                if not self.writable and self._out_bytes <= self.high_water // 4:
                    self.writable = True
                    if self._sink is not None:
                        self._sink.on_writable()
        except (OSError, RuntimeError):
            self._closed(None, "")
