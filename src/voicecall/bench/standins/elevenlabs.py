"""Stand-in for ElevenLabs' text-to-speech WebSocket with input streaming
(``wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/stream-input``), written from ElevenLabs' public reference:

* handshake: ``xi-api-key`` header (or ``xi_api_key`` in the first message); query ``model_id``,
  ``output_format`` (``pcm_16000`` | ``pcm_22050`` | ``pcm_24000`` | ``pcm_44100``, ...);
* client → server: the beginning of stream ``{"text": " ", "voice_settings": {...}, "generation_config": {...}}``,
  text ``{"text": "... ", "try_trigger_generation"?: bool, "flush"?: bool}``, the end of stream ``{"text": ""}``;
* server → client: ``{"audio": "<base64>", "isFinal": null, "normalizedAlignment": {...}, "alignment": {...}}`` as
  audio is made, then ``{"isFinal": true}`` and a normal close; errors as ``{"message": ..., "error": ...,
  "code": ...}`` followed by a policy-violation close (1008), or a refused handshake (HTTP 401/429/500).

The "voice" is tone-burst speech (one tone per word) at the requested PCM rate, sent in 50 ms messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import Dropped, StandIn, synthesizer

RATES = {"pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000, "pcm_44100": 44100}


@dataclass
class ElevenLabsStandIn(StandIn):
    voices_seen: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    async def stream_input(self, ws: WebSocket) -> None:
        failure = self.take_failure()
        header_key = ws.headers.get("xi-api-key")
        if failure == "401":
            await ws.send_denial_response(JSONResponse({"detail": {"status": "invalid_api_key",
                                                                   "message": "Invalid API key"}}, status_code=401))
            return
        if failure == "429":
            await ws.send_denial_response(JSONResponse(
                {"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests"}},
                status_code=429, headers={"retry-after": "3"}))
            return
        if failure == "500":
            await ws.send_denial_response(JSONResponse({"detail": {"status": "internal_error",
                                                                   "message": "Internal error"}}, status_code=500))
            return
        fmt = ws.query_params.get("output_format", "mp3_44100_128")
        await ws.accept()
        if fmt not in RATES:
            await ws.send_text(json.dumps({"message": f"this stand-in only makes PCM, not {fmt}", "error": "bad_format",
                                           "code": 1008}))
            await ws.close(1008, "bad output_format")
            return
        self.voices_seen.append(ws.path_params["voice_id"])
        tts = synthesizer(RATES[fmt], self.word_ms, self.gap_ms)
        try:
            first = json.loads(await ws.receive_text())
            if first.get("text") != " ":
                await ws.send_text(json.dumps({"message": "the first message must be the beginning of stream "
                                               "({\"text\": \" \"})", "error": "bad_bos", "code": 1008}))
                await ws.close(1008)
                return
            if (header_key or first.get("xi_api_key")) != self.key:
                await ws.send_text(json.dumps({"message": "Invalid API key", "error": "invalid_api_key",
                                               "code": 1008}))
                await ws.close(1008, "Invalid API key")
                return
            buffered = ""
            sent = 0
            while True:
                msg = json.loads(await ws.receive_text())
                text = msg.get("text", "")
                if failure == "stall":
                    continue  # never make any audio
                buffered += text
                if text == "" or msg.get("flush") or msg.get("try_trigger_generation"):
                    chunk, buffered = buffered.strip(), ""
                    if chunk:
                        self.texts.append(chunk)
                        sent = await self._speak(ws, tts, chunk, failure == "drop", sent)
                if text == "":
                    await ws.send_text(json.dumps({"isFinal": True}))
                    await ws.close(1000)
                    return
        except WebSocketDisconnect:
            return
        except Dropped:
            await ws.close(1011, "the stand-in dropped the stream")

    async def _speak(self, ws: WebSocket, tts: Any, text: str, drop: bool, sent: int) -> int:
        pcm = b"".join(c.astype("<i2").tobytes() for c in tts.synthesize(text))
        step = tts.sample_rate // 20 * 2  # 50 ms
        chars = list(text)
        for i in range(0, len(pcm), step):
            if drop and sent >= 2:
                raise Dropped("stand-in dropped the stream")
            alignment = {"chars": chars, "charStartTimesMs": [0] * len(chars), "charDurationsMs": [1] * len(chars)} \
                if i == 0 else None
            await ws.send_text(json.dumps({"audio": base64.b64encode(pcm[i:i + step]).decode(), "isFinal": None,
                                           "normalizedAlignment": alignment, "alignment": alignment}))
            sent += 1
            await asyncio.sleep(0)
        return sent

    def app(self) -> Starlette:
        return Starlette(routes=[WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", self.stream_input)])
