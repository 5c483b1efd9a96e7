"""The relay's upstream WebSocket at frame level: ``websockets``' asyncio client (handshake, TLS, proxies,
keepalive pings, the closing handshake, size limits all unchanged) whose data messages go straight from
``data_received`` to a :class:`~voicecall.transports.frames.FrameSink`, and whose data frames are written by a
plain call (:mod:`voicecall.transports.frames`): no ``recv()`` future, no send lock, no task per message.

Use :func:`open_upstream` (``websockets.asyncio.client.connect`` with this connection class) and then
:meth:`UpstreamConnection.attach`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from voicecall.transports.frames import FrameSink, check_text, encode_frame


class UpstreamConnection(ClientConnection):
    """A :class:`~websockets.asyncio.client.ClientConnection` that is also a
    :class:`~voicecall.transports.frames.FrameSocket`. Messages that arrive between the handshake and
    :meth:`attach` are kept (at most ``max_queue``-like few: the peer's first events) and delivered first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink: FrameSink | None = None
        self._early: deque[tuple[bytes, bool]] = deque()
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._write_paused = False
        self._reading_paused = False
        self._closed_told = False

    # ------------------------------------------------------------------------------------------ FrameSocket
    def attach(self, sink: FrameSink) -> None:
        self.sink = sink
        while self._early:
            data, text = self._early.popleft()
            sink.on_message(data, text)
        if self.protocol.state is State.CLOSED:
            self._tell_closed()

    def send_frame(self, data: bytes, text: bool = True) -> bool:
        """Write one (masked) data frame now; ``False`` once the connection is closing or closed."""
        if self.protocol.state is not State.OPEN:
            return False
        self.transport.write(encode_frame(data, text, mask=True))
        return True

    async def flush(self) -> None:
        """Nothing to do: :meth:`send_frame` writes to the transport at once."""

    @property
    def buffered(self) -> int:
        return int(self.transport.get_write_buffer_size())

    @property
    def writable(self) -> bool:
        return not self._write_paused

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

    # ------------------------------------------------------------------------------------------ websockets hooks
    def process_event(self, event: Any) -> None:
        if self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake response
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
            super().process_event(event)  # ping, pong, close

    def _deliver(self, data: bytes, text: bool) -> None:
        if text and not check_text(data):
            self.protocol.fail(1007, "invalid UTF-8 in a text message")
            self.send_data()
            return
        sink = self.sink
        if sink is None:
            self._early.append((data, text))
        else:
            sink.on_message(data, text)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.sink is not None:
            self._tell_closed()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._write_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_paused = False
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


async def open_upstream(url: str, **kwargs: Any) -> UpstreamConnection:
    """``websockets.asyncio.client.connect(url, **kwargs)`` with :class:`UpstreamConnection`."""
    conn = await connect(url, create_connection=UpstreamConnection, **kwargs)
    assert isinstance(conn, UpstreamConnection)
    return conn
