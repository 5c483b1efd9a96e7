"""Fallback chains for any stage: ``{type: fallback, chain: [{type: ...}, {type: ...}], firstByteTimeout, retryAfter}``.

A chain wraps loaded models of one stage and serves each call from the first *healthy* entry. An entry that fails
(an error, no first byte within ``firstByteTimeout`` seconds, a stream dropped mid-answer) is skipped for
``retryAfter`` seconds (or the ``retry-after`` a 429 gave), with a warning in the log, and the *same* call moves
on to the next entry, so the turn still gets an answer. When the pause is over the first entry is tried again.
If every entry fails, the last error is raised as usual (the client gets an ``error`` event, never a hang).

What "the same call" means per stage:

* **LLM** — before any output, the next entry simply answers. If a stream drops after some text was yielded,
  the next entry is asked to continue: the text so far is appended as a partial assistant message (a native
  "prefill" for Anthropic; OpenAI-compatible servers usually continue it too). A call dropped inside a function
  call's arguments cannot be continued and fails.
* **STT** — the chain keeps the utterance's audio (up to 2 minutes); when an entry fails while listening or at the
  final transcript, the next entry gets the whole utterance replayed.
* **TTS** — each text chunk is synthesized completely by one entry (the engine sends a chunk's audio as a whole
  anyway); a failed chunk is synthesized again by the next entry. Voices: the engine passes the Realtime voice
  name, and each entry maps it with its own default voice table (``voices`` for ElevenLabs).

Which entry served is reported as a :class:`~voicecall.speech.base.Served`: on the LLM's :class:`LLMUsage`, on the
STT stream (``served``), and for TTS through :meth:`FallbackTTS.last_served` (per calling thread). The engine puts
it in ``response.done`` (``x_voicecall.providers``) and prices the call with it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from ..audio import resample
from .base import (
    LLM,
    PCM16,
    ChatMessage,
    FunctionTool,
    LLMChunk,
    LLMError,
    LLMUsage,
    Served,
    STTModel,
    STTStream,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    TTSModel,
    served_by,
)
from .cloud import ProviderError
from .voices import VoiceMap

log = logging.getLogger(__name__)

STT_REPLAY_SECONDS = 120


class Chain:
    """Health of a chain's entries: the order to try them in, and when a failed entry is tried again."""

    def __init__(self, stage: str, names: list[str], retry_after: float) -> None:
        self.stage = stage
        self.names = names
        self.retry_after = float(retry_after)
        self._down_until = [0.0] * len(names)
        self._lock = threading.Lock()
        self.failures = [0] * len(names)

    def order(self) -> list[int]:
        """Healthy entries first (in configuration order), then the resting ones (a last resort)."""
        now = time.monotonic()
        with self._lock:
            healthy = [i for i, t in enumerate(self._down_until) if t <= now]
            resting = sorted((i for i, t in enumerate(self._down_until) if t > now), key=lambda i: self._down_until[i])
        return healthy + resting

    def failed(self, i: int, exc: BaseException, has_next: bool) -> None:
        pause = getattr(exc, "retry_after", None)
        pause = self.retry_after if pause is None else max(float(pause), 1.0)
        with self._lock:
            self._down_until[i] = time.monotonic() + pause
            self.failures[i] += 1
        nxt = "; trying the next entry" if has_next else "; no entry left"
        log.warning("%s fallback: entry %d (%s) failed: %s%s; retrying it in %g s", self.stage, i + 1, self.names[i],
                    exc, nxt, pause)

    def ok(self, i: int) -> None:
        with self._lock:
            self._down_until[i] = 0.0


def _is_failure(exc: BaseException) -> bool:
    return isinstance(exc, (ProviderError, LLMError, OSError, RuntimeError, TimeoutError))


