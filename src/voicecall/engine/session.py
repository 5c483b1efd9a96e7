"""One realtime session of the local engine, whatever transport carries it.

Every client event is handled by the method named in ``EngineSession.HANDLERS`` — that table is the one place to
look for "where is event X handled". The session never touches sockets: it talks to its :class:`Transport`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from voicecall.audio import ENGINE_RATE, AudioCodec, resample
from voicecall.config import LocalConfig
from voicecall.engine.conversation import Conversation, Item, item_from_client
from voicecall.engine.endpointing import INCOMPLETE_TAIL, last_word
from voicecall.engine.interruptions import Tentative, classify, is_clear_interruption
from voicecall.engine.response import Response, ResponseParams, ResponseRunner, TurnTiming
from voicecall.engine.turns import InputAudioBuffer, Segment, SttWorker
from voicecall.protocol.errors import ProtocolError, error_event, from_exception
from voicecall.protocol.events import client_event_id, decode_audio, parse_client_event
from voicecall.protocol.ids import event_id, new_id
from voicecall.protocol.session import (
    SessionConfig,
    Transcription,
    TurnDetection,
    apply_session_update,
    parse_format,
    parse_max_tokens,
    parse_modalities,
    parse_tool_choice,
    parse_tools,
    parse_voice,
)
from voicecall.speech.base import Served, TailEvidence, served_by
from voicecall.speech.cloud import ProviderError
from voicecall.speech.prices import StageUse
from voicecall.speech.qa_hints import restate

if TYPE_CHECKING:
    from voicecall.speech.registry import Pipeline

log = logging.getLogger(__name__)
IDLE_INSTRUCTIONS = ("The user has said nothing for a while. In one short sentence, ask whether they are still "
                     "there, in the language of the conversation.")
"""Added to the session instructions for the response that ``idle_timeout_ms`` triggers."""


_END_PUNCTUATION = ".,;:!?)]}\"'…-"


def continuation(sent: str, text: str) -> str:
    """What ``text`` adds to the transcription deltas already ``sent`` (whose concatenation is ``sent``): the rest of
    it when it begins with ``sent`` at a word or punctuation boundary, else "" (the text changed under what was sent;
    the completed transcript is then authoritative)."""
    if len(text) <= len(sent) or not text.startswith(sent):
        return ""
    if sent and text[len(sent)].isalnum():  # "France" sent, "Frances" now: not a continuation
        return ""
    return text[len(sent):]


class Transport(Protocol):
    """What a session needs from the connection that carries it (WebSocket or WebRTC)."""

    kind: str  # "websocket" | "webrtc"

    def send_event(self, event: dict[str, Any]) -> None:
        """Queue one server event for the client (never blocks)."""
        ...

    def send_audio(self, response_id: str, item_id: str, output_index: int, content_index: int,
                   pcm: np.ndarray, fmt: str = "audio/pcm") -> None:
        """Queue answer audio (engine PCM). WebSocket: ``response.output_audio.delta``; WebRTC: the media track."""
        ...

    def end_audio(self, response_id: str, item_id: str, output_index: int, content_index: int) -> None:
        """No more audio for this content part (flush codecs; WebRTC marks where the buffer will stop)."""
        ...

    def clear_audio(self) -> tuple[str, float] | None:
        """Drop answer audio not yet played. Returns (item_id, ms of it that was played) when audio was playing
        (WebRTC knows what was heard), else ``None`` (on a WebSocket the client truncates)."""
        ...

    def pause_audio(self) -> None:
        """Stop playing answer audio now, keeping the rest (WebRTC: the track sends silence; WebSocket: nothing,
        the client owns playback)."""
        ...

    def resume_audio(self) -> None:
        """Play on from where :meth:`pause_audio` stopped."""
        ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class Recorder(Protocol):
    def on_server_event(self, event: dict[str, Any]) -> None: ...
    def on_client_event(self, event: dict[str, Any]) -> None: ...
    def on_response_metrics(self, response_id: str, latency: dict[str, float]) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one session may hold in memory (``server.maxInputAudioSeconds``, ``server.maxConversationItems``,
    ``server.maxConversationAudioSeconds``)."""

    max_input_audio_seconds: float = 300.0
    max_conversation_items: int = 2000
    max_conversation_audio_seconds: float = 1800.0

    @classmethod
    def from_config(cls, server: Any) -> SessionLimits:
        return cls(server.max_input_audio_seconds, server.max_conversation_items,
                   server.max_conversation_audio_seconds)


