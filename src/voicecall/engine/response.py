"""One model response: LLM → speakable chunks → TTS, streamed as GA ``response.*`` events.

Event order follows OpenAI's: ``response.created`` → (per output item) ``response.output_item.added`` +
``conversation.item.added`` → ``response.content_part.added`` → deltas → ``*.done`` events →
``response.output_item.done`` + ``conversation.item.done`` → ``response.done`` (always, whatever the outcome).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from voicecall.audio import ENGINE_RATE, PCM16, Resampler
from voicecall.engine.chunker import SpeechChunker, trim_edges
from voicecall.engine.conversation import Item, SpokenChunk, to_chat_messages
from voicecall.engine.markup import ToolMarkupFilter
from voicecall.protocol.ids import new_id
from voicecall.speech.base import (
    ChatMessage,
    CountsTokens,
    FunctionTool,
    LLMError,
    LLMUsage,
    Served,
    TextDelta,
    ToolCallDelta,
    TTSModel,
    served_by,
)
from voicecall.speech.cloud import ProviderError
from voicecall.speech.context import ContextOverflowError, Truncation, fit_messages
from voicecall.speech.prices import StageUse, cost_report

if TYPE_CHECKING:
    from voicecall.engine.session import EngineSession

log = logging.getLogger(__name__)

INLINE_FIT_MESSAGES = 32
"""Conversations up to this many messages are fitted to the context on the event loop (well under a millisecond);
longer ones in a worker thread."""


@dataclass(slots=True)
class ResponseParams:
    output_modalities: list[str]
    instructions: str
    voice: str
    output_format: str
    speed: float
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    max_output_tokens: int | str
    conversation: str = "auto"  # "auto" | "none"
    truncation: str | dict[str, Any] = "auto"  # the session's (GA RealtimeTruncation)
    metadata: dict[str, Any] | None = None
    input_items: list[Item] | None = None  # explicit context (response.input)


@dataclass(slots=True)
class TurnTiming:
    """Timestamps (time.monotonic) of the user turn that triggered a response, for latency metrics."""

    last_speech: float | None = None
    speech_stopped: float | None = None
    stt_final: float | None = None


@dataclass
class Response:
    id: str
    params: ResponseParams
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[Item] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None
    timing: TurnTiming = field(default_factory=TurnTiming)
    metrics: dict[str, float] = field(default_factory=dict)
    audio_started: bool = False

    @property
    def in_conversation(self) -> bool:
        return self.params.conversation != "none"

    def to_dict(self, conversation_id: str | None) -> dict[str, Any]:
        fmt = self.params.output_format
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": self.status,
            "status_details": self.status_details,
            "output": [i.to_dict() for i in self.output],
            "conversation_id": conversation_id if self.in_conversation else None,
            "output_modalities": list(self.params.output_modalities),
            "max_output_tokens": self.params.max_output_tokens,
            "audio": {"output": {"format": {"type": fmt, "rate": 24000} if fmt == "audio/pcm" else {"type": fmt},
                                 "voice": self.params.voice}},
            "usage": self.usage,
            "metadata": self.params.metadata,
        }


SHARED_SYNTHESES = 8
"""Short chunks whose synthesis a session keeps for its next answers (see :meth:`ResponseRunner._synthesis`)."""
SHARED_CHUNK_CHARS = 60


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _synthesize(tts: TTSModel, text: str, voice: str | None, speed: float) -> tuple[list[PCM16], Served]:
    """All of one chunk's audio, and who made it (run in a worker thread: a fallback chain reports per thread)."""
    chunks = list(tts.synthesize(text, voice, speed))
    last = getattr(tts, "last_served", None)
    served = last() if callable(last) else None
    return chunks, served or served_by(tts)