# ------------------------------------------------------------------------------------------------ LLM
class FallbackLLM:
    """An :class:`~voicecall.speech.base.LLM` over a chain of LLMs (see the module doc)."""

    name = "fallback"

    def __init__(self, entries: list[LLM], names: list[str], first_byte_timeout: float = 5.0,
                 retry_after: float = 30.0) -> None:
        self.entries = entries
        self.chain = Chain("llm", names, retry_after)
        self.first_byte_timeout = float(first_byte_timeout)

    async def stream_chat(self, messages: list[ChatMessage], *, tools: list[FunctionTool] | None = None,
                          tool_choice: ToolChoice = "auto", max_tokens: int | None = None) -> AsyncIterator[LLMChunk]:
        order = self.chain.order()
        said: list[str] = []
        last: BaseException | None = None
        for pos, i in enumerate(order):
            model = self.entries[i]
            msgs = messages + [ChatMessage("assistant", "".join(said))] if said else messages
            gen = model.stream_chat(msgs, tools=tools, tool_choice=tool_choice, max_tokens=max_tokens)
            usage: LLMUsage | None = None
            got_any = False
            in_call = False
            try:
                while True:
                    try:
                        if got_any:
                            chunk = await gen.__anext__()
                        else:
                            chunk = await asyncio.wait_for(gen.__anext__(), self.first_byte_timeout)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise ProviderError(f"{self.chain.names[i]} sent nothing within {self.first_byte_timeout:g} s "
                                            "(first-byte timeout)", "timeout") from None
                    got_any = True
                    if isinstance(chunk, LLMUsage):
                        usage = chunk
                        continue
                    if isinstance(chunk, TextDelta):
                        said.append(chunk.text)
                    elif isinstance(chunk, ToolCallDelta):
                        in_call = True
                    yield chunk
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not _is_failure(exc):
                    raise
                last = exc
                self.chain.failed(i, exc, pos + 1 < len(order))
                if in_call:
                    raise LLMError(f"the LLM stream dropped inside a function call: {exc}") from None
                continue
            finally:
                await gen.aclose()  # type: ignore[attr-defined]
            self.chain.ok(i)
            u = usage or LLMUsage()
            yield LLMUsage(u.input_tokens, u.output_tokens, u.served or served_by(model))
            return
        raise LLMError(f"every LLM of the fallback chain failed; the last one: {last}")

    def warm_up(self) -> None:
        for m in self.entries:
            w = getattr(m, "warm_up", None)
            if callable(w):
                w()


# ------------------------------------------------------------------------------------------------ STT
class FallbackSTTStream:
    """One utterance: fed to the current entry, kept for a replay into the next one if it fails."""

    sample_rate = 16000

    def __init__(self, owner: FallbackSTT, language: str | None, prompt: str | None) -> None:
        self._owner = owner
        self._language = language
        self._prompt = prompt
        self._order = owner.chain.order()
        self._pos = -1
        self._audio: list[PCM16] = []
        self._samples = 0
        self._stream: STTStream | None = None
        self.served: Served | None = None
        self._next(None)

    def _next(self, exc: BaseException | None) -> None:
        """Move to the next entry that opens a stream (replaying the audio so far); raise if none is left."""
        chain = self._owner.chain
        if exc is not None:
            chain.failed(self._order[self._pos], exc, self._pos + 1 < len(self._order))
        while True:
            self._pos += 1
            if self._pos >= len(self._order):
                raise ProviderError(f"every STT of the fallback chain failed; the last one: {exc}",
                                    getattr(exc, "kind", "server"))
            i = self._order[self._pos]
            model = self._owner.entries[i]
            try:
                stream = model.new_stream(self._language, self._prompt)
                if self._audio:
                    stream.feed(np.concatenate(self._audio))
            except Exception as e:
                if not _is_failure(e):
                    raise
                exc = e
                chain.failed(i, e, self._pos + 1 < len(self._order))
                continue
            self._stream = stream
            return

    def feed(self, pcm: PCM16) -> str | None:
        if self._samples < STT_REPLAY_SECONDS * 16000:
            self._audio.append(pcm)
            self._samples += len(pcm)
        while True:
            assert self._stream is not None
            try:
                return self._stream.feed(pcm)
            except Exception as exc:
                if not _is_failure(exc):
                    raise
                self._next(exc)  # the new stream already got every sample, this one included
                return None

    def finish(self) -> str:
        while True:
            assert self._stream is not None
            try:
                text = self._stream.finish()
            except Exception as exc:
                if not _is_failure(exc):
                    raise
                self._next(exc)
                continue
            i = self._order[self._pos]
            self._owner.chain.ok(i)
            self.served = getattr(self._stream, "served", None) or served_by(self._owner.entries[i])
            self._audio = []
            return text

    def abort(self) -> None:
        self._audio = []
        if self._stream is not None:
            self._stream.abort()

    def end_of_turn(self) -> float | None:
        fn = getattr(self._stream, "end_of_turn", None)
        return fn() if callable(fn) else None


