"""Stand-in for Deepgram's live streaming API (``wss://api.deepgram.com/v1/listen``), written from Deepgram's
public reference:

* handshake: ``Authorization: Token <key>``; query ``model``, ``encoding=linear16``, ``sample_rate``, ``channels``,
  ``interim_results``, ``endpointing`` (ms), ``utterance_end_ms``, ``vad_events``, ``smart_format``, ...; a refused
  handshake answers HTTP 401 / 429 (+ ``retry-after``) / 500 with ``{"err_code", "err_msg", "request_id"}``;
* client → server: binary audio; text ``{"type": "KeepAlive"}``, ``{"type": "Finalize"}``,
  ``{"type": "CloseStream"}``;
* server → client: ``Results`` (``is_final``, ``speech_final``, ``from_finalize``, ``channel.alternatives[0]
  .transcript``, ``start``, ``duration``), ``SpeechStarted`` (with ``vad_events``), ``UtteranceEnd``
  (``last_word_end``), and ``Metadata`` (``duration``) before closing after CloseStream.

Recognition is the embedded pocketsphinx: interim results are its partial hypotheses; an ``endpointing`` silence
after speech finalises the segment (``is_final`` + ``speech_final``), ``Finalize`` / ``CloseStream`` flush it
(``from_finalize``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import Dropped, StandIn, recognizer

FRAME = 320  # 20 ms at 16 kHz


@dataclass
class DeepgramStandIn(StandIn):
    keepalives: int = 0
    closed_streams: int = 0
    queries: list[dict[str, str]] = field(default_factory=list)

    async def listen(self, ws: WebSocket) -> None:
        failure = self.take_failure()
        rid = secrets.token_hex(16)
        auth = ws.headers.get("authorization", "")
        if auth != f"Token {self.key}" or failure == "401":
            await ws.send_denial_response(JSONResponse(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": rid}, status_code=401,
                headers={"dg-error": "Invalid credentials.", "dg-request-id": rid}))
            return
        if failure == "429":
            await ws.send_denial_response(JSONResponse(
                {"err_code": "TOO_MANY_REQUESTS", "err_msg": "Too many requests. Please try again later",
                 "request_id": rid}, status_code=429, headers={"retry-after": "5", "dg-request-id": rid}))
            return
        if failure == "500":
            await ws.send_denial_response(JSONResponse(
                {"err_code": "INTERNAL_SERVER_ERROR", "err_msg": "Internal error", "request_id": rid}, status_code=500))
            return
        q = dict(ws.query_params)
        self.queries.append(q)
        if q.get("encoding") != "linear16" or q.get("sample_rate") != "16000":
            await ws.send_denial_response(JSONResponse(
                {"err_code": "Bad Request", "err_msg": "this stand-in takes linear16 at 16000 Hz", "request_id": rid},
                status_code=400))
            return
        await ws.accept()
        session = _Session(self, ws, q, rid, failure)
        try:
            await session.run()
        except WebSocketDisconnect:
            pass
        except Dropped:
            await ws.close(1011, "NET-0001: the stand-in dropped the stream")
        finally:
            session.abort()

    def app(self) -> Starlette:
        return Starlette(routes=[WebSocketRoute("/v1/listen", self.listen)])


class _Scripted:
    """A recogniser stand-in that answers the next scripted transcript."""

    def __init__(self, script: Any) -> None:
        self._script = script

    def finish(self) -> str:
        return str(self._script.popleft()) if self._script else ""

    def abort(self) -> None:
        pass


class _Session:
    def __init__(self, owner: DeepgramStandIn, ws: WebSocket, q: dict[str, str], rid: str, failure: str | None) -> None:
        self.owner, self.ws, self.rid, self.failure = owner, ws, rid, failure
        self.interim = q.get("interim_results") == "true"
        self.endpointing = int(q["endpointing"]) if q.get("endpointing", "false").isdigit() else None
        self.vad_events = q.get("vad_events") == "true"
        self.utterance_end = "utterance_end_ms" in q
        self.model = recognizer()
        self.stream: Any = None
        self.samples = 0  # all audio received
        self.seg_start = 0  # first sample of the current segment
        self.speaking = False
        self.silence = 0
        self.heard_words = False
        self.partial = ""
        self.pending = np.zeros(0, np.int16)

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.abort()
            self.stream = None

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(obj))

    async def results(self, text: str, final: bool, speech_final: bool = False, from_finalize: bool = False) -> None:
        start = self.seg_start / 16000
        await self.send({
            "type": "Results", "channel_index": [0, 1], "duration": round(self.samples / 16000 - start, 3),
            "start": round(start, 3), "is_final": final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": text, "confidence": 0.9 if text else 0.0,
                                          "words": [{"word": w.lower(), "punctuated_word": w} for w in text.split()]}]},
            "metadata": {"request_id": self.rid, "model_info": {"name": "general-nova-3", "version": "stand-in",
                                                                "arch": "nova-3"}},
        })

    async def finalize(self, speech_final: bool, from_finalize: bool) -> None:
        """Close the current segment: its final transcript, then a fresh segment."""
        if self.stream is None:
            if from_finalize:
                await self.results("", True, speech_final, from_finalize)
            return
        stream, self.stream = self.stream, None
        text = await asyncio.to_thread(stream.finish)
        self.partial = ""
        await self.results(text, True, speech_final, from_finalize)
        self.seg_start = self.samples
        if text and self.utterance_end:
            await self.send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.samples / 16000, 3)})

    async def audio(self, data: bytes) -> None:
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        if self.failure == "drop" and self.samples > 16000 * 0.5:
            raise Dropped("stand-in dropped the stream")  # run() closes with 1011, as Deepgram does on a failure
        if self.failure == "stall":
            return  # a server that takes audio and never answers
        if self.owner.transcripts is not None:  # scripted: count the audio, recognise nothing
            self.samples += len(pcm)
            if self.stream is None:
                self.stream = _Scripted(self.owner.transcripts)
            return
        if self.stream is None:
            self.stream = await asyncio.to_thread(self.model.new_stream)
        self.samples += len(pcm)
        partial = await asyncio.to_thread(self.stream.feed, pcm)
        if partial and partial != self.partial and self.interim and self.failure != "stall":
            self.partial = partial
            await self.results(partial, False)
        self.pending = np.concatenate([self.pending, pcm])
        while len(self.pending) >= FRAME:
            frame, self.pending = self.pending[:FRAME], self.pending[FRAME:]
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) > 400
            if loud:
                if not self.speaking and self.vad_events and self.failure != "stall":
                    await self.send({"type": "SpeechStarted", "channel": [0], "timestamp": round(self.samples / 16000, 3)})
                self.speaking, self.silence = True, 0
            elif self.speaking:
                self.silence += 20
                if self.endpointing is not None and self.silence >= self.endpointing and self.failure != "stall":
                    self.speaking = False
                    await self.finalize(speech_final=True, from_finalize=False)

    async def run(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                await self.audio(msg["bytes"])
                continue
            try:
                control = json.loads(msg.get("text") or "")
            except ValueError:
                await self.ws.close(1008, "DATA-0000: invalid JSON")
                return
            kind = control.get("type")
            if self.failure == "stall":
                continue  # a server that never answers
            if kind == "KeepAlive":
                self.owner.keepalives += 1
            elif kind == "Finalize":
                await self.finalize(speech_final=False, from_finalize=True)
            elif kind == "CloseStream":
                await self.finalize(speech_final=False, from_finalize=True)
                await self.send({"type": "Metadata", "transaction_key": "deprecated", "request_id": self.rid,
                                 "sha256": secrets.token_hex(32), "created": datetime.now(UTC).isoformat(),
                                 "duration": round(self.samples / 16000, 3), "channels": 1})
                self.owner.closed_streams += 1
                await self.ws.close(1000)
                return
