"""The WebSocket protocol ``voicecall serve`` runs under uvicorn: uvicorn's sans-I/O ``websockets`` protocol plus the
``voicecall.frames`` ASGI scope extension (:mod:`voicecall.transports.frames`).

An application that finds ``scope["extensions"]["voicecall.frames"]["socket"]`` may, after ``websocket.accept``,
:meth:`~FrameWebSocketProtocol.attach` a :class:`~voicecall.transports.frames.FrameSink`: from then on every message
goes straight from ``data_received`` to the sink (no ASGI queue, no task wake-up, no pause/resume of reading per
message, which uvicorn's protocol does for each one), and :meth:`~FrameWebSocketProtocol.send` writes a frame at
once. Everything else is unchanged: the handshake, ``websocket.close``/``websocket.send`` through ASGI (they write to
the same transport, in call order), keepalive pings, size limits, the closing handshake. Applications that do not
attach see uvicorn's protocol as it is.
"""

from __future__ import annotations

import random
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from voicecall.transports.frames import (
    EXTENSION,
    FrameSink,
    apply_mask,
    at_frame_boundary,
    check_text,
    encode_frame,
    split_frames,
    whole_second,
)


class FrameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with a frame-level fast path. See the module documentation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames_socket = ServerFrameSocket(self)
        self._fast: bool | None = None  # parsing data frames here (None: not decided yet)
        self._buf = b""

    def data_received(self, data: bytes) -> None:
        """Once a sink is attached and ``websockets``' parser is at a frame boundary, final data frames are parsed
        here (:func:`~voicecall.transports.frames.split_frames`) and go straight to the sink; everything else
        (control frames, fragments, an oversize frame) goes to uvicorn's handling whole."""
        n = len(data)
        if self._fast is True and n > 8 and data[0] == 0x81 and data[1] == 0xFE and n == 8 + ((data[2] << 8) | data[3]) \
                and not self._buf and not self.close_sent and self.conn.cur_size is None:
            # the usual case, one whole masked text frame of 126..65535 bytes in one read: no loop, no list
            payload = apply_mask(data[8:], data[4:8])
            if payload.isascii() or check_text(payload):
                self.frames_socket.sink.on_message(payload, True)  # type: ignore[union-attr]  # (set: _fast is)
                return
        sink = self.frames_socket.sink
        fast = self._fast
        if fast is None:
            if sink is None or not self.handshake_complete or not at_frame_boundary(self.conn):
                super().data_received(data)
                return
            fast = self._fast = True
        if not fast or sink is None:
            super().data_received(data)
            return
        buf = self._buf + data if self._buf else data
        if self.close_sent:  # closing: back to uvicorn, which discards messages and ends the closing handshake
            self._fast, self._buf = False, b""
            super().data_received(buf)
            return
        frames, used = split_frames(buf, True, self.config.ws_max_size)
        self._buf = buf[used:]
        for i, (op, payload, start) in enumerate(frames):
            if op > 0 and self.conn.cur_size is None:  # (not inside a fragmented message)
                if self.close_sent or self.disconnected:
                    continue
                if op == 1 and not check_text(payload):
                    self.conn.send_close(1007, "invalid UTF-8 in a text message")
                    self.handle_parser_exception()
                    return
                sink.on_message(payload, op == 1)
                continue
            if op < 0:
                self._fast = False
            elif op > 0:  # a final data frame inside a fragmented message: websockets refuses it
                payload = buf[start:frames[i + 1][2] if i + 1 < len(frames) else used]
            super().data_received(payload)

    def start_keepalive(self) -> None:
        """The first keepalive ping after 50-100 % of the interval, not exactly one interval after the handshake:
        clients that connected together (a load test, a reconnect storm) would otherwise be pinged together for
        ever, a burst that stalls every session's audio for a moment. Pings go out on the loop's whole seconds
        (:func:`~voicecall.transports.frames.whole_second`): the pings of all connections due in the same second
        in one wake-up (with the relays' watchdogs), a tenth of the connections or so each second."""
        if self.ping_interval is not None and self.ping_interval > 0:
            self.ping_timer = self.loop.call_at(whole_second(self.loop, self.ping_interval * random.uniform(0.5, 1.0)),
                                                self.send_keepalive_ping)

    def schedule_ping(self) -> None:
        """The next keepalive ping one interval on (less the last round trip, as uvicorn does), on a whole second."""
        assert self.ping_interval is not None
        self.ping_timer = self.loop.call_at(whole_second(self.loop, max(0.0, self.ping_interval - self.last_ping_rtt)),
                                            self.send_keepalive_ping)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and self.response.status_code == 101:
            scope["extensions"][EXTENSION] = {"socket": self.frames_socket}

    def send_receive_event_to_app(self) -> None:
        sink = self.frames_socket.sink
        if sink is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return
        text = self.curr_msg_data_type == "text"
        if text and not check_text(data):
            self.conn.send_close(1007, "invalid UTF-8 in a text message")
            self.handle_parser_exception()
            return
        sink.on_message(data, text)

    def handle_close(self, event: Any) -> None:
        close = self.conn.close_rcvd
        super().handle_close(event)
        if close is not None and not self.close_sent:
            self.frames_socket.closed(close.code, close.reason)

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        close = self.conn.close_sent
        self.frames_socket.closed(close.code if close is not None else 1002, close.reason if close is not None else "")

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.frames_socket.closed(None, "")

    def pause_writing(self) -> None:
        super().pause_writing()
        self.frames_socket.writable = False

    def resume_writing(self) -> None:
        super().resume_writing()
        self.frames_socket.writable = True
        sink = self.frames_socket.sink
        if sink is not None:
            sink.on_writable()


