"""ElevenLabs streaming text-to-speech (``tts: {type: elevenlabs}``): the WebSocket input-streaming API.

``{baseUrl}/v1/text-to-speech/{voice_id}/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_24000`` with
the ``xi-api-key`` header. Each text chunk the engine's chunker cuts from the LLM's stream (a sentence or a
clause, as the LLM writes it) goes in as it is ready: the beginning-of-stream message
``{"text": " ", "voice_settings": ..., "generation_config": ...}``, then ``{"text": "<chunk> ",
"flush": true}``, then the end-of-stream ``{"text": ""}``. Audio comes back as it is made: messages
``{"audio": "<base64 PCM>", "isFinal": null, "normalizedAlignment": ...}`` are decoded and yielded one by one,
until ``{"isFinal": true}`` (or the server's normal close).

Voices: ElevenLabs voices are ids. The Realtime voice names map to ids with the ``voices`` option
(``{marin: <voice id>, cedar: <voice id>}``); a name without an entry uses ``voiceId`` (default: the premade
"Rachel" voice). ``local.voiceMap`` may name ids directly too.

Failures raise :class:`~voicecall.speech.cloud.ProviderError`: a refused handshake (401/403/429/5xx), an error
message from the server (``{"message": ..., "error": ..., "code": ...}``, e.g. an invalid key, quota exceeded),
no audio within ``timeout`` seconds, a stream closed before ``isFinal``.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from .base import PCM16
from .cloud import QUIET_WS_LOG, ProviderError, Secret, http_failure, resolve_key

log = logging.getLogger(__name__)

RACHEL = "21m00Tcm4TlvDq8ikWAM"
"""ElevenLabs' premade "Rachel" voice, available on every account."""
_RATES = {"pcm_16000": 16000, "pcm_22050": 22050, "pcm_24000": 24000, "pcm_44100": 44100}


class ElevenLabsTTS:
    """Options: ``voiceId`` (default Rachel), ``voices`` (Realtime name → voice id), ``model`` (``eleven_flash_v2_5``),
    ``apiKey`` (default ``ELEVENLABS_API_KEY``; required), ``baseUrl`` (``wss://api.elevenlabs.io``),
    ``outputFormat`` (``pcm_24000``; any ``pcm_*``), ``stability`` (0.5), ``similarityBoost`` (0.8),
    ``timeout`` (seconds to connect and between audio messages, 10)."""

    name = "elevenlabs"

    def __init__(self, voice_id: str = RACHEL, voices: dict[str, str] | None = None,
                 model: str = "eleven_flash_v2_5", api_key: str | None = None,
                 base_url: str = "wss://api.elevenlabs.io", output_format: str = "pcm_24000",
                 stability: float = 0.5, similarity_boost: float = 0.8, timeout: float = 10.0) -> None:
        if output_format not in _RATES:
            raise ValueError(f"tts.outputFormat must be one of {', '.join(_RATES)} (got {output_format!r})")
        if not base_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError(f"tts.baseUrl must start with wss:// or ws:// (got {base_url!r})")
        key = resolve_key(api_key, "ELEVENLABS_API_KEY", "tts type 'elevenlabs'")
        assert key is not None
        self.key: Secret = key
        self.base = base_url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.voice_id = voice_id
        self.voice_table = {k.lower(): v for k, v in (voices or {}).items()}
        self.model = model
        self.billing = f"elevenlabs/{model}"
        self.output_format = output_format
        self.sample_rate = _RATES[output_format]
        self.voice_settings = {"stability": float(stability), "similarity_boost": float(similarity_boost)}
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"ElevenLabsTTS(base={self.base!r}, model={self.model!r})"

    def voices(self) -> list[str]:
        return []  # voice ids are the account's; any id is accepted

    def default_voices(self) -> dict[str, str]:
        """Realtime voice name → voice id, for the voice map (names not configured use ``voiceId``)."""
        from .voices import OPENAI_VOICES

        return {name: self.voice_table.get(name, self.voice_id) for name in OPENAI_VOICES} | self.voice_table

    def warm_up(self) -> None:
        """Nothing to warm: a remote service is not contacted at start-up."""

    def url_for(self, voice_id: str) -> str:
        query = urlencode({"model_id": self.model, "output_format": self.output_format})
        return f"{self.base}/v1/text-to-speech/{quote(voice_id, safe='')}/stream-input?{query}"

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        if not text.strip():
            return
        voice_id = voice or self.voice_id
        url = self.url_for(voice_id)
        try:
            ws = connect(url, additional_headers={"xi-api-key": self.key.get()}, open_timeout=self.timeout,
                         close_timeout=1.0, max_size=2**24, proxy=None, logger=QUIET_WS_LOG)
        except InvalidStatus as exc:
            r = exc.response
            raise http_failure("ElevenLabs", "the stream-input handshake", r.status_code, r.body or b"",
                               {k.lower(): v for k, v in r.headers.raw_items()}, self.key) from None
        except TimeoutError:
            raise ProviderError(f"ElevenLabs did not accept the stream within {self.timeout:g} s", "timeout") from None
        except (OSError, WebSocketException) as exc:
            raise ProviderError(self.key.scrub(f"cannot connect to ElevenLabs at {self.base}: {exc}"), "connect") from None
        try:
            settings: dict[str, Any] = dict(self.voice_settings)
            if speed != 1.0:
                settings["speed"] = max(0.7, min(1.2, float(speed)))  # the range ElevenLabs accepts
            try:
                ws.send(json.dumps({"text": " ", "voice_settings": settings}))
                ws.send(json.dumps({"text": text.strip() + " ", "flush": True}))
                ws.send(json.dumps({"text": ""}))
            except ConnectionClosed:
                pass  # refused after the first message (a wrong key): what the service said is read below
            odd = b""
            while True:
                try:
                    raw = ws.recv(timeout=self.timeout)
                except TimeoutError:
                    raise ProviderError(f"ElevenLabs sent no audio for {self.timeout:g} s", "timeout") from None
                except ConnectionClosedOK:
                    return  # closed normally after the last audio
                except ConnectionClosed as exc:
                    reason = exc.rcvd.reason if exc.rcvd else "connection lost"
                    kind = "auth" if exc.rcvd is not None and exc.rcvd.code == 1008 and "key" in reason.lower() else "dropped"
                    raise ProviderError(self.key.scrub(f"ElevenLabs dropped the stream ({reason})"), kind) from None
                msg = json.loads(raw) if isinstance(raw, str) else {}
                if not isinstance(msg, dict):
                    continue
                if msg.get("error") or (msg.get("message") and "audio" not in msg):
                    detail = msg.get("message") or msg.get("error")
                    kind = "auth" if "key" in str(detail).lower() or msg.get("code") == 1008 else "server"
                    raise ProviderError(self.key.scrub(f"ElevenLabs reported an error: {detail}"), kind)
                if msg.get("audio"):
                    data = odd + base64.b64decode(msg["audio"])
                    cut = len(data) - len(data) % 2
                    odd = data[cut:]
                    if cut:
                        yield np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)
                if msg.get("isFinal"):
                    return
        except (ValueError, TypeError) as exc:
            raise ProviderError(f"ElevenLabs sent a malformed message: {type(exc).__name__}", "protocol") from None
        finally:
            try:
                ws.close()
            except Exception:
                log.debug("elevenlabs close failed", exc_info=True)