class EngineSession:
    HANDLERS: ClassVar[dict[str, str]] = {
        "session.update": "on_session_update",
        "input_audio_buffer.append": "on_input_audio_buffer_append",
        "input_audio_buffer.commit": "on_input_audio_buffer_commit",
        "input_audio_buffer.clear": "on_input_audio_buffer_clear",
        "conversation.item.create": "on_conversation_item_create",
        "conversation.item.retrieve": "on_conversation_item_retrieve",
        "conversation.item.truncate": "on_conversation_item_truncate",
        "conversation.item.delete": "on_conversation_item_delete",
        "response.create": "on_response_create",
        "response.cancel": "on_response_cancel",
        "output_audio_buffer.clear": "on_output_audio_buffer_clear",
    }

    def __init__(self, pipeline: Pipeline, local: LocalConfig, transport: Transport, *, model: str | None = None,
                 recorder: Recorder | None = None, max_seconds: float | None = None,
                 limits: SessionLimits | None = None) -> None:
        self.pipeline = pipeline
        self.local = local
        self.transport = transport
        self.recorder = recorder
        self.limits = limits or SessionLimits()
        self.conversation = Conversation(self.limits.max_conversation_items,
                                         int(self.limits.max_conversation_audio_seconds * 24000))
        self._input_full_reported = False
        self.voices = set(pipeline.voice_names())
        self.vad_defaults = TurnDetection(threshold=local.threshold, prefix_padding_ms=local.prefix_padding_ms,
                                          silence_duration_ms=local.silence_duration_ms)
        self.config = SessionConfig(
            model=model or local.model, instructions=local.instructions, voice=local.voice,
            turn_detection=TurnDetection(**{f: getattr(self.vad_defaults, f) for f in TurnDetection.__slots__}),  # type: ignore[attr-defined]
            transcription=Transcription(model=pipeline.stt.name) if local.input_transcription else None,
        )
        if max_seconds:
            self.config.expires_at = int(time.time() + max_seconds)
        self.input = InputAudioBuffer(pipeline.vad, pipeline.stt, self, self._on_partial_transcript, pipeline.eot)
        self.input.set_turn_detection(self.config.turn_detection)
        self._codec = AudioCodec(self.config.input_format)
        self.responses: dict[str, Response] = {}
        self.active: Response | None = None  # the response writing to the default conversation
        self.audio_produced = False
        self._utt_item_id: str | None = None
        self._utt_words: list[str] = []
        self._utt_sent = ""  # the transcription deltas sent so far for this utterance, joined
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._expiry: asyncio.TimerHandle | None = None
        self._max_seconds = max_seconds
        self._turn = TurnTiming()
        self._spec: tuple[str, Response, ResponseRunner] | None = None  # speculative answer to the turn in progress
        # short chunks synthesized lately, shared by the session's answers (ResponseRunner._synthesis)
        self.recent_syntheses: OrderedDict[tuple[str, str | None, float], asyncio.Future[Any]] = OrderedDict()
        self._in_pause = False  # the turn in progress is in a pause (on_speech_paused until resumed or stopped)
        self._onset_paused = False  # the answer was paused at a first speech-like frame (on_speech_onset)
        self.speculate = local.speculative
        self._stt_uses: dict[Served, StageUse] = {}
        # False interruptions (engine/interruptions.py): speech while the answer is audible is tentative.
        self.false_interruptions = local.false_interruptions
        self.max_backchannel_ms = local.max_backchannel_ms
        self.false_interruption_count = 0
        self._tentative: Tentative | None = None
        self._play_until = 0.0  # monotonic time when the answer audio sent so far ends playing at the client
        self._paused_at: float | None = None
        self._idle: asyncio.TimerHandle | None = None  # idle_timeout_ms

    # ------------------------------------------------------------------------------ plumbing
    def emit(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        event.setdefault("event_id", event_id())
        self.transport.send_event(event)
        if self.recorder is not None:
            try:
                self.recorder.on_server_event(event)
            except Exception:  # recording never breaks a session
                log.exception("recorder failed")

    def emit_error(self, code: str, message: str, *, param: str | None = None, client_event_id: str | None = None,
                   type: str = "invalid_request_error") -> None:
        self.emit(error_event(code, message, param=param, client_event_id=client_event_id, type=type))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(self, initial: dict[str, Any] | None = None) -> None:
        """Send ``session.created``; ``initial`` is a GA session object (e.g. from a client secret)."""
        if initial:
            initial = {k: v for k, v in initial.items() if k not in ("model", "id", "object", "expires_at", "client_secret")}
            self.config = apply_session_update(self.config, initial, voices=self.voices, defaults=self.vad_defaults,
                                               audio_started=False, stt_models={self.pipeline.stt.name})
            self._apply_config()
        self.emit({"type": "session.created", "session": self.config.to_dict()})
        if self._max_seconds:
            self._expiry = asyncio.get_running_loop().call_later(self._max_seconds, self._expire)

    def _expire(self) -> None:
        self.emit_error("session_expired", f"The session reached its maximum length of {self._max_seconds:.0f} seconds.",
                        type="invalid_request_error")
        self.transport.close(1000, "session expired")

    async def handle_message(self, message: str | bytes) -> None:
        """Parse and handle one client message; mistakes become ``error`` events, the session goes on."""
        eid: str | None = None
        try:
            event = parse_client_event(message)
            eid = client_event_id(event)
            await self.handle(event)
        except ProtocolError as exc:
            self.emit(from_exception(exc, eid))

    async def handle(self, event: dict[str, Any]) -> None:
        if self.recorder is not None and event["type"] != "input_audio_buffer.append":
            self.recorder.on_client_event(event)
        handler: Callable[[dict[str, Any]], Any] = getattr(self, self.HANDLERS[event["type"]])
        result = handler(event)
        if asyncio.iscoroutine(result):
            await result

    async def close(self) -> None:
        if self._closed:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        self._drop_speculation()
        self._cancel_idle()
        for r in list(self.responses.values()):
            if r.task is not None and not r.task.done():
                r.status_details = {"type": "cancelled", "reason": "client_cancelled"}
                r.task.cancel()
        if self.responses:
            await asyncio.gather(*(r.task for r in self.responses.values() if r.task), return_exceptions=True)
        self._closed = True
        self.input.close()
        for t in list(self._tasks):
            t.cancel()

    def _apply_config(self) -> None:
        self.input.set_turn_detection(self.config.turn_detection)
        nr = (self.config.noise_reduction or {}).get("type")
        current = getattr(self.input.denoiser, "profile", None)
        if nr != current:
            from voicecall.speech.denoise_rnnoise import RNNoiseStream

            self.input.denoiser = RNNoiseStream(nr) if nr else None
        if self._codec.format != self.config.input_format:
            self._codec = AudioCodec(self.config.input_format)

    # ------------------------------------------------------------------------------- session
    def on_session_update(self, event: dict[str, Any]) -> None:
        self.config = apply_session_update(self.config, event["session"], voices=self.voices,
                                           defaults=self.vad_defaults, audio_started=self.audio_produced,
                                           stt_models={self.pipeline.stt.name})
        self._apply_config()
        self.emit({"type": "session.updated", "session": self.config.to_dict()})

    # --------------------------------------------------------------------------- input audio
    def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        self.append_audio(decode_audio(event["audio"]))

    def append_audio(self, raw: bytes) -> None:
        """The decoded bytes of an ``input_audio_buffer.append`` in the session's input format (the WebSocket
        transport's fast path calls this without building the event)."""
        if raw:
            self.feed_audio(self._codec.decode(raw))

    def feed_audio(self, pcm: np.ndarray) -> None:
        """Engine PCM (mono int16, 24 kHz) from the client's microphone, as if it came in an
        ``input_audio_buffer.append``: the WebRTC transport feeds its decoded media track here."""
        if self._closed or pcm.size == 0:
            return
        if self.input.buffered_ms >= self.limits.max_input_audio_seconds * 1000:
            if not self._input_full_reported:  # one error per full buffer, not one per append
                self._input_full_reported = True
                self.emit_error("input_audio_buffer_full", f"The input audio buffer holds its maximum of "
                                f"{self.limits.max_input_audio_seconds:g} s; audio is dropped until it is committed "
                                "or cleared.", param="audio")
            return
        self._input_full_reported = False
        if self.config.turn_detection is None and self._utt_item_id is None:
            self._new_utterance()
        self.input.append(pcm)
        if self._tentative is not None:
            self._check_long_tentative()

    def _new_utterance(self) -> None:
        self._utt_item_id = new_id("item_")
        self._utt_words = []
        self._utt_sent = ""

    def on_speech_onset(self) -> None:  # TurnEvents
        """One speech-like frame while the answer is audible: pause it now, one VAD frame before the turn can
        start (a barge-in silences the answer sooner); resumed if the next frame is not speech."""
        td = self.config.turn_detection
        if (td is not None and td.interrupt_response and self._tentative is None and self._paused_at is None
                and self._answer_audible()):
            self._onset_paused = True
            self._pause_answer()

    def on_speech_onset_void(self) -> None:  # TurnEvents
        if self._onset_paused:
            self._onset_paused = False
            if self._tentative is None:
                self._resume_answer()

    def on_speech_started(self, audio_start_ms: int) -> None:  # TurnEvents
        self._cancel_idle()
        self._in_pause = False
        self._onset_paused = False
        self._new_utterance()
        self._turn = TurnTiming(last_speech=time.monotonic())
        td = self.config.turn_detection
        if td is not None and td.interrupt_response and self.false_interruptions and self._answer_audible():
            # Maybe only "mm-hm" or a cough: pause the answer now, tell the client once words say it is real.
            assert self._utt_item_id is not None
            self._tentative = Tentative(self._utt_item_id, audio_start_ms, time.monotonic())
            self._pause_answer()
            log.debug("speech during the answer: paused, tentative")
            return
        self._speech_started(audio_start_ms, self._utt_item_id)

    def _speech_started(self, audio_start_ms: int, item_id: str | None) -> None:
        self.emit({"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_start_ms,
                   "item_id": item_id})
        td = self.config.turn_detection
        if td is not None and td.interrupt_response:
            self._barge_in()

    # ------------------------------------------------------------------ false interruptions
    def note_audio_out(self, samples: int) -> None:
        """Answer audio was sent: it plays (in real time, after what was sent before) until ``_play_until``."""
        self._play_until = max(self._play_until, time.monotonic()) + samples / ENGINE_RATE

    def _answer_audible(self) -> bool:
        """The assistant is talking: its audio is playing, or its answer has started and goes on (a gap while the
        next sentence is synthesized is part of the answer)."""
        r = self.active
        speaking = r is not None and r.audio_started and r.task is not None and not r.task.done()
        return speaking or self._paused_at is not None or time.monotonic() < self._play_until

    def _pause_answer(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            self.transport.pause_audio()

    def _resume_answer(self) -> None:
        if self._paused_at is not None:
            self._play_until += time.monotonic() - self._paused_at
            self._paused_at = None
            self.transport.resume_audio()

    def _spoken_ms(self, t: Tentative) -> float:
        """How long the tentative speech has lasted, on the audio clock."""
        td = self.config.turn_detection
        padding = td.prefix_padding_ms if td is not None else 0
        return self.input.last_speech_sample * 1000 / ENGINE_RATE - t.audio_start_ms - padding

    def _check_long_tentative(self) -> None:
        """Speech that goes on longer than a backchannel does is a real interruption."""
        t = self._tentative
        if t is not None and self.input.speaking and self._spoken_ms(t) > self.max_backchannel_ms:
            self._confirm_interruption()

    def _confirm_interruption(self) -> None:
        t, self._tentative = self._tentative, None
        if t is None:
            return
        log.debug("speech during the answer: a real interruption (%r)", t.partial)
        self._speech_started(t.audio_start_ms, t.item_id)  # the barge-in clears the paused audio (and unpauses)

    async def _settle_tentative(self, t: Tentative, seg: Segment, audio_end_ms: int, timing: TurnTiming,
                                spoken_ms: float) -> None:
        """The tentative speech ended before it proved to be an interruption: its final transcript decides."""
        text = t.partial
        least: float | None = None  # how sure the recogniser is of the least probable word, if it tells
        if seg.stt is not None:
            try:
                text = await asyncio.wait_for(seg.stt.finish(), 10)
                stream = seg.stt.stream
                if isinstance(stream, TailEvidence) and stream.tail_evidence:
                    least = stream.least_probability()
            except Exception:
                log.debug("final transcript of a tentative interruption failed", exc_info=True)
        if self._closed:
            return
        kind = classify(text, spoken_ms, least)
        if kind != "words":
            self.false_interruption_count += 1
            log.info("false interruption ignored (%s, %.0f ms): %r", kind, spoken_ms, text)
            if self._tentative is None:
                self._resume_answer()
            if self._utt_item_id == t.item_id:
                self._utt_item_id = None
            return
        # Real words after all: the interruption happens now, then the turn is taken as usual.
        self._speech_started(t.audio_start_ms, t.item_id)
        self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": t.item_id})
        self._commit(None, seg=seg, item_id=t.item_id)
        td = self.config.turn_detection
        if td is not None and td.create_response and self.active is None:
            self._start_response(self._default_params(), timing)

    # ------------------------------------------------------------------ idle timeout
    def _arm_idle(self) -> None:
        td = self.config.turn_detection
        self._cancel_idle()
        if td is None or td.type != "server_vad" or not td.idle_timeout_ms or self._closed:
            return
        delay = max(0.0, self._play_until - time.monotonic()) + td.idle_timeout_ms / 1000
        self._idle = asyncio.get_running_loop().call_later(delay, self._idle_timeout)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_timeout(self) -> None:
        """``idle_timeout_ms`` of silence after the answer played: commit the silence, ask if they are there."""
        self._idle = None
        td = self.config.turn_detection
        if (td is None or td.type != "server_vad" or not td.idle_timeout_ms or self._closed or self.active is not None
                or self.input.speaking or self._tentative is not None):
            return
        end_ms = int(self.input.total_samples * 1000 / ENGINE_RATE)
        self._new_utterance()
        self.emit({"type": "input_audio_buffer.timeout_triggered", "audio_start_ms": max(0, end_ms - td.idle_timeout_ms),
                   "audio_end_ms": end_ms, "item_id": self._utt_item_id})
        self._commit(None)
        params = self._default_params()
        params.instructions = f"{params.instructions}\n\n{IDLE_INSTRUCTIONS}".strip()
        self._start_response(params, TurnTiming())

    def _barge_in(self) -> None:
        r = self.active
        if r is not None and r.task is not None and not r.task.done():
            r.status = "cancelled"
            r.status_details = {"type": "cancelled", "reason": "turn_detected"}
            r.task.cancel()
        self._paused_at = None
        self._play_until = 0.0
        played = self.transport.clear_audio()
        if played is not None:
            item_id, ms = played
            self.emit({"type": "output_audio_buffer.cleared", "response_id": self._cleared_response_id(r)})
            if item_id in self.conversation:
                self._truncate(self.conversation.get(item_id), ms)

    def on_speech_paused(self) -> None:  # TurnEvents
        """Start answering the partial transcript now, held back until the end-of-turn decision confirms it."""
        self._in_pause = True
        td = self.config.turn_detection
        if not self.speculate or td is None or not td.create_response or self._spec is not None or self._tentative:
            return
        if self.active is not None or not self._utt_words:
            return
        text = self._words_to_answer()
        if td.type == "semantic_vad" and last_word(text) in INCOMPLETE_TAIL:
            return  # "... the capital of": semantic_vad holds this turn; an answer to it would be thrown away
        if self.input.stale_words_doubtful:
            return  # the pause's own words are being decoded; _respeculate answers them when they come
        r = Response(id=new_id("resp_"), params=self._default_params())
        runner = ResponseRunner(self, r, held=True, provisional_user_text=text)
        r.task = asyncio.create_task(runner.run())
        self._spec = (text, r, runner)

    def on_speech_resumed(self) -> None:  # TurnEvents
        self._in_pause = False
        self._drop_speculation()

    def _respeculate(self) -> None:
        """Newer words arrived during the pause (a re-decoding recogniser delivers the pause's last word a little
        after the pause began): a speculative answer to the older words would be thrown away at the end of the
        turn, so answer the new words instead, now."""
        if not self._in_pause or not self.input.speaking:
            return
        if self._spec is not None:
            if _same_question(self._spec[0], self._words_to_answer()):
                return
            self._drop_speculation()
        self.on_speech_paused()

    def _words_to_answer(self) -> str:
        """The words a speculative answer answers: the partial transcript with the final mark the recogniser
        decoded ("... of France?"), which the partial leaves out. The final transcript has it, and the answer must
        be the one that transcript gets (a question is answered differently: see :func:`.qa_hints.restate`)."""
        text = " ".join(self._utt_words)
        heard = self.input.heard
        return heard if _norm(heard) == _norm(text) else text

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            _, r, _ = self._spec
            self._spec = None
            if r.task is not None and not r.task.done():
                r.status = "cancelled"
                r.task.cancel()

    def on_speech_stopped(self, audio_end_ms: int) -> None:  # TurnEvents
        self._in_pause = False
        self._turn.speech_stopped = time.monotonic()
        self._turn.last_speech = self.input.last_speech_time
        t = self._tentative
        if t is not None:  # speech during the answer ended before it proved to be an interruption
            self._tentative = None
            spoken = self._spoken_ms(t)
            if is_clear_interruption(t.partial, spoken):
                self._tentative = t
                self._confirm_interruption()
            else:
                self._spawn(self._settle_tentative(t, self.input.take(), audio_end_ms, self._turn, spoken))
                return
        self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms,
                   "item_id": self._utt_item_id})
        # what the recogniser had heard when the turn ended, if it was decoded from all of the turn's speech
        # (only when those words are final-quality: a streaming recogniser's interim may still change)
        partial = " ".join(self._utt_words) if self.input.words_final else ""
        item = self._commit(None)
        td = self.config.turn_detection
        busy = self.active is not None and self.active.task is not None and not self.active.task.done()
        if item is None or td is None or not td.create_response or busy:
            # busy: interrupt_response is off and a response is still running; do not start a second one
            self._drop_speculation()
            return
        spec, self._spec = self._spec, None
        if spec is not None:
            self._spawn(self._confirm_speculation(item, spec, self._turn, partial))
        else:
            self._start_response(self._default_params(), self._turn)

    async def _confirm_speculation(self, item: Item, spec: tuple[str, Response, ResponseRunner],
                                   timing: TurnTiming, partial: str) -> None:
        """Adopt the held answer if the words it answered are still what was heard; else answer afresh.

        Nothing was heard since the pause when the recogniser's partial is unchanged at the end of the turn and
        was decoded from all of the turn's speech (``partial``; empty when it was not): then the answer is released
        at once, without waiting for the final pass (which only the transcription event waits for). Otherwise the
        final transcript decides."""
        text, r, runner = spec
        assert item.recognized is not None
        if _norm(partial) == _norm(text):
            final = text
        else:
            try:
                final = await asyncio.wait_for(asyncio.shield(item.recognized), 10)
            except (TimeoutError, Exception):  # noqa: BLE001
                final = ""
        log.debug("speculative answer to %r; heard at the end %r, final %r", text, partial, final)
        usable = r.task is not None and (not r.task.done() or r.status == "completed")
        if usable and _norm(final) == _norm(text) and self.active is None and not self._closed:
            r.timing = timing
            r.metrics["speculative"] = 1.0
            self.responses[r.id] = r
            self.active = r
            runner.release()
            return
        if r.task is not None and not r.task.done():
            r.status = "cancelled"
            r.task.cancel()
        if self.active is None and not self._closed:
            self._start_response(self._default_params(), timing)

    def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        ms = self.input.buffered_ms
        if ms < 100:
            raise ProtocolError("input_audio_buffer_commit_empty",
                                f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                                f"audio, but buffer only has {ms:.2f}ms of audio.")
        self._turn = TurnTiming(last_speech=time.monotonic(), speech_stopped=time.monotonic())
        self._commit(client_event_id(event))

    def _commit(self, _eid: str | None, seg: Segment | None = None, item_id: str | None = None) -> Item | None:
        emitted = ""
        if seg is None:
            seg = self.input.take()
            item_id = self._utt_item_id
            # words already sent as transcription deltas for this item: the final transcript's delta completes them
            emitted = self._utt_sent if self._utt_item_id else ""
            self._utt_item_id = None
        item_id = item_id or new_id("item_")
        item = Item(id=item_id, type="message", role="user",
                    content=[{"type": "input_audio", "transcript": None}], audio=[seg.pcm], audio_ms=len(seg.pcm) / 24)
        prev = self.conversation.add(item)
        self.emit({"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": item.id})
        self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item.to_dict()})
        self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item.to_dict()})
        loop = asyncio.get_running_loop()
        item.recognized = loop.create_future()
        stt = seg.stt
        if stt is None:  # no streaming recogniser (e.g. buffer filled before speech): recognise now
            stt = SttWorker(self.pipeline.stt, lambda _t: None, self.input.language)
            stt.feed(self.input._stt_resampler.process(seg.pcm))  # same session's resampler
        self._spawn(self._finish_transcription(item, stt, emitted))
        return item

    async def _finish_transcription(self, item: Item, stt: SttWorker, emitted: str = "") -> None:
        assert item.recognized is not None
        try:
            text = await stt.finish()
        except Exception as exc:
            if isinstance(exc, ProviderError):  # a cloud recogniser: a clear message, no traceback
                log.warning("speech recognition failed: %s", exc)
                self.emit_error("stt_error", f"The speech recognizer failed: {exc}", type="server_error")
            else:
                log.exception("speech recognition failed")
            item.recognized.set_result("")
            if self.config.transcription is not None:
                self.emit({"type": "conversation.item.input_audio_transcription.failed", "item_id": item.id,
                           "content_index": 0, "error": {"type": "transcription_error", "code": "stt_failed",
                                                         "message": str(exc), "param": None}})
            return
        if self._turn.speech_stopped is not None and self._turn.stt_final is None:
            self._turn.stt_final = time.monotonic()
        stream = getattr(stt, "_stream", None)
        served = getattr(stream, "served", None) or served_by(self.pipeline.stt)
        self._stt_uses.setdefault(served, StageUse()).audio_seconds += item.audio_ms / 1000
        item.recognized.set_result(text)
        if self.config.transcription is not None:
            item.content[0]["transcript"] = text
            # The deltas add up to the transcript when the text streamed so far begins the final one (a last pass
            # may still change an early word; then the completed transcript alone is authoritative).
            remaining = continuation(emitted, text)
            if remaining:
                self.emit({"type": "conversation.item.input_audio_transcription.delta", "item_id": item.id,
                           "content_index": 0, "delta": remaining})
            self.emit({"type": "conversation.item.input_audio_transcription.completed", "item_id": item.id,
                       "content_index": 0, "transcript": text,
                       "usage": {"type": "duration", "seconds": round(item.audio_ms / 1000, 3)}})

    def _on_partial_transcript(self, text: str) -> None:
        """Emit the words of a partial hypothesis that have stayed stable (append-only deltas)."""
        if self._tentative is not None:  # not yet known to be said to the assistant: keep it back
            self._tentative.partial = text
            td = self.config.turn_detection
            heard_ms = self.input.partial_audio_ms - (td.prefix_padding_ms if td is not None else 0)
            if not is_clear_interruption(text, min(self._spoken_ms(self._tentative), heard_ms)):
                return
            self._confirm_interruption()
        if self._utt_item_id is None:
            return
        words = text.split()
        prev = self._utt_words
        stable = 0
        while stable < min(len(words), len(prev)) and words[stable] == prev[stable]:
            stable += 1
        self._utt_words = words  # kept without transcription too: the speculative answer answers them
        if self._in_pause:
            self._respeculate()
        if self.config.transcription is None:
            return
        stable_text = " ".join(words[:stable])
        if stable == len(words):  # the hypothesis's last word: its punctuation may still change ("France)" -> "?")
            stable_text = stable_text.rstrip(_END_PUNCTUATION)
        new = continuation(self._utt_sent, stable_text)
        if new:
            self.emit({"type": "conversation.item.input_audio_transcription.delta", "item_id": self._utt_item_id,
                       "content_index": 0, "delta": new})
            self._utt_sent = stable_text

    def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self._drop_speculation()
        self.input.clear()
        self._utt_item_id = None
        self.emit({"type": "input_audio_buffer.cleared"})

    # --------------------------------------------------------------------------- conversation
    def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        if self.conversation.full:
            raise ProtocolError("conversation_full", f"The conversation holds its maximum of "
                                f"{self.limits.max_conversation_items} items; delete some first.", "item")
        item = item_from_client(event["item"])
        prev = self.conversation.add(item, event.get("previous_item_id"))
        self.emit({"type": "conversation.item.added", "previous_item_id": prev, "item": item.to_dict()})
        self.emit({"type": "conversation.item.done", "previous_item_id": prev, "item": item.to_dict()})
        if item.role == "user" and item.audio and not item.content[0].get("transcript"):
            item.recognized = asyncio.get_running_loop().create_future()
            stt = SttWorker(self.pipeline.stt, lambda _t: None, None)
            stt.feed(resample(np.concatenate(item.audio), 24000, 16000))
            self._spawn(self._finish_transcription(item, stt))

    def on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.get(event["item_id"], "item_retrieve_invalid_item_id")
        self.emit({"type": "conversation.item.retrieved",
                   "item": item.to_dict(with_audio=True, output_format=self.config.output_format)})

    def on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        self.conversation.delete(event["item_id"])
        self.emit({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item = self.conversation.get(event["item_id"], "item_truncate_invalid_item_id")
        if item.type != "message" or item.role != "assistant" or not item.content or \
                item.content[0].get("type") != "output_audio":
            raise ProtocolError("invalid_value", "Only assistant messages with audio can be truncated.", "item_id")
        if event["content_index"] != 0:
            raise ProtocolError("invalid_value", "content_index must be 0 (the audio part).", "content_index")
        end = event["audio_end_ms"]
        if end > item.audio_ms + 1:
            raise ProtocolError("invalid_value", f"audio_end_ms ({end}) is beyond the item's audio "
                                f"({item.audio_ms:.0f} ms).", "audio_end_ms")
        for r in self.responses.values():  # truncating an item still being spoken stops its response
            if any(o.id == item.id for o in r.output) and r.task is not None and not r.task.done():
                r.task.cancel()
        self._truncate(item, float(end))

    def _truncate(self, item: Item, end_ms: float) -> None:
        kept: list[str] = []
        for chunk in item.spoken:
            if chunk.start_ms >= end_ms:
                break
            if chunk.end_ms <= end_ms:
                kept.append(chunk.text)
            else:
                words = chunk.text.split()
                frac = (end_ms - chunk.start_ms) / max(1.0, chunk.end_ms - chunk.start_ms)
                n = int(len(words) * frac)
                if n:
                    kept.append((" " if chunk.text.startswith(" ") else "") + " ".join(words[:n]))
        transcript = "".join(kept).strip()
        item.content[0]["transcript"] = transcript
        samples = int(end_ms * 24)
        if item.audio:
            pcm = np.concatenate(item.audio)[:samples]
            item.audio = [pcm]
        item.audio_ms = min(item.audio_ms, end_ms)
        item.spoken = [c for c in item.spoken if c.start_ms < end_ms]
        item.truncated = True
        event = {"type": "conversation.item.truncated", "item_id": item.id, "content_index": 0,
                 "audio_end_ms": int(end_ms)}
        self.transport.send_event({**event, "event_id": event_id()})
        if self.recorder is not None:
            self.recorder.on_server_event({**event, "transcript": transcript})

    # ------------------------------------------------------------------------------ responses
    def _default_params(self) -> ResponseParams:
        c = self.config
        return ResponseParams(output_modalities=list(c.output_modalities), instructions=c.instructions, voice=c.voice,
                              output_format=c.output_format, speed=c.speed, tools=list(c.tools),
                              tool_choice=c.tool_choice, max_output_tokens=c.max_output_tokens,
                              truncation=c.truncation)

    def on_response_create(self, event: dict[str, Any]) -> None:
        params = self._response_params(event.get("response") or {})
        if params.conversation != "none" and self.active is not None:
            raise ProtocolError("conversation_already_has_active_response",
                                f"Conversation already has an active response in progress: {self.active.id}. Wait until "
                                "the response is finished before creating a new one.")
        self._start_response(params, self._turn if self._turn.speech_stopped else TurnTiming())
        self._turn = TurnTiming()

    def _response_params(self, body: dict[str, Any]) -> ResponseParams:
        p = self._default_params()
        allowed = {"output_modalities", "instructions", "audio", "tools", "tool_choice", "max_output_tokens",
                   "conversation", "metadata", "input", "prompt"}
        for key in body:
            if key in ("modalities", "voice", "output_audio_format", "temperature", "max_response_output_tokens"):
                raise ProtocolError("unknown_parameter", f"Unknown parameter: 'response.{key}' (a beta field; see the GA "
                                    "response.create parameters).", f"response.{key}")
            if key not in allowed:
                raise ProtocolError("unknown_parameter", f"Unknown parameter: 'response.{key}'.", f"response.{key}")
        if body.get("prompt") is not None:
            raise ProtocolError("unsupported_parameter", "Stored prompts are not supported by this server.", "response.prompt")
        if "output_modalities" in body:
            p.output_modalities = parse_modalities(body["output_modalities"], "response.output_modalities")
        if "instructions" in body:
            if not isinstance(body["instructions"], str):
                raise ProtocolError("invalid_type", "response.instructions must be a string.", "response.instructions")
            p.instructions = body["instructions"]
        audio = body.get("audio")
        if audio is not None:
            out = audio.get("output") if isinstance(audio, dict) else None
            if not isinstance(audio, dict) or set(audio) - {"output"} or (out is not None and not isinstance(out, dict)):
                raise ProtocolError("invalid_value", "response.audio must look like {\"output\": {\"voice\", \"format\"}}.",
                                    "response.audio")
            for key in (out or {}):
                if key not in ("voice", "format"):
                    raise ProtocolError("unknown_parameter", f"Unknown parameter: 'response.audio.output.{key}'.",
                                        f"response.audio.output.{key}")
            if out and "voice" in out:
                p.voice = parse_voice(out["voice"], "response.audio.output.voice", self.voices)
            if out and "format" in out:
                p.output_format = parse_format(out["format"], "response.audio.output.format")
        if "tools" in body:
            p.tools = parse_tools(body["tools"], "response.tools")
        if "tool_choice" in body:
            p.tool_choice = parse_tool_choice(body["tool_choice"], "response.tool_choice", p.tools)
        if "max_output_tokens" in body:
            p.max_output_tokens = parse_max_tokens(body["max_output_tokens"], "response.max_output_tokens")
        conv = body.get("conversation", "auto")
        if conv not in ("auto", "none"):
            raise ProtocolError("invalid_value", f"Invalid value: {conv!r}. Supported values are: 'auto', 'none'.",
                                "response.conversation")
        p.conversation = conv
        meta = body.get("metadata")
        if meta is not None and (not isinstance(meta, dict) or len(meta) > 16):
            raise ProtocolError("invalid_value", "response.metadata must be an object with at most 16 keys.",
                                "response.metadata")
        p.metadata = meta
        if "input" in body:
            p.input_items = self._input_items(body["input"])
        return p

    def _input_items(self, value: Any) -> list[Item]:
        if not isinstance(value, list):
            raise ProtocolError("invalid_type", "response.input must be an array of items.", "response.input")
        items: list[Item] = []
        for i, obj in enumerate(value):
            if not isinstance(obj, dict):
                raise ProtocolError("invalid_type", f"response.input[{i}] must be an object.", f"response.input[{i}]")
            if obj.get("type") == "item_reference":
                ref = obj.get("id")
                if not isinstance(ref, str) or ref not in self.conversation:
                    raise ProtocolError("invalid_value", f"response.input[{i}] references an unknown item {ref!r}.",
                                        f"response.input[{i}].id")
                items.append(self.conversation.get(ref))
            else:
                try:
                    items.append(item_from_client(obj))
                except ProtocolError as exc:
                    exc.param = f"response.input[{i}]." + (exc.param or "").removeprefix("item.")
                    raise
        return items

    def _start_response(self, params: ResponseParams, timing: TurnTiming) -> Response:
        self._cancel_idle()
        r = Response(id=new_id("resp_"), params=params, timing=timing)
        self.responses[r.id] = r
        if r.in_conversation:
            self.active = r
        r.task = asyncio.create_task(ResponseRunner(self, r).run())
        return r

    def take_stt_uses(self) -> dict[Served, StageUse]:
        """Audio recognised since the last response, by the provider that recognised it (for its cost)."""
        uses, self._stt_uses = self._stt_uses, {}
        return uses

    def on_response_audio_started(self, r: Response) -> None:
        self.audio_produced = True

    def on_response_done(self, r: Response) -> None:
        self.conversation.trim()
        self.responses.pop(r.id, None)
        if self.active is r:
            self.active = None
            self._arm_idle()
        if self.recorder is not None and r.metrics:
            self.recorder.on_response_metrics(r.id, dict(r.metrics))

    def on_response_cancel(self, event: dict[str, Any]) -> None:
        rid = event.get("response_id")
        r = self.responses.get(rid) if rid else self.active
        if r is None or r.task is None or r.task.done():
            raise ProtocolError("response_cancel_not_active",
                                "Cancellation failed: no active response found" + (f" with id '{rid}'." if rid else "."))
        r.status = "cancelled"
        r.status_details = {"type": "cancelled", "reason": "client_cancelled"}
        r.task.cancel()

    def on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        if self.transport.kind != "webrtc":
            raise ProtocolError("unsupported_event",
                                "output_audio_buffer.clear is only available on WebRTC connections; on a WebSocket the "
                                "client owns playback (use conversation.item.truncate).", "type")
        r = self.active
        played = self.transport.clear_audio()
        self.emit({"type": "output_audio_buffer.cleared",
                   "response_id": self._cleared_response_id(r) if played is not None else (r.id if r else None)})
        if played is not None and played[0] in self.conversation:
            self._truncate(self.conversation.get(played[0]), played[1])

    def _cleared_response_id(self, r: Response | None) -> str | None:
        """The response whose audio a clear dropped: the transport knows it even after ``response.done``."""
        return getattr(self.transport, "cleared_response_id", None) or (r.id if r else None)


def _norm(text: str) -> str:
    return " ".join(w.strip(".,!?;:").lower() for w in text.split())


def _same_question(a: str, b: str) -> bool:
    """The same words, and a final mark that came or went does not change the answer: it does when it makes the
    words a question the answer restates ("What is the capital of France?" → "The capital of France is"), and
    nowhere else ("How are you today?", "Tell me a fun fact about the ocean." get the same answer with or without
    it), so a speculative answer started on the partial's words keeps its head start."""
    return _norm(a) == _norm(b) and (a.rstrip()[-1:] == b.rstrip()[-1:] or restate(a) == restate(b))

