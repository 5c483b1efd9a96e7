"""Any OpenAI-compatible speech endpoint as the TTS (``tts: {type: openai-compatible}``): OpenAI
(``gpt-4o-mini-tts``, ``tts-1``), Kokoro-FastAPI, speaches.

``POST {baseUrl}/audio/speech`` with JSON ``{model, input, voice, response_format: "pcm", speed}`` (plus
``instructions`` when configured, for ``gpt-4o-mini-tts``); the answer is raw 16-bit little-endian mono PCM at
24 kHz, streamed with chunked transfer encoding: each received block is yielded as soon as it arrives, so the
first audio of a sentence plays before the rest is made.

Voices: the Realtime voice names are passed through as they are (OpenAI's speech endpoint knows them all);
for other servers map them with ``local.voiceMap`` (``marin: af_bella``). The key (``apiKey`` or
``OPENAI_API_KEY``) is required when ``baseUrl`` is OpenAI's. Failures raise
:class:`~voicecall.speech.cloud.ProviderError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np

from .base import PCM16
from .cloud import LoopClients, http_failure, resolve_key, transport_failure
from .stt_openai_compat import openai_billing


class OpenAICompatTTS:
    """Options: ``baseUrl`` (default ``https://api.openai.com/v1``), ``model`` (``gpt-4o-mini-tts``), ``apiKey``
    (default ``OPENAI_API_KEY``), ``instructions`` (speaking style, gpt-4o-mini-tts only), ``sampleRate`` (of the
    server's PCM, 24000), ``timeout`` (seconds to connect and between received blocks, 10)."""

    name = "openai-compatible"
    vendor = "OpenAI-compatible speech server"

    def __init__(self, base_url: str = "https://api.openai.com/v1", model: str = "gpt-4o-mini-tts",
                 api_key: str | None = None, instructions: str | None = None, sample_rate: int = 24000,
                 timeout: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"tts.baseUrl must start with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self._key = resolve_key(api_key, "OPENAI_API_KEY", "tts type 'openai-compatible' at api.openai.com",
                                required="api.openai.com" in self.base_url)
        self.url = self.base_url + "/audio/speech"
        self.model = model
        self.billing = openai_billing(self.base_url, model)
        self.instructions = instructions
        self.sample_rate = int(sample_rate)
        self.timeout = float(timeout)
        headers = {"Authorization": f"Bearer {self._key.get()}"} if self._key else {}
        self._http = LoopClients(headers, self.timeout)

    def __repr__(self) -> str:
        return f"OpenAICompatTTS(base_url={self.base_url!r}, model={self.model!r})"

    def voices(self) -> list[str]:
        return []  # any name the server knows; see local.voiceMap

    def warm_up(self) -> None:
        """Nothing to warm: a remote service is not contacted at start-up."""

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        if not text.strip():
            return
        body: dict[str, Any] = {"model": self.model, "input": text, "voice": voice or "marin",
                                "response_format": "pcm", "speed": max(0.25, min(4.0, float(speed)))}
        if self.instructions:
            body["instructions"] = self.instructions
        where = f"{self.vendor} {self.base_url}"
        try:
            with self._http.sync().stream("POST", self.url, json=body) as resp:
                if resp.status_code >= 400:
                    raise http_failure(where, f"POST {self.url}", resp.status_code, resp.read(), resp.headers,
                                       self._key)
                odd = b""
                for block in resp.iter_bytes():
                    data = odd + block
                    cut = len(data) - len(data) % 2
                    odd = data[cut:]
                    if cut:
                        yield np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)
        except httpx.HTTPError as exc:
            raise transport_failure(where, exc, self._key, self.timeout) from None
