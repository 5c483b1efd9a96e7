"""Local stand-ins for the cloud services voicecall's adapters talk to, each written from the vendor's public API
reference (endpoint paths, auth headers, message shapes, streaming framing, error bodies) and served on 127.0.0.1.

They answer with real work where it matters: the speech recognisers behind the Deepgram and OpenAI-transcription
stand-ins are the embedded pocketsphinx, so the words a test checks went through audio → recognition; the
synthesizers make tone-burst speech (one tone per word) in the vendor's PCM format; the LLMs answer from a small
script. Every stand-in fails on demand (:class:`Failure`): ``401``, ``429`` with ``retry-after``, ``500``, a
stream dropped mid-answer (``drop``), or a first byte that never comes (``stall``), for the next ``times`` calls
(or for ever).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

from starlette.applications import Starlette

from voicecall.server.thread import ServerThread

FAILURES = ("401", "429", "500", "drop", "stall")
STALL_SECONDS = 30.0


@dataclass
class Failure:
    mode: str | None = None
    times: int | None = None  # None: every call


@dataclass
class StandIn:
    """Base of a stand-in: its key, the failure to inject, what it received, and its server thread."""

    key: str
    failure: Failure = field(default_factory=Failure)
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    answers: deque[str] = field(default_factory=deque)
    transcripts: deque[str] | None = None
    """Scripted transcripts for the STT stand-ins (one per utterance): no recognition at all, for the cost bench,
    which measures what is sent, not what is understood, on machines too busy for a recogniser per stand-in."""
    """Scripted LLM answers, used in order (one per text answer) before the built-in script (the cost bench)."""
    word_ms: int = 60
    gap_ms: int = 20
    """The synthesizers' speaking rate: tone per word and gap (tests: fast; the cost bench: 160 words/min)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ServerThread | None = None

    def fail(self, mode: str | None, times: int | None = None) -> None:
        assert mode is None or mode in FAILURES, mode
        self.failure = Failure(mode, times)

    def take_failure(self) -> str | None:
        """The failure for this call (counting it down), or ``None``."""
        with self._lock:
            self.calls += 1
            f = self.failure
            if f.mode is None:
                return None
            if f.times is not None:
                if f.times <= 0:
                    return None
                f.times -= 1
            return f.mode

    def app(self) -> Starlette:
        raise NotImplementedError

    @property
    def http(self) -> str:
        assert self._server is not None
        return self._server.http

    @property
    def ws(self) -> str:
        return self.http.replace("http://", "ws://", 1)

    def __enter__(self) -> Self:
        self._server = ServerThread(self.app(), name=f"standin-{type(self).__name__}", timeout_graceful_shutdown=1,
                                    ws_ping_interval=None).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.stop()


async def stall(is_disconnected: Any = None) -> None:
    """Never answer (until the client goes away or STALL_SECONDS pass)."""
    deadline = asyncio.get_running_loop().time() + STALL_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        if is_disconnected is not None and await is_disconnected():
            return
        await asyncio.sleep(0.1)


class Dropped(Exception):
    """Raised inside a streaming body: the server cuts the connection mid-answer."""


def recognizer() -> Any:
    """The embedded pocketsphinx, in this process (the stand-ins' "cloud" recogniser)."""
    from voicecall.config import StageConfig
    from voicecall.speech.registry import load_stage

    return load_stage("stt", StageConfig(type="pocketsphinx", processes=0, poolSize=1))


def synthesizer(rate: int = 24000, word_ms: int = 60, gap_ms: int = 20) -> Any:
    """Tone-burst speech (one tone per word), the stand-ins' "cloud" voice."""
    from voicecall.speech.tts_tone import ToneTTS

    return ToneTTS(sample_rate=rate, word_ms=word_ms, gap_ms=gap_ms)


def words_of(text: str) -> int:
    return max(1, len(text.split()))


def tokens_of(text: str) -> int:
    """Prompt tokens as the vendors' rule of thumb counts them: about 4 characters of English per token."""
    return max(1, round(len(text) / 4))
