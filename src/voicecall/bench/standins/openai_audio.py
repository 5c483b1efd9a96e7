"""Stand-in for OpenAI's audio and chat endpoints, written from OpenAI's public API reference (the same wire
protocol Groq, speaches, Kokoro-FastAPI and whisper.cpp's server speak):

* ``POST /v1/audio/transcriptions`` — ``multipart/form-data`` with ``file``, ``model``, optional ``language``,
  ``prompt``, ``response_format`` (``json``: ``{"text": ..., "usage": {"type": "duration", "seconds": ...}}``);
* ``POST /v1/audio/speech`` — JSON ``{model, input, voice, response_format, speed, instructions}``; with
  ``response_format: "pcm"`` the body is raw 24 kHz 16-bit little-endian mono PCM, streamed (chunked);
* ``POST /v1/chat/completions`` with ``stream: true`` — SSE ``data: {chat.completion.chunk}`` lines and
  ``data: [DONE]``, usage in a last chunk when ``stream_options.include_usage``;
* auth: ``Authorization: Bearer <key>``; errors ``{"error": {"message", "type", "param", "code"}}`` with HTTP 401 /
  429 (+ ``retry-after``) / 500.

Recognition is the embedded pocketsphinx; speech is tone bursts (one tone per word).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import Dropped, StandIn, recognizer, stall, synthesizer, tokens_of


def _error(status: int, message: str, etype: str, code: str | None, headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": etype, "param": None, "code": code}},
                        status_code=status, headers=headers)


@dataclass
class OpenAIAudioStandIn(StandIn):
    speech_bodies: list[dict[str, Any]] = field(default_factory=list)

    async def _gate(self, request: Request) -> Response | str | None:
        """A failure response, ``"drop"``, or ``None`` to go on."""
        failure = self.take_failure()
        if failure == "stall":
            await stall(request.is_disconnected)
            return Response(status_code=504)
        if request.headers.get("authorization") != f"Bearer {self.key}" or failure == "401":
            return _error(401, "Incorrect API key provided: sk-****. You can find your API key at "
                          "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")
        if failure == "429":
            return _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded",
                          {"retry-after": "2"})
        if failure == "500":
            return _error(500, "The server had an error while processing your request.", "server_error", None)
        return failure

    async def transcriptions(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str) or not form.get("model"):
            return _error(400, "file and model are required", "invalid_request_error", None)
        data = await upload.read()
        self.requests.append({k: v for k, v in form.items() if k != "file"})
        with wave.open(io.BytesIO(data)) as w:
            if w.getframerate() != 16000 or w.getsampwidth() != 2:
                return _error(400, "this stand-in reads 16 kHz 16-bit WAV", "invalid_request_error", None)
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        if gate == "drop":  # headers, half a body, then the connection is cut
            async def cut() -> AsyncIterator[bytes]:
                yield b'{"text": "what is'
                raise Dropped("stand-in dropped the connection")

            return StreamingResponse(cut(), media_type="application/json")

        if self.transcripts is not None:
            text = self.transcripts.popleft() if self.transcripts else ""
            return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": round(len(pcm) / 16000, 2)}})

        def recognise() -> str:
            stream = recognizer().new_stream()
            stream.feed(pcm)
            return str(stream.finish())

        text = await asyncio.to_thread(recognise)
        return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": round(len(pcm) / 16000, 2)}})

    async def speech(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        body = await request.json()
        self.speech_bodies.append(body)
        if not body.get("input") or not body.get("voice") or not body.get("model"):
            return _error(400, "model, input and voice are required", "invalid_request_error", None)
        if body.get("response_format") != "pcm":
            return _error(400, "this stand-in only streams pcm", "invalid_request_error", None)
        pcm = b"".join(c.astype("<i2").tobytes() for c in synthesizer(24000, self.word_ms, self.gap_ms).synthesize(body["input"]))
        drop = gate == "drop"

        async def blocks() -> AsyncIterator[bytes]:
            step = 2401  # odd on purpose: a client must carry half samples over
            for n, i in enumerate(range(0, len(pcm), step)):
                if drop and n == 2:
                    raise Dropped("stand-in dropped the stream")
                yield pcm[i:i + step]
                await asyncio.sleep(0)

        return StreamingResponse(blocks(), media_type="application/octet-stream")

    async def chat(self, request: Request) -> Response:
        gate = await self._gate(request)
        if isinstance(gate, Response):
            return gate
        body = await request.json()
        self.requests.append(body)
        last = next((m.get("content") or "" for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
        if self.answers:
            text = self.answers.popleft()
        elif "capital" in last.lower() and "france" in last.lower():
            text = "The capital of France is Paris."
        else:
            text = f"You said: {last.rstrip('.?!')}."
        drop = gate == "drop"

        async def sse() -> AsyncIterator[bytes]:
            base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": body.get("model")}
            words = text.split(" ")
            for n, w in enumerate(words):
                if drop and n == 2:
                    raise Dropped("stand-in dropped the stream")
                chunk = {**base, "choices": [{"index": 0, "delta": {"content": w if n == 0 else " " + w},
                                              "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n".encode()
            if (body.get("stream_options") or {}).get("include_usage"):
                prompt = sum(tokens_of(json.dumps(m)) for m in body.get("messages") or [])
                usage = {"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
                                 Route("/v1/audio/speech", self.speech, methods=["POST"]),
                                 Route("/v1/chat/completions", self.chat, methods=["POST"])])