class FallbackSTT:
    """An :class:`~voicecall.speech.base.STTModel` over a chain of recognisers (see the module doc)."""

    name = "fallback"

    def __init__(self, entries: list[STTModel], names: list[str], first_byte_timeout: float = 5.0,
                 retry_after: float = 30.0) -> None:
        self.entries = entries
        self.chain = Chain("stt", names, retry_after)
        self.first_byte_timeout = float(first_byte_timeout)

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> FallbackSTTStream:
        return FallbackSTTStream(self, language, prompt)

    def warm_up(self) -> None:
        for m in self.entries:
            w = getattr(m, "warm_up", None)
            if callable(w):
                w()


# ------------------------------------------------------------------------------------------------ TTS
_DONE = object()


class FallbackTTS:
    """A :class:`~voicecall.speech.base.TTSModel` over a chain of synthesizers (see the module doc). Its sample rate
    is the first entry's; other entries' audio is resampled to it."""

    name = "fallback"

    def __init__(self, entries: list[TTSModel], names: list[str], types: list[str], first_byte_timeout: float = 5.0,
                 retry_after: float = 30.0) -> None:
        self.entries = entries
        self.chain = Chain("tts", names, retry_after)
        self.first_byte_timeout = float(first_byte_timeout)
        self.sample_rate = int(entries[0].sample_rate)
        self._maps = [VoiceMap(t, m.voices(), None, getattr(m, "default_voices", lambda: None)())
                      for t, m in zip(types, entries, strict=True)]
        self._served = threading.local()

    def voices(self) -> list[str]:
        return []

    def default_voices(self) -> dict[str, str]:
        """The engine passes Realtime names through; each entry maps them itself."""
        from .voices import OPENAI_VOICES

        return {name: name for name in OPENAI_VOICES}

    def last_served(self) -> Served | None:
        """Which entry served the calling thread's last :meth:`synthesize`."""
        return getattr(self._served, "value", None)

    def _one(self, i: int, text: str, voice: str | None, speed: float) -> list[PCM16]:
        """All audio of ``text`` from entry ``i``, with a first-byte timeout (the entry runs in a helper thread)."""
        model = self.entries[i]
        try:
            local = self._maps[i].resolve(voice)
        except ValueError:
            local = self._maps[i].resolve(None)
        q: queue.Queue[Any] = queue.Queue(maxsize=256)
        stop = threading.Event()

        def put(item: Any) -> bool:
            """Hand an item over unless the caller gave up (never blocks for ever on a full queue)."""
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def pump() -> None:
            try:
                for chunk in model.synthesize(text, local.voice, speed * local.speed):
                    if not put(chunk):
                        return
                put(_DONE)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                put(exc)

        threading.Thread(target=pump, name="tts-fallback", daemon=True).start()
        out: list[PCM16] = []
        try:
            first = True
            while True:
                try:
                    item = q.get(timeout=self.first_byte_timeout if first else None)
                except queue.Empty:
                    raise ProviderError(f"{self.chain.names[i]} sent no audio within {self.first_byte_timeout:g} s "
                                        "(first-byte timeout)", "timeout") from None
                first = False
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                out.append(item)
        finally:
            stop.set()
        if model.sample_rate != self.sample_rate and out:
            out = [resample(np.concatenate(out), model.sample_rate, self.sample_rate)]
        return out

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        order = self.chain.order()
        last: BaseException | None = None
        for pos, i in enumerate(order):
            try:
                audio = self._one(i, text, voice, speed)
            except Exception as exc:
                if not _is_failure(exc):
                    raise
                last = exc
                self.chain.failed(i, exc, pos + 1 < len(order))
                continue
            self.chain.ok(i)
            self._served.value = served_by(self.entries[i])
            yield from audio
            return
        raise ProviderError(f"every TTS of the fallback chain failed; the last one: {last}",
                            getattr(last, "kind", "server"))

    def warm_up(self) -> None:
        for m in self.entries:
            w = getattr(m, "warm_up", None)
            if callable(w):
                w()
            else:
                for _ in m.synthesize("Hi."):
                    pass
