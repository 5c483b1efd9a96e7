"""Any OpenAI-compatible transcription endpoint as the STT (``stt: {type: openai-compatible}``): OpenAI
(``gpt-4o-mini-transcribe``, ``gpt-4o-transcribe``, ``whisper-1``), Groq, speaches, whisper.cpp's server.

``POST {baseUrl}/audio/transcriptions`` as ``multipart/form-data`` with ``file`` (a 16 kHz mono 16-bit WAV of
the utterance), ``model``, ``response_format=json`` and the optional ``language`` / ``prompt``; the answer is
``{"text": ...}`` (OpenAI adds ``usage``). This endpoint transcribes whole files, so the stream only buffers the
utterance while it is spoken (no partial hypotheses) and sends it at ``finish()``: the final transcript costs
one HTTP round trip after the end of the turn.

The key (``apiKey`` or ``OPENAI_API_KEY``) is required when ``baseUrl`` is OpenAI's; local servers need none.
Failures raise :class:`~voicecall.speech.cloud.ProviderError` (the engine reports
``conversation.item.input_audio_transcription.failed``; a fallback chain moves on).
"""

from __future__ import annotations

import io
import wave

import httpx
import numpy as np

from .base import PCM16
from .cloud import LoopClients, ProviderError, http_failure, resolve_key, transport_failure

MAX_SECONDS = 600
"""Longest utterance kept (OpenAI accepts files up to 25 MB; 10 minutes of 16 kHz PCM is 19 MB)."""
RATE = 16000


def wav_bytes(pcm: PCM16, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


def openai_billing(base_url: str, model: str) -> str:
    """Price-table key: ``openai/<model>`` on OpenAI's own API, else ``openai-compatible/<model>``."""
    return f"openai/{model}" if "api.openai.com" in base_url else f"openai-compatible/{model}"


class OpenAICompatSTTStream:
    sample_rate = RATE

    def __init__(self, model: OpenAICompatSTT, language: str | None, prompt: str | None) -> None:
        self._model = model
        self._language = language
        self._prompt = prompt
        self._chunks: list[PCM16] = []
        self._samples = 0
        self._open = True

    def feed(self, pcm: PCM16) -> str | None:
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        room = MAX_SECONDS * RATE - self._samples
        if room > 0 and pcm.size:
            part = pcm[:room]
            self._chunks.append(part)
            self._samples += len(part)
        return None

    def finish(self) -> str:
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        self._open = False
        if self._samples == 0:
            return ""
        pcm = np.concatenate(self._chunks)
        self._chunks = []
        return self._model.transcribe(pcm, self._language, self._prompt)

    def abort(self) -> None:
        self._open = False
        self._chunks = []


class OpenAICompatSTT:
    """Options: ``baseUrl`` (default ``https://api.openai.com/v1``), ``model`` (``gpt-4o-mini-transcribe``),
    ``apiKey`` (default ``OPENAI_API_KEY``), ``language`` (ISO-639-1, e.g. ``en``), ``prompt``, ``timeout``
    (seconds, 15)."""

    name = "openai-compatible"
    vendor = "OpenAI-compatible transcription server"

    def __init__(self, base_url: str = "https://api.openai.com/v1", model: str = "gpt-4o-mini-transcribe",
                 api_key: str | None = None, language: str | None = None, prompt: str | None = None,
                 timeout: float = 15.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"stt.baseUrl must start with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self._key = resolve_key(api_key, "OPENAI_API_KEY", "stt type 'openai-compatible' at api.openai.com",
                                required="api.openai.com" in self.base_url)
        self.url = self.base_url + "/audio/transcriptions"
        self.model = model
        self.billing = openai_billing(self.base_url, model)
        self.language = language
        self.prompt = prompt
        self.timeout = float(timeout)
        headers = {"Authorization": f"Bearer {self._key.get()}"} if self._key else {}
        self._http = LoopClients(headers, self.timeout)

    def __repr__(self) -> str:
        return f"OpenAICompatSTT(base_url={self.base_url!r}, model={self.model!r})"

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> OpenAICompatSTTStream:
        return OpenAICompatSTTStream(self, language or self.language, prompt or self.prompt)

    def warm_up(self) -> None:
        """Nothing to warm: a remote service is not contacted at start-up."""

    def transcribe(self, pcm: PCM16, language: str | None = None, prompt: str | None = None) -> str:
        """One blocking request (called from a worker thread)."""
        data = {"model": self.model, "response_format": "json"}
        if language:
            data["language"] = language.split("-")[0]
        if prompt:
            data["prompt"] = prompt
        try:
            resp = self._http.sync().post(self.url, data=data,
                                          files={"file": ("audio.wav", wav_bytes(pcm), "audio/wav")})
        except httpx.HTTPError as exc:
            raise transport_failure(self.vendor + f" {self.base_url}", exc, self._key, self.timeout) from None
        if resp.status_code >= 400:
            raise http_failure(self.vendor + f" {self.base_url}", f"POST {self.url}", resp.status_code,
                               resp.content, resp.headers, self._key)
        try:
            obj = resp.json()
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            return str(obj["text"]).strip()
        if "text/plain" in resp.headers.get("content-type", ""):
            return resp.text.strip()
        raise ProviderError(f"{self.vendor} {self.base_url} answered without a 'text' field", "protocol")
