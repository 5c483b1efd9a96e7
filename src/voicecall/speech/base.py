"""Interfaces of the speech stages: VAD, speech-to-text, LLM and text-to-speech.

Conventions (read these before writing an adapter):

* One adapter per file (``vad_silero.py``, ``stt_pocketsphinx.py``, ...); each registers itself in
  :mod:`voicecall.speech.registry` under a short name used by the configuration (``vad: silero``).
* A *model* (``VADModel``, ``STTModel``, ``TTSModel``, ``LLM``) is loaded once per process and shared by every
  session. Anything stateful for one utterance or one session is a *stream* obtained from the model
  (``new_stream()``). Models must be safe to use from several sessions at once (pools or locks inside).
* Audio crossing these interfaces is mono ``numpy`` ``int16`` at the rate the object declares in
  ``sample_rate``; the engine resamples.
* Blocking calls (everything not marked ``async``) may take milliseconds of CPU. The engine runs them in a
  worker thread (``asyncio.to_thread``), never on the event loop.
* Cancellation: ``LLM.stream_chat`` is an async iterator; closing it (``aclose()``) must stop the generation
  promptly. ``TTSModel.synthesize`` yields chunks, and the engine simply stops iterating.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

PCM16 = npt.NDArray[np.int16]
"""Mono signed 16-bit samples."""


# ------------------------------------------------------------------------------------- who served
@dataclass(frozen=True, slots=True)
class Served:
    """The provider that served one call of a stage: its adapter ``name`` (``deepgram``) and its ``billing`` key
    in the price table (``deepgram/nova-3``; ``None`` for local models, which cost nothing)."""

    provider: str
    billing: str | None = None


def served_by(model: Any) -> Served:
    """:class:`Served` of a plain (non-fallback) model: its ``name`` and optional ``billing`` attribute."""
    return Served(str(getattr(model, "name", type(model).__name__)), getattr(model, "billing", None))


# --------------------------------------------------------------------------------------------- VAD
@runtime_checkable
class VADStream(Protocol):
    """Per-session voice activity state. Feed fixed-size frames, get a speech probability per frame."""

    sample_rate: int
    frame_samples: int

    def probability(self, frame: PCM16) -> float:
        """Speech probability in [0, 1] for exactly ``frame_samples`` samples."""
        ...

    def reset(self) -> None: ...


@runtime_checkable
class VADModel(Protocol):
    name: str

    def new_stream(self) -> VADStream: ...


# ------------------------------------------------------------------------------------- end of turn
@runtime_checkable
class EOTModel(Protocol):
    """An end-of-turn model for ``semantic_vad``: P(turn complete) from the turn's audio at ``sample_rate``.

    Blocking (tens of ms): the engine calls it from a worker thread. Stateless, shared by every session."""

    name: str
    sample_rate: int

    def probability(self, audio16k: PCM16) -> float: ...


# --------------------------------------------------------------------------------------------- STT
@runtime_checkable
class STTStream(Protocol):
    """One utterance being recognised while it is spoken."""

    sample_rate: int

    def feed(self, pcm: PCM16) -> str | None:
        """Add audio; return the current partial hypothesis if it changed, else ``None``. A stream that decodes
        at pauses (:class:`~voicecall.speech.stt_redecode.RedecodeStream`) also returns it, unchanged, after
        each pause's decode: the end-of-turn decision then knows it has the pause's words."""
        ...

    def finish(self) -> str:
        """End the utterance and return the final transcript (may be empty). Releases the stream."""
        ...

    def abort(self) -> None:
        """Drop the utterance without a result. Releases the stream."""
        ...


@runtime_checkable
class EndOfTurnHints(Protocol):
    """Optional extra of an :class:`STTStream` whose recogniser detects the end of a turn itself (Deepgram's
    ``endpointing`` / ``speech_final`` and ``UtteranceEnd``). Turn detection may use it as a hint; nothing requires
    it. Check with ``isinstance(stream, EndOfTurnHints)``."""

    def end_of_turn(self) -> float | None:
        """``time.monotonic()`` when the recogniser last said the speaker finished, if no new words came since;
        else ``None``. Cheap and thread-safe (it reads a field the stream's receiver thread sets)."""
        ...


@dataclass(frozen=True, slots=True)
class TailWord:
    """What a recogniser knows about the last word of the transcript it decoded at a pause: was it *heard*, or
    made up? Whisper completes a sentence cut by a pause ("What is the capital of" → "What is the capital done?",
    "How far away is the" → "How far away isn't it?"): such an invented last word is either improbable to the
    decoder or aligned to the last instant of speech (a word squeezed into the tail of the one really said)."""

    word: str
    """The last word, lower case, without punctuation."""
    probability: float
    """The decoder's probability of the word (the lowest of its tokens)."""
    lead_ms: float
    """From the word's aligned start to the end of speech (the start of the pause); a word said in full lasts a
    few hundred ms, an invented one starts at the very end or inside the pause (<= 0)."""


@runtime_checkable
class TailEvidence(Protocol):
    """Optional extra of an :class:`STTStream` that can say how sure it is of its last word
    (:class:`~voicecall.speech.stt_redecode.RedecodeStream` over Whisper). ``semantic_vad`` weighs it."""

    tail_evidence: bool
    """Whether this stream reports a :class:`TailWord` with its partials (it depends on the recogniser)."""

    def tail_word(self) -> TailWord | None:
        """The last word of the latest partial; ``None`` when unknown."""
        ...

    def least_probability(self) -> float | None:
        """The decoder's probability of the least probable word of the latest decode (the final transcript's,
        after ``finish()``); ``None`` when unknown. A hum made into words ("Mm-hm" →
        "And then they come") has one very improbable word."""
        ...


@runtime_checkable
class STTModel(Protocol):
    name: str

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> STTStream: ...


# --------------------------------------------------------------------------------------------- LLM
@dataclass(slots=True)
class ChatMessage:
    """An OpenAI chat-completions style message."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"id","type":"function","function":{"name","arguments"}}]
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(slots=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


ToolChoice = str | dict[str, Any]
"""``"auto" | "none" | "required" | {"type": "function", "name": ...}`` (GA realtime shape)."""


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a function call. ``name`` and ``call_id`` come with the first delta of ``index``."""

    index: int
    arguments: str = ""
    name: str | None = None
    call_id: str | None = None


@dataclass(slots=True)
class LLMUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    served: Served | None = None
    """Which provider produced the reply, when that is not the configured model itself (a fallback chain)."""


LLMChunk = TextDelta | ToolCallDelta | LLMUsage


@runtime_checkable
class LLM(Protocol):
    name: str

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[FunctionTool] | None = None,
        tool_choice: ToolChoice = "auto",
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply. Yields text and tool-call deltas, and (last, optionally) an ``LLMUsage``."""
        ...


@runtime_checkable
class CountsTokens(Protocol):
    """Optional LLM capability: the engine fits long conversations into the context (``session.truncation``).

    An LLM that offers it gets only the messages that fit (see :mod:`voicecall.speech.context`); one without it
    (a remote server) receives the whole conversation and fits its own context.
    """

    def context_budget(self, tools: list[FunctionTool] | None, tool_choice: ToolChoice, max_tokens: int | None) -> int:
        """Prompt tokens left for the messages (system messages included) once the tool prompt and room for the
        answer are taken."""
        ...

    def message_tokens(self, message: ChatMessage, exact: bool = True) -> int:
        """Tokens ``message`` takes in the prompt, its role markers included. With ``exact=False`` (messages far
        older than what the context can hold) a count already known, else a cheap upper estimate."""
        ...


class LLMError(RuntimeError):
    """The LLM backend failed (unreachable, HTTP error, bad response). The message is safe to show a client."""


# --------------------------------------------------------------------------------------------- TTS
@runtime_checkable
class TTSModel(Protocol):
    name: str
    sample_rate: int

    def voices(self) -> list[str]:
        """Local voice names this model offers."""
        ...

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        """Speak ``text``; yield audio chunks as soon as each is ready."""
        ...
