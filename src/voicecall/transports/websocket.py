"""The WebSocket transport: ``GET /v1/realtime`` carrying JSON events (audio as base64 inside them).

Outgoing events go through one queue and one writer task, so events from concurrent engine tasks never
interleave on the socket and the engine never waits for a slow client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voicecall.audio import AudioCodec, b64encode
from voicecall.protocol.errors import error_event
from voicecall.protocol.ids import event_id

log = logging.getLogger(__name__)
# Largest answer-audio delta, in engine samples (0.5 s): keeps frames far below the SDK's 1 MiB limit.
MAX_DELTA_SAMPLES = 12000


class WebSocketTransport:
    kind = "websocket"

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._codecs: dict[str, AudioCodec] = {}
        self._writer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        try:
            while True:
                msg = await self._out.get()
                if msg is None:
                    break
                await self.ws.send_text(msg)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            self.closed.set()
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(self.close_code, self.close_reason)

    # ------------------------------------------------------------------ Transport protocol
    def send_event(self, event: dict[str, Any]) -> None:
        if not self.closed.is_set():
            self._out.put_nowait(json.dumps(event, separators=(",", ":")))

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
        self.send_event({"type": "response.output_audio.delta", "event_id": event_id(), "response_id": response_id,
                         "item_id": item_id, "output_index": output_index, "content_index": content_index,
                         "delta": b64encode(data)})

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
        return self._out.qsize()

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code, self.close_reason = code, reason
        self._out.put_nowait(None)

    async def drain(self) -> None:
        """Let queued events reach the client, then stop the writer."""
        self._out.put_nowait(None)
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer, 5)


async def receive_loop(ws: WebSocket, transport: WebSocketTransport, handle: Any, max_bytes: int) -> None:
    """Read client messages until the socket closes; oversize messages get an error and are dropped."""
    while not transport.closed.is_set():
        recv = asyncio.ensure_future(ws.receive())
        closed = asyncio.ensure_future(transport.closed.wait())
        done, _ = await asyncio.wait({recv, closed}, return_when=asyncio.FIRST_COMPLETED)
        if recv not in done:
            recv.cancel()
            closed.cancel()
            return
        closed.cancel()
        msg = recv.result()
        if msg["type"] == "websocket.disconnect":
            return
        data = msg.get("text")
        if data is None:
            data = msg.get("bytes")
        if data is None:
            continue
        if len(data) > max_bytes:
            transport.send_event(error_event(
                "message_too_large", f"The message is {len(data)} bytes; this server accepts at most {max_bytes} bytes "
                "per message. Send audio in smaller appends.", param=None))
            continue
        await handle(data)