class ResponseRunner:
    """Runs one :class:`Response` for a session. Cancel it by cancelling ``response.task``."""

    def __init__(self, session: EngineSession, response: Response, *, held: bool = False,
                 provisional_user_text: str | None = None) -> None:
        self.s = session
        self.r = response
        # Held (speculative) mode: everything that reaches the client or the conversation is queued here until
        # release(); a held runner that is cancelled leaves no trace.
        self._deferred: list[Callable[[], None]] | None = [] if held else None
        self._provisional = provisional_user_text
        # A speculative answer answers the history as it is now plus the words heard so far: the user item those
        # words become may be committed before the task first runs, and must then be neither awaited (its final
        # transcript) nor answered twice.
        self._context = session.conversation.items() if provisional_user_text is not None else None  # a new list
        self._message: Item | None = None
        self._text_parts: list[str] = []  # text mode: all text; audio mode: text spoken so far
        self._calls: dict[int, Item] = {}
        self._llm_usage = LLMUsage()
        self._tts_uses: dict[Served, StageUse] = {}
        self._audio_samples = 0
        self._tts_queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._tts_task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()
        self._chunk_ready_at: float | None = None

    # ------------------------------------------------------------------------------ events
    @property
    def held(self) -> bool:
        return self._deferred is not None

    def _do(self, action: Callable[[], None]) -> None:
        """Run an action with outside effects now, or queue it while held."""
        if self._deferred is not None:
            self._deferred.append(action)
        else:
            action()

    def release(self) -> None:
        """Adopt a held response: replay what it did so far, in order, then run live."""
        deferred, self._deferred = self._deferred, None
        for action in deferred or []:
            action()

    def _emit(self, etype: str, **fields: Any) -> None:
        event = {"type": etype, **fields}
        self._do(lambda: self.s.emit(event))

    def _ids(self, item: Item, output_index: int) -> dict[str, Any]:
        return {"response_id": self.r.id, "item_id": item.id, "output_index": output_index}

    def _add_output_item(self, item: Item) -> int:
        idx = len(self.r.output)
        self.r.output.append(item)
        snapshot = item.to_dict()

        def publish() -> None:
            self.s.emit({"type": "response.output_item.added", "response_id": self.r.id, "output_index": idx,
                         "item": snapshot})
            if self.r.in_conversation:
                prev = self.s.conversation.add(item)
                self.s.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": snapshot})

        self._do(publish)
        return idx

    def _done_output_item(self, item: Item, idx: int) -> None:
        item.status = "completed" if self.r.status in ("in_progress", "completed") else "incomplete"
        snapshot = item.to_dict()

        def publish() -> None:
            self.s.emit({"type": "response.output_item.done", "response_id": self.r.id, "output_index": idx,
                         "item": snapshot})
            if self.r.in_conversation and item.id in self.s.conversation:
                self.s.emit({"type": "conversation.item.done",
                             "previous_item_id": self.s.conversation.previous_of(item.id), "item": snapshot})

        self._do(publish)

    @property
    def _audio_mode(self) -> bool:
        return self.r.params.output_modalities == ["audio"]

    def _open_message(self) -> Item:
        if self._message is None:
            item = Item(id=new_id("item_"), type="message", role="assistant", status="in_progress")
            self._message = item
            self._msg_idx = self._add_output_item(item)
            part = {"type": "audio", "transcript": ""} if self._audio_mode else {"type": "text", "text": ""}
            self._emit("response.content_part.added", **self._ids(item, self._msg_idx), content_index=0, part=part)
            if self._audio_mode:
                item.content = [{"type": "output_audio", "transcript": ""}]
                self._tts_task = asyncio.create_task(self._speak())
            else:
                item.content = [{"type": "output_text", "text": ""}]
        return self._message

    # -------------------------------------------------------------------------------- run
    async def run(self) -> None:
        r, s = self.r, self.s
        self._emit("response.created", response=r.to_dict(s.conversation.id))
        chunker = SpeechChunker()
        try:
            context = (r.params.input_items if r.params.input_items is not None
                       else self._context if self._context is not None else s.conversation.items())
            messages = await to_chat_messages(r.params.instructions, context)
            if self._provisional:  # the words heard so far, as the user item they will become
                messages.append(ChatMessage("user", self._provisional))
            tools = [FunctionTool(t["name"], t.get("description", ""), t.get("parameters") or {}) for t in r.params.tools]
            max_tokens = None if r.params.max_output_tokens == "inf" else int(r.params.max_output_tokens)
            tool_choice = r.params.tool_choice if tools else "none"
            llm = s.pipeline.llm
            if isinstance(llm, CountsTokens):  # fit the context per session.truncation (else the backend does)
                fit = functools.partial(fit_messages, messages, llm, Truncation.from_session(r.params.truncation),
                                        tools=tools or None, tool_choice=tool_choice, max_tokens=max_tokens)
                # A short conversation is counted at once (a thread hop costs more on a busy machine); a long one off
                # the event loop.
                fitted = fit() if len(messages) <= INLINE_FIT_MESSAGES else await asyncio.to_thread(fit)
                if fitted.dropped:
                    log.debug("response %s: truncation left out the %d oldest messages", r.id, fitted.dropped)
                messages = fitted.messages
            llm_start = time.monotonic()
            if r.timing.stt_final is None and r.timing.speech_stopped is not None:
                r.timing.stt_final = llm_start
            stream = llm.stream_chat(messages, tools=tools or None, tool_choice=tool_choice, max_tokens=max_tokens)
            markup = ToolMarkupFilter()  # no tool syntax is ever shown or spoken
            try:
                async for chunk in stream:
                    if isinstance(chunk, TextDelta):
                        self._text(markup.feed(chunk.text), chunker, llm_start)
                    elif isinstance(chunk, ToolCallDelta):
                        if "llm_first_token_ms" not in r.metrics:
                            r.metrics["llm_first_token_ms"] = (time.monotonic() - llm_start) * 1000
                        self._tool_delta(chunk)
                    elif isinstance(chunk, LLMUsage):
                        self._llm_usage = chunk
                self._text(markup.flush(), chunker, llm_start)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            if markup.removed:
                log.info("response %s: removed %d characters of tool markup from the answer", r.id, markup.removed)
            if self._audio_mode and self._message is not None:
                for piece in chunker.flush():
                    if self._chunk_ready_at is None:
                        self._chunk_ready_at = time.monotonic()
                    self._tts_queue.put_nowait(piece)
                self._tts_queue.put_nowait(None)
                assert self._tts_task is not None
                await self._tts_task
            r.status = "completed"
        except asyncio.CancelledError:
            if r.status == "in_progress":
                r.status = "cancelled"
                r.status_details = {"type": "cancelled", "reason": "client_cancelled"}
            if self._tts_task is not None:
                self._tts_task.cancel()
        except ContextOverflowError as exc:
            r.status = "failed"
            r.status_details = {"type": "failed", "error": {"type": "invalid_request_error", "code": exc.code,
                                                            "message": str(exc)}}
            s.emit_error(exc.code, f"The conversation does not fit the model's context: {exc}.")
            if self._tts_task is not None:
                self._tts_task.cancel()
        except LLMError as exc:
            r.status = "failed"
            r.status_details = {"type": "failed", "error": {"type": "server_error", "code": "llm_error", "message": str(exc)}}
            s.emit_error("llm_error", f"The language model failed: {exc}", type="server_error")
            if self._tts_task is not None:
                self._tts_task.cancel()
        except ProviderError as exc:  # the TTS failed (after any fallback): say so, clearly
            r.status = "failed"
            r.status_details = {"type": "failed", "error": {"type": "server_error", "code": "tts_error", "message": str(exc)}}
            s.emit_error("tts_error", f"The speech synthesizer failed: {exc}", type="server_error")
            if self._tts_task is not None:
                self._tts_task.cancel()
        except Exception as exc:  # a response must always end with response.done
            log.exception("response %s failed", r.id)
            r.status = "failed"
            r.status_details = {"type": "failed", "error": {"type": "server_error", "code": "internal_error",
                                                            "message": f"{type(exc).__name__}: {exc}"}}
            s.emit_error("internal_error", "The response failed inside the server.", type="server_error")
            if self._tts_task is not None:
                self._tts_task.cancel()
        finally:
            self._finish()

    def _text(self, text: str, chunker: SpeechChunker, llm_start: float) -> None:
        """Answer text (already free of tool markup): to the TTS in audio mode, as text deltas otherwise."""
        if not text or (self._message is None and not text.strip()):
            return
        r = self.r
        if "llm_first_token_ms" not in r.metrics:
            r.metrics["llm_first_token_ms"] = (time.monotonic() - llm_start) * 1000
        item = self._open_message()
        if self._audio_mode:
            for piece in chunker.push(text):
                if self._chunk_ready_at is None:
                    self._chunk_ready_at = time.monotonic()
                self._tts_queue.put_nowait(piece)
        else:
            if not self._text_parts:
                text = text.lstrip()
            self._text_parts.append(text)
            self._emit("response.output_text.delta", **self._ids(item, self._msg_idx), content_index=0, delta=text)

    # ---------------------------------------------------------------------------- tools
    def _tool_delta(self, d: ToolCallDelta) -> None:
        item = self._calls.get(d.index)
        if item is None:
            item = Item(id=new_id("item_"), type="function_call", status="in_progress",
                        call_id=d.call_id or new_id("call_"), name=d.name or "", arguments="")
            self._calls[d.index] = item
            item.__dict__["_idx"] = self._add_output_item(item)
        if d.name and not item.name:
            item.name = d.name
        if d.arguments:
            item.arguments = (item.arguments or "") + d.arguments
            self._emit("response.function_call_arguments.delta", **self._ids(item, item.__dict__["_idx"]),
                       call_id=item.call_id, delta=d.arguments)

    # ----------------------------------------------------------------------------- speech
    async def _speak(self) -> None:
        """Synthesize chunks in order and send their audio; the transcript delta goes with each chunk's audio."""
        item = self._message
        assert item is not None
        s, r = self.s, self.r
        tts = s.pipeline.tts
        voice = s.pipeline.local_voice(r.params.voice)
        speed = r.params.speed * s.pipeline.voice_speed(r.params.voice)
        resampler = Resampler(tts.sample_rate, ENGINE_RATE)
        while True:
            text = await self._tts_queue.get()
            if text is None:
                break
            t_req = time.monotonic()
            chunks, served = await asyncio.shield(self._synthesis(tts, text, voice, speed))
            pcm = resampler.process(np.concatenate(chunks)) if chunks else np.zeros(0, np.int16)
            pcm = trim_edges(pcm, ENGINE_RATE, text)  # a chunk cut inside a clause runs on into the next
            use = self._tts_uses.setdefault(served, StageUse())
            use.characters += len(text)
            use.audio_seconds += len(pcm) / ENGINE_RATE
            if pcm.size == 0:
                continue
            if "tts_first_audio_ms" not in r.metrics:
                r.metrics["tts_first_audio_ms"] = (time.monotonic() - t_req) * 1000
            self._do(functools.partial(self._publish_chunk, item, text, pcm))

    def _synthesis(self, tts: TTSModel, text: str, voice: str | None,
                   speed: float) -> asyncio.Future[tuple[list[PCM16], Served]]:
        """The synthesis of one chunk, shared with the session's other answers for a short chunk.

        A speculative answer dropped for newer words has often started synthesizing the very chunk the answer to
        those words begins with ("No,", "I would need", "The time the"); that synthesis goes on in its thread, and
        the new answer takes its audio instead of waiting for a second one. The session keeps the last
        :data:`SHARED_SYNTHESES` short chunks (at most :data:`SHARED_CHUNK_CHARS` characters each)."""
        shared = len(text) <= SHARED_CHUNK_CHARS
        recent = self.s.recent_syntheses
        key = (text, voice, speed)
        fut = recent.get(key) if shared else None
        if fut is not None and not (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            recent.move_to_end(key)
            return fut
        fut = asyncio.get_running_loop().run_in_executor(None, _synthesize, tts, text, voice, speed)
        fut.add_done_callback(_retrieve)  # a failure nobody awaits any more is not an unretrieved exception
        if shared:
            recent[key] = fut
            while len(recent) > SHARED_SYNTHESES:
                recent.popitem(last=False)
        return fut

    def _publish_chunk(self, item: Item, text: str, pcm: PCM16) -> None:
        """Send one spoken chunk: its transcript delta, then its audio; keep the text/audio alignment."""
        s, r = self.s, self.r
        start_ms = self._audio_samples / (ENGINE_RATE / 1000)
        if not r.audio_started:
            r.audio_started = True
            self._record_turn_metrics(time.monotonic())
            s.on_response_audio_started(r)
        sep = " " if self._text_parts else ""
        self._text_parts.append(text)
        item.content[0]["transcript"] = " ".join(self._text_parts)
        s.emit({"type": "response.output_audio_transcript.delta", **self._ids(item, self._msg_idx), "content_index": 0,
                "delta": sep + text})
        s.transport.send_audio(r.id, item.id, self._msg_idx, 0, pcm, r.params.output_format)
        s.note_audio_out(len(pcm))
        item.audio.append(pcm)
        self._audio_samples += len(pcm)
        item.audio_ms = self._audio_samples / (ENGINE_RATE / 1000)
        item.spoken.append(SpokenChunk(text=sep + text, start_ms=start_ms, end_ms=item.audio_ms))

    def _record_turn_metrics(self, first_audio: float) -> None:
        t, m = self.r.timing, self.r.metrics
        if t.speech_stopped is not None:
            if t.last_speech is not None:
                m["end_of_turn_ms"] = (t.speech_stopped - t.last_speech) * 1000
                m["voice_to_voice_ms"] = (first_audio - t.last_speech) * 1000
            if t.stt_final is not None:
                m["stt_final_ms"] = max(0.0, (t.stt_final - t.speech_stopped) * 1000)
            m["processing_ms"] = (first_audio - t.speech_stopped) * 1000
        m["response_first_audio_ms"] = (first_audio - self._t0) * 1000

    # ----------------------------------------------------------------------------- finish
    def _finish(self) -> None:
        if self.held and self.r.status != "in_progress" and self.r.status != "completed":
            self._deferred = None  # a discarded speculation: nothing was ever published
            return
        self._do(self._publish_finish)

    def _publish_finish(self) -> None:
        r, s = self.r, self.s
        msg = self._message
        if msg is not None:
            ids = self._ids(msg, self._msg_idx)
            text = "".join(self._text_parts) if not self._audio_mode else " ".join(self._text_parts)
            if self._audio_mode:
                s.transport.end_audio(r.id, msg.id, self._msg_idx, 0)
                s.emit({"type": "response.output_audio.done", **ids, "content_index": 0})
                s.emit({"type": "response.output_audio_transcript.done", **ids, "content_index": 0, "transcript": text})
                msg.content = [{"type": "output_audio", "transcript": text}]
                part = {"type": "audio", "transcript": text}
            else:
                s.emit({"type": "response.output_text.done", **ids, "content_index": 0, "text": text})
                msg.content = [{"type": "output_text", "text": text}]
                part = {"type": "text", "text": text}
            s.emit({"type": "response.content_part.done", **ids, "content_index": 0, "part": part})
            self._done_output_item(msg, self._msg_idx)
        for item in self._calls.values():
            idx = item.__dict__["_idx"]
            args = item.arguments or "{}"
            try:
                json.loads(args)
            except ValueError:
                log.warning("function call %s produced invalid JSON arguments", item.name)
            s.emit({"type": "response.function_call_arguments.done", **self._ids(item, idx), "call_id": item.call_id,
                    "name": item.name, "arguments": args})
            self._done_output_item(item, idx)
        if r.status == "in_progress":
            r.status = "completed"
        r.usage = self._usage()
        done = r.to_dict(s.conversation.id)
        done["x_voicecall"] = {"latency_ms": {k: round(v, 1) for k, v in r.metrics.items()}, **self._cost()}
        s.emit({"type": "response.done", "response": done})
        s.on_response_done(r)

    def _cost(self) -> dict[str, Any]:
        """``providers`` (who served each stage) and ``cost`` (USD by stage) for ``x_voicecall``."""
        s = self.s
        uses: dict[str, dict[Served, StageUse]] = {}
        stt = s.take_stt_uses()
        if stt:
            uses["stt"] = stt
        u = self._llm_usage
        uses["llm"] = {u.served or served_by(s.pipeline.llm): StageUse(input_tokens=u.input_tokens,
                                                                       output_tokens=u.output_tokens)}
        if self._tts_uses:
            uses["tts"] = self._tts_uses
        providers = {stage: ",".join(dict.fromkeys(sv.provider for sv in per)) for stage, per in uses.items()}
        return {"providers": providers, "cost": cost_report(s.pipeline.prices, uses)}

    def _usage(self) -> dict[str, Any]:
        context = self.r.params.input_items if self.r.params.input_items is not None else self.s.conversation.items()
        in_audio = int(sum(i.audio_ms for i in context if i.role == "user") / 100)
        in_text = self._llm_usage.input_tokens
        out_audio = int(self._audio_samples / (ENGINE_RATE / 1000) / 50)
        out_text = self._llm_usage.output_tokens
        return {
            "total_tokens": in_text + in_audio + out_text + out_audio,
            "input_tokens": in_text + in_audio,
            "output_tokens": out_text + out_audio,
            "input_token_details": {"text_tokens": in_text, "audio_tokens": in_audio, "image_tokens": 0,
                                    "cached_tokens": 0,
                                    "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }
