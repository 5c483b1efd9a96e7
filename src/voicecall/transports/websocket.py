"""The WebSocket transport: ``GET /v1/realtime`` carrying JSON events (audio as base64 inside them).

Outgoing events go through one queue and one writer task, so events from concurrent engine tasks never
interleave on the socket and the engine never waits for a slow client. The queue is bounded in bytes
(:class:`~voicecall.transports.outbound.OutboundQueue`): a client that falls behind loses answer-audio deltas
first, then the connection (1008, ``client too slow``). A send that does not complete within
``server.sendTimeoutSeconds`` closes the connection too. :func:`receive_loop` closes sockets that send no first
event within ``server.firstEventSeconds`` or go quiet for ``server.idleSessionSeconds``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicecall.audio import AudioCodec, b64encode
from voicecall.protocol.beta import BetaSession
from voicecall.protocol.errors import error_event
from voicecall.protocol.ids import event_id
from voicecall.protocol.peek import peek_append
from voicecall.transports.frames import AsgiFrameSocket, FrameSocket, frame_socket
from voicecall.transports.outbound import OutboundQueue

log = logging.getLogger(__name__)
# Largest answer-audio delta, in engine samples (0.5 s): keeps frames far below the SDK's 1 MiB limit.
MAX_DELTA_SAMPLES = 12000


class WebSocketTransport:
    kind = "websocket"
    audio_delta_type = "response.output_audio.delta"

    def __init__(self, ws: WebSocket, max_outgoing_bytes: int = 4 << 20, send_timeout: float = 30.0) -> None:
        self.ws = ws
        self._out = OutboundQueue(max_outgoing_bytes)
        self.send_timeout = send_timeout
        self._dropped_reported = 0
        self._codecs: dict[str, AudioCodec] = {}
        self._writer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        out = self._out
        send = self.ws.send_text
        try:
            while True:
                msg = await out.get()
                if msg is None:
                    break
                async with asyncio.timeout(self.send_timeout):
                    await send(msg)
                if out.dropped and not self._dropped_reported:
                    self._dropped_reported = out.dropped
                    log.warning("websocket client too slow: dropping answer-audio deltas it could not play in time")
        except TimeoutError:
            self._too_slow(f"took no data for {self.send_timeout:g} s")
        except (WebSocketDisconnect, RuntimeError, OSError, asyncio.CancelledError):
            pass  # CancelledError: the queue overflowed (see _put)
        finally:
            if out.overflowed:
                self._too_slow(f"more than {out.max_bytes} bytes of events unsent")
            if out.dropped:
                log.info("websocket client: %d answer-audio delta(s) dropped in all", out.dropped)
            self.closed.set()
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.send_timeout):  # a client that reads nothing takes no close
                        await self.ws.close(self.close_code, self.close_reason)

    def _too_slow(self, why: str) -> None:
        log.warning("closing a websocket client that is too slow: %s", why)
        self.close_code, self.close_reason = 1008, f"client too slow: {why}"[:120]

    # ------------------------------------------------------------------ Transport protocol
    def send_event(self, event: dict[str, Any]) -> None:
        if not self.closed.is_set():
            self._put(json.dumps(event, separators=(",", ":")), False)

    def _put(self, frame: str, droppable: bool) -> None:
        if not self._out.put(frame, droppable) and self._out.overflowed and self._writer is not None:
            self._writer.cancel()  # it may be stuck in a send to this client: close now, from its finally

    def send_audio(self, response_id: str, item_id: str, output_index: int, content_index: int,
                   pcm: np.ndarray, fmt: str = "audio/pcm") -> None:
        codec = self._codecs.get(response_id)
        if codec is None:
            codec = self._codecs[response_id] = AudioCodec(fmt)
        for start in range(0, len(pcm), MAX_DELTA_SAMPLES):
            data = codec.encode(pcm[start:start + MAX_DELTA_SAMPLES])
            if data:
                self._delta(response_id, item_id, output_index, content_index, data)

    def _delta(self, response_id: str, item_id: str, output_index: int, content_index: int, data: bytes) -> None:
        if not self.closed.is_set():
            self._put(json.dumps({"type": self.audio_delta_type, "event_id": event_id(),
                                  "response_id": response_id, "item_id": item_id, "output_index": output_index,
                                  "content_index": content_index, "delta": b64encode(data)}, separators=(",", ":")),
                      True)

    def end_audio(self, response_id: str, item_id: str, output_index: int, content_index: int) -> None:
        codec = self._codecs.pop(response_id, None)
        if codec is not None:
            tail = codec.flush()
            if tail:
                self._delta(response_id, item_id, output_index, content_index, tail)

    def clear_audio(self) -> tuple[str, float] | None:
        return None  # the client owns playback on a WebSocket and truncates with conversation.item.truncate

    def queue_depth(self) -> int:
        """Messages waiting for the client (the ``voicecall_queue_depth_*`` metrics)."""
        return len(self._out)

    def pause_audio(self) -> None:
        pass  # the client owns playback; what was sent is in its player already

    def resume_audio(self) -> None:
        pass

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code, self.close_reason = code, reason
        self._out.finish()

    async def drain(self) -> None:
        """Let queued events reach the client, then stop the writer."""
        self._out.finish()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer, self.send_timeout + 1)


class BetaWebSocketTransport(WebSocketTransport):
    """A WebSocket whose client speaks the beta protocol: every server event leaves in its beta form
    (:mod:`voicecall.protocol.beta`); the engine and the history recorder still see GA."""

    audio_delta_type = "response.audio.delta"

    def __init__(self, ws: WebSocket, beta: BetaSession, *args: Any) -> None:
        super().__init__(ws, *args)
        self.beta = beta

    def send_event(self, event: dict[str, Any]) -> None:
        for out in self.beta.server_event(event):
            super().send_event(out)


INPUT_QUEUE_MESSAGES = 256
"""Client messages waiting for the session (a handler still busy); past that, reading the socket pauses."""


class _EngineInput:
    """The client socket's :class:`~voicecall.transports.frames.FrameSink` for an engine session: one reader task,
    no future per message. A plain ``input_audio_buffer.append`` (recognised by :func:`~voicecall.protocol.peek.
    peek_append`) that arrives while nothing waits before it goes straight to the engine from the socket's I/O
    callback (base64-decoded, never JSON-parsed); every other message, and any append behind one, is handled in
    order by :meth:`run`."""

    def __init__(self, sock: FrameSocket, transport: WebSocketTransport, handle: Callable[[str | bytes], Awaitable[None]],
                 append_audio: Callable[[bytes], None] | None, max_bytes: int) -> None:
        self.sock = sock
        self.transport = transport
        self.handle = handle
        self.append_audio = append_audio
        self.max_bytes = max_bytes
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.busy = False
        self.paused = False
        self.closed = False
        self.messages = 0

    # FrameSink
    def on_message(self, data: bytes, text: bool) -> None:
        self.messages += 1
        if len(data) > self.max_bytes:
            self.transport.send_event(error_event(
                "message_too_large", f"The message is {len(data)} bytes; this server accepts at most {self.max_bytes} "
                "bytes per message. Send audio in smaller appends.", param=None))
            return
        if text and self.append_audio is not None and not self.queue and not self.busy:
            hit = peek_append(data)
            if hit is not None:
                try:
                    raw = base64.b64decode(data[hit[0]:hit[1]], validate=True)
                except (binascii.Error, ValueError):
                    pass  # the full path reports it
                else:
                    self.append_audio(raw)
                    return
        self.queue.append(data)
        if len(self.queue) >= INPUT_QUEUE_MESSAGES and not self.paused:
            self.paused = True
            self.sock.pause_reading()
        self.wake.set()

    def on_writable(self) -> None:
        pass

    def on_closed(self, code: int | None, reason: str) -> None:
        self.closed = True
        self.wake.set()

    async def run(self, first_event_seconds: float | None = None, idle_seconds: float | None = None) -> None:
        """Handle queued messages in order until the client leaves or the transport closes. A client that sends
        nothing within ``first_event_seconds`` of the handshake, or nothing for ``idle_seconds`` later on, gets an
        ``error`` (``idle_timeout``) and a close 1008."""
        while True:
            while self.queue and not self.transport.closed.is_set():
                data = self.queue.popleft()
                self.busy = True
                try:
                    await self.handle(data)
                finally:
                    self.busy = False
                await asyncio.sleep(0)  # a handler that never suspends must not hold the loop for a whole backlog
                if self.paused and len(self.queue) < INPUT_QUEUE_MESSAGES // 2:
                    self.paused = False
                    self.sock.resume_reading()
            if self.closed or self.transport.closed.is_set():
                return
            self.wake.clear()
            # (the fast path delivers appends without waking this task: they count as activity all the same)
            while True:
                limit, waited_for = (first_event_seconds, "a first event") if not self.messages else (
                    idle_seconds, "any event")
                seen = self.messages
                if limit is None:
                    await self.wake.wait()
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), limit)
                    break
                except TimeoutError:
                    if self.messages == seen:
                        idle_timeout(self.transport, waited_for, limit)
                        return


async def receive_loop(ws: WebSocket, transport: WebSocketTransport, handle: Callable[[str | bytes], Awaitable[None]],
                       max_bytes: int, *, append_audio: Callable[[bytes], None] | None = None,
                       first_event_seconds: float | None = None, idle_seconds: float | None = None) -> int:
    """Read client messages until the socket closes (or the transport does); oversize messages get an error and
    are dropped. ``append_audio``: the engine's entry for the raw bytes of an ``input_audio_buffer.append`` (the fast
    path, see :class:`_EngineInput`). A client that sends nothing within ``first_event_seconds`` of the handshake,
    or nothing for ``idle_seconds`` later on, gets an ``error`` (``idle_timeout``) and a close 1008. Returns the
    number of messages received."""
    sock = frame_socket(ws)
    reader = _EngineInput(sock, transport, handle, append_audio, max_bytes)
    sock.attach(reader)

    async def on_transport_closed() -> None:
        await transport.closed.wait()
        reader.wake.set()

    watcher = asyncio.ensure_future(on_transport_closed())
    try:
        await reader.run(first_event_seconds, idle_seconds)
    finally:
        watcher.cancel()
        if isinstance(sock, AsgiFrameSocket):
            await sock.aclose()
    return reader.messages


def idle_timeout(transport: Any, waited_for: str, seconds: float) -> None:
    """Tell the client why it is being closed (``error`` ``idle_timeout``), then close it with 1008."""
    what = waited_for.removeprefix("a ").removeprefix("any ")
    log.info("closing an idle %s session: no %s for %g s", transport.kind, what, seconds)
    transport.send_event(error_event("idle_timeout", f"No {what} from the client for {seconds:g} s: the server "
                                     "closes the session.", type="invalid_request_error"))
    transport.close(1008, f"idle timeout: no {what} for {seconds:g} s")
