"""Deepgram streaming speech-to-text (``stt: {type: deepgram}``): the live ``listen`` WebSocket API.

One WebSocket per utterance, opened when the engine starts recognising (speech start), to
``{baseUrl}/v1/listen?model=nova-3&encoding=linear16&sample_rate=16000&channels=1&interim_results=true&
endpointing=300&utterance_end_ms=1000&vad_events=true&smart_format=true`` with ``Authorization: Token <key>``.

* Audio goes out as binary frames of 16 kHz linear16; ``{"type": "KeepAlive"}`` is sent when no audio went out for
  ``keepAlive`` seconds (Deepgram closes an idle stream after 10 s); ``finish()`` sends ``{"type": "Finalize"}``
  then ``{"type": "CloseStream"}`` and waits for the server to flush its last results and close.
* Received ``Results``: interim ones (``is_final: false``) make the partial hypothesis; final ones
  (``is_final: true``) are concatenated into the transcript. ``speech_final: true`` (the ``endpointing`` silence
  was seen) and ``UtteranceEnd`` set the end-of-turn hint (:class:`~voicecall.speech.base.EndOfTurnHints`,
  ``end_of_turn()``); new words or ``SpeechStarted`` clear it. ``Metadata`` ends the stream after CloseStream.
* A receiver thread reads the socket; ``feed()`` never blocks on the network beyond a send.

Failures raise :class:`~voicecall.speech.cloud.ProviderError` from ``new_stream()`` (handshake refused: 401, 429
with ``retry-after``, 5xx, the vendor's ``err_msg``), ``feed()`` (the stream dropped) or ``finish()`` (no final
result within ``timeout`` seconds, a dropped stream). The key is never logged nor put in a message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any
from urllib.parse import urlencode

import numpy as np
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from .base import PCM16
from .cloud import QUIET_WS_LOG, ProviderError, Secret, http_failure, resolve_key

log = logging.getLogger(__name__)
RATE = 16000


class DeepgramStream:
    """One utterance on one live WebSocket (see the module doc)."""

    sample_rate = RATE

    def __init__(self, model: DeepgramSTT, ws: ClientConnection) -> None:
        self._model = model
        self._ws = ws
        self._lock = threading.Lock()
        self._finals: list[str] = []
        self._interim = ""
        self._returned = ""
        self._error: ProviderError | None = None
        self._closed = threading.Event()
        self._open = True
        self._eot: float | None = None
        self._last_send = time.monotonic()
        self.audio_seconds = 0.0
        self._thread = threading.Thread(target=self._receive, name="deepgram-recv", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ receiver thread
    def _receive(self) -> None:
        ka = self._model.keep_alive
        try:
            while True:
                try:
                    raw = self._ws.recv(timeout=ka)
                except TimeoutError:
                    if self._open and time.monotonic() - self._last_send >= ka:
                        self._send_json({"type": "KeepAlive"})
                    continue
                if isinstance(raw, bytes):
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    self._on_message(msg)
        except ConnectionClosedOK:
            pass
        except ConnectionClosed as exc:
            if self._open or not self._closed.is_set():
                reason = exc.rcvd.reason if exc.rcvd else "no close frame"
                with self._lock:
                    self._error = ProviderError(self._model.key.scrub(
                        f"Deepgram dropped the stream ({reason or 'connection lost'})"), "dropped")
        except Exception as exc:  # noqa: BLE001 - reported by feed()/finish()
            with self._lock:
                self._error = ProviderError(self._model.key.scrub(f"Deepgram stream failed: {exc}"), "dropped")
        finally:
            self._closed.set()

    def _on_message(self, msg: dict[str, Any]) -> None:
        mtype = msg.get("type")
        if mtype == "Results":
            alts = (msg.get("channel") or {}).get("alternatives") or [{}]
            text = str(alts[0].get("transcript") or "").strip()
            with self._lock:
                if msg.get("is_final"):
                    if text:
                        self._finals.append(text)
                    self._interim = ""
                else:
                    self._interim = text
                if text:
                    self._eot = None
                if msg.get("speech_final"):
                    self._eot = time.monotonic()
        elif mtype == "UtteranceEnd":
            with self._lock:
                self._eot = time.monotonic()
        elif mtype == "SpeechStarted":
            with self._lock:
                self._eot = None
        elif mtype == "Metadata":
            self.audio_seconds = float(msg.get("duration") or 0.0)
        elif mtype == "Error" or msg.get("err_code"):
            detail = msg.get("description") or msg.get("err_msg") or msg.get("message") or "error"
            with self._lock:
                self._error = ProviderError(self._model.key.scrub(f"Deepgram reported an error: {detail}"), "server")

    def _send_json(self, obj: dict[str, Any]) -> None:
        try:
            self._ws.send(json.dumps(obj))
            self._last_send = time.monotonic()
        except (ConnectionClosed, OSError):
            pass

    # ------------------------------------------------------------------ STTStream
    def _text(self) -> str:
        return " ".join([*self._finals, self._interim]).strip()

    def feed(self, pcm: PCM16) -> str | None:
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        with self._lock:
            err = self._error
        if err is not None:
            raise err
        if pcm.size:
            try:
                self._ws.send(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
                self._last_send = time.monotonic()
            except (ConnectionClosed, OSError):
                pass  # the receiver reports why
        with self._lock:
            text = self._text()
        if text != self._returned:
            self._returned = text
            return text
        return None

    def finish(self) -> str:
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        self._open = False
        self._send_json({"type": "Finalize"})
        self._send_json({"type": "CloseStream"})
        ok = self._closed.wait(self._model.timeout)
        try:
            self._ws.close()
        except Exception:
            log.debug("deepgram close failed", exc_info=True)
        if not ok:
            raise ProviderError(f"Deepgram gave no final transcript within {self._model.timeout:g} s", "timeout")
        with self._lock:
            err = self._error
            text = " ".join(self._finals).strip()
        if err is not None:
            raise err
        return text

    def abort(self) -> None:
        if self._open:
            self._open = False
            self._closed.set()
            try:
                self._ws.close()
            except Exception:
                log.debug("deepgram close failed", exc_info=True)

    def end_of_turn(self) -> float | None:
        with self._lock:
            return self._eot


class DeepgramSTT:
    """Options: ``model`` (``nova-3``), ``apiKey`` (default ``DEEPGRAM_API_KEY``; required), ``baseUrl``
    (``wss://api.deepgram.com``), ``language`` (``en``), ``endpointing`` (ms of silence for ``speech_final``, 300),
    ``utteranceEndMs`` (1000), ``smartFormat`` (true), ``keywords`` (list, nova-2) / ``keyterms`` (nova-3),
    ``keepAlive`` (seconds, 4), ``timeout`` (seconds to connect and to get the final result, 5)."""

    name = "deepgram"

    def __init__(self, model: str = "nova-3", api_key: str | None = None, base_url: str = "wss://api.deepgram.com",
                 language: str = "en", endpointing: int = 300, utterance_end_ms: int = 1000,
                 smart_format: bool = True, keyterms: list[str] | None = None, keep_alive: float = 4.0,
                 timeout: float = 5.0) -> None:
        if not base_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError(f"stt.baseUrl must start with wss:// or ws:// (got {base_url!r})")
        key = resolve_key(api_key, "DEEPGRAM_API_KEY", "stt type 'deepgram'")
        assert key is not None
        self.key: Secret = key
        base = base_url.rstrip("/").replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.url = base + ("/listen" if base.endswith("/v1") else "/v1/listen")
        self.model = model
        self.billing = f"deepgram/{model}"
        self.language = language
        self.params: dict[str, Any] = {
            "model": model, "encoding": "linear16", "sample_rate": RATE, "channels": 1, "interim_results": "true",
            "endpointing": int(endpointing), "utterance_end_ms": int(utterance_end_ms), "vad_events": "true",
            "smart_format": "true" if smart_format else "false", "punctuate": "true",
        }
        self.keyterms = list(keyterms or [])
        self.keep_alive = float(keep_alive)
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"DeepgramSTT(url={self.url!r}, model={self.model!r})"

    def warm_up(self) -> None:
        """Nothing to warm: a remote service is not contacted at start-up."""

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> DeepgramStream:
        params = dict(self.params, language=(language or self.language))
        query = urlencode(params) + "".join("&" + urlencode({"keyterm": k}) for k in self.keyterms)
        url = f"{self.url}?{query}"
        try:
            ws = connect(url, additional_headers={"Authorization": f"Token {self.key.get()}"},
                         open_timeout=self.timeout, close_timeout=1.0, max_size=2**22, proxy=None,
                         logger=QUIET_WS_LOG)
        except InvalidStatus as exc:
            r = exc.response
            raise http_failure("Deepgram", f"GET {self.url}", r.status_code, r.body or b"",
                               {k.lower(): v for k, v in r.headers.raw_items()}, self.key) from None
        except TimeoutError:
            raise ProviderError(f"Deepgram did not accept the stream within {self.timeout:g} s", "timeout") from None
        except (OSError, WebSocketException) as exc:
            raise ProviderError(self.key.scrub(f"cannot connect to Deepgram at {self.url}: {exc}"), "connect") from None
        return DeepgramStream(self, ws)