class ServerFrameSocket:
    """The :class:`~voicecall.transports.frames.FrameSocket` of one :class:`FrameWebSocketProtocol` connection."""

    def __init__(self, proto: FrameWebSocketProtocol) -> None:
        self.proto = proto
        self.sink: FrameSink | None = None
        self.writable = True
        self._reading_paused = False
        self._closed = False

    def attach(self, sink: FrameSink) -> None:
        """Deliver messages to ``sink`` from now on; messages already queued for ASGI go to it first."""
        proto = self.proto
        self.sink = sink
        pending = []
        while not proto.queue.empty():
            pending.append(proto.queue.get_nowait())
        if proto.read_paused:  # uvicorn pauses reading while a message waits for the application
            proto.read_paused = False
            if not self._reading_paused and not proto.transport.is_closing():
                proto.transport.resume_reading()
        for msg in pending:
            if msg["type"] == "websocket.receive":
                text = msg.get("text")
                if text is not None:
                    sink.on_message(text.encode(), True)
                else:
                    sink.on_message(msg.get("bytes") or b"", False)
            elif msg["type"] == "websocket.disconnect":
                proto.queue.put_nowait(msg)  # Starlette's state machine still wants to see it
                self.closed(msg.get("code"), msg.get("reason") or "")

    def send_frame(self, data: bytes, text: bool = True) -> bool:
        """Write one data frame now; ``False`` once the closing handshake started or the connection is gone."""
        return self.send_framed(encode_frame(data, text), data)

    def send_framed(self, frame: bytes, data: bytes) -> bool:
        """``frame`` (``data`` framed as an unmasked final text frame, as a server sends it) written as it is."""
        proto = self.proto
        if proto.close_sent or proto.disconnected:
            return False
        transport = proto.transport
        if transport.is_closing():
            return False
        transport.write(frame)
        return True

    @property
    def buffered(self) -> int:
        return int(self.proto.transport.get_write_buffer_size())

    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            if not self.proto.read_paused and not self.proto.transport.is_closing():
                self.proto.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self.proto.read_paused and not self.proto.transport.is_closing():
                self.proto.transport.resume_reading()

    async def flush(self) -> None:
        """Nothing to do: :meth:`send_frame` writes to the transport at once."""

    def closed(self, code: int | None, reason: str) -> None:
        """Tell the sink, once."""
        if not self._closed:
            self._closed = True
            if self.sink is not None:
                self.sink.on_closed(code, reason)
