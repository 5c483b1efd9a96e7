"""Turn taking: the input audio buffer, server VAD, and speech recognition while the user speaks.

:class:`InputAudioBuffer` receives engine PCM (24 kHz), keeps what is not committed yet, resamples to 16 kHz for
the VAD and the recogniser, and runs the ``server_vad`` state machine. It reports to its owner (the session)
through :class:`TurnEvents` callbacks; it never talks to the client itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voicecall.audio import ENGINE_RATE, PCM16, Resampler, rms_dbfs
from voicecall.engine.endpointing import Endpointer, settled
from voicecall.protocol.session import TurnDetection
from voicecall.speech.base import EOTModel, STTModel, STTStream, TailEvidence, TailWord, VADModel

log = logging.getLogger(__name__)
STT_RATE = 16000


class SttWorker:
    """Feeds one utterance to a recogniser in a worker thread, off the event loop, in arrival order."""

    def __init__(self, model: STTModel, on_partial: Callable[[str], None], language: str | None = None) -> None:
        self._model = model
        self._language = language
        self._on_partial = on_partial
        self._queue: asyncio.Queue[PCM16 | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())
        self._stream: STTStream | None = None
        self.final_at: float | None = None
        self.fed = 0  # 16 kHz samples handed to feed()
        self.covered = 0  # samples the latest partial was decoded from (it covers them all)
        self.heard = ""  # the latest partial with its punctuation, if the stream keeps it (RedecodeStream.heard)
        self.tail: TailWord | None = None  # what the recogniser knows of the latest partial's last word
        self.at_pause = False
        """The recogniser reported the words of a pause and heard nothing loud since (RedecodeStream)."""

    @property
    def stream(self) -> STTStream | None:
        """The recogniser's stream for this utterance (None until it is open)."""
        return self._stream

    def feed(self, pcm16k: PCM16) -> None:
        self.fed += len(pcm16k)
        self._queue.put_nowait(pcm16k)

    async def _run(self) -> str:
        stream = self._stream = await asyncio.to_thread(self._model.new_stream, self._language)
        done = False
        seen = 0
        while not done:
            chunks = [await self._queue.get()]
            while not self._queue.empty():
                chunks.append(self._queue.get_nowait())
            if chunks[-1] is None:
                done = True
            pcm = [c for c in chunks if c is not None]
            if pcm:
                joined = pcm[0] if len(pcm) == 1 else np.concatenate(pcm)
                seen += len(joined)
                partial = await asyncio.to_thread(stream.feed, joined)
                self.at_pause = bool(getattr(stream, "pause_reported", False))  # with the partial it goes with
                if partial:
                    self.covered = seen
                    self.heard = getattr(stream, "heard", "") or partial  # read before the next feed() can change it
                    told = stream if isinstance(stream, TailEvidence) and stream.tail_evidence else None
                    self.tail = told.tail_word() if told is not None else None
                    self._on_partial(partial)
        text = await asyncio.to_thread(stream.finish)
        self.final_at = time.monotonic()
        return text.strip()

    async def finish(self) -> str:
        """Close the utterance and return the final transcript."""
        self._queue.put_nowait(None)
        return await self._task

    def abort(self) -> None:
        self._task.cancel()
        stream = self._stream
        if stream is not None:
            # The worker thread may still be inside feed(); abort in a thread after it returns.
            asyncio.get_running_loop().run_in_executor(None, _safe_abort, stream)


def _safe_abort(stream: STTStream) -> None:
    try:
        stream.abort()
    except Exception:  # best effort release
        log.debug("stt abort failed", exc_info=True)


class Denoiser(Protocol):
    """Input noise reduction (e.g. :class:`voicecall.speech.denoise_rnnoise.RNNoiseStream`): engine PCM in and out."""

    def process(self, pcm: PCM16) -> PCM16: ...


class TurnEvents(Protocol):
    def on_speech_started(self, audio_start_ms: int) -> None: ...
    def on_speech_stopped(self, audio_end_ms: int) -> None: ...
    def on_speech_paused(self) -> None:
        """Silence for ``PAUSE_MS`` inside a turn: a good moment to start answering speculatively."""
        ...
    def on_speech_resumed(self) -> None:
        """Speech again after ``on_speech_paused``: the turn goes on."""
        ...
    def on_speech_onset(self) -> None:
        """A first speech-like VAD frame outside a turn (``on_speech_started`` follows if the next one is too)."""
        ...
    def on_speech_onset_void(self) -> None:
        """The frame after ``on_speech_onset`` was not speech: no turn started."""
        ...


PAUSE_MS = 150
FLOOR_MARGIN_DB = 6.0
"""A VAD frame inside a turn no louder than the room's noise floor plus this is silence, whatever the VAD says."""
SPEECH_OVER_FLOOR_DB = 20.0
"""...provided the turn's speech was at least this much louder than the floor (else levels tell nothing)."""


class RoomLevel:
    """The level of the room when nobody speaks, to date the end of speech sooner than the VAD model alone.

    Silero's recurrent state lags: after the last word it still says "speech" (p 0.9-1.0) for 2-4 frames of pure
    background noise (64-128 ms; ``voicecall bench latency``'s clips: the first frame under the VAD's negative
    threshold comes 120-270 ms after the last sample above -35 dBFS, the first frame at the noise floor 46-80 ms).
    A frame at the noise floor holds no speech, so :class:`InputAudioBuffer` counts it as silence: the silence
    window (``silence_duration_ms``, semantic_vad's waits) then starts when the speaker stopped.

    The floor is the median level of the last :attr:`KEEP` frames the VAD judged not speech (background only:
    a 10th percentile of all frames would be the gaps between words); the turn's speech level is its loudest frame.
    """

    KEEP = 128  # ~4 s of background frames
    MIN_FRAMES = 8  # ~0.25 s of background heard before the floor is trusted

    def __init__(self) -> None:
        self._background: deque[float] = deque(maxlen=self.KEEP)
        self._floor: float | None = None  # cached median; None: to compute
        self.turn_peak = -120.0

    def start_turn(self) -> None:
        self.turn_peak = -120.0

    def background(self, db: float) -> None:
        self._background.append(db)
        self._floor = None

    def floor(self) -> float | None:
        if len(self._background) < self.MIN_FRAMES:
            return None
        if self._floor is None:
            self._floor = float(np.median(np.fromiter(self._background, np.float64, len(self._background))))
        return self._floor

    def quiet(self, db: float) -> bool:
        """Whether a frame of the turn at ``db`` is background noise only."""
        self.turn_peak = max(self.turn_peak, db)
        if db > self.turn_peak - SPEECH_OVER_FLOOR_DB:
            return False  # cheap exit for the frames of speech
        floor = self.floor()
        return floor is not None and self.turn_peak - floor >= SPEECH_OVER_FLOOR_DB and db <= floor + FLOOR_MARGIN_DB


@dataclass(slots=True)
class Segment:
    """Audio handed to a committed user item."""

    pcm: PCM16
    stt: SttWorker | None


class InputAudioBuffer:
    """The uncommitted input audio, with server VAD and streaming recognition.

    Time is counted in samples of engine audio since the session began, as OpenAI's ``audio_start_ms`` is.
    """

    def __init__(self, vad_model: VADModel, stt_model: STTModel, events: TurnEvents,
                 on_partial: Callable[[str], None], eot_model: EOTModel | None = None) -> None:
        self._vad = vad_model.new_stream()
        self._frame = self._vad.frame_samples
        self._vad_resampler = Resampler(ENGINE_RATE, self._vad.sample_rate, quality="QQ")
        self._stt_resampler = Resampler(ENGINE_RATE, STT_RATE, quality="HQ")
        self._stt_model = stt_model
        self._events = events
        self._on_partial = on_partial
        self.turn_detection: TurnDetection | None = None
        self.language: str | None = None
        self._chunks: deque[PCM16] = deque()  # uncommitted engine audio
        self._chunks_samples = 0
        self._start_sample = 0  # absolute index of the first sample in _chunks
        self.total_samples = 0
        self._pending16: list[PCM16] = []
        self._pending16_len = 0
        self._frames_done = 0
        self._speech_run = 0
        self._silence_run = 0
        self.speaking = False
        self._speech_start_sample = 0
        self.last_speech_sample = 0  # end of the last frame judged speech
        self.last_speech_time: float | None = None  # monotonic time that frame was processed
        self.speech_stopped_at: float | None = None  # monotonic time of the last end-of-turn decision
        self._recent16: deque[PCM16] = deque()  # 16 kHz audio kept for prefix padding
        self._recent16_len = 0
        self._stt: SttWorker | None = None
        self._speech_fed = 0  # samples fed to the recogniser when the last speech frame was heard
        self.words_fresh = False
        """The latest partial transcript covers all the speech of the turn so far (it came during this pause)."""
        self.room = RoomLevel()  # the noise floor: frames at it end speech sooner than the VAD model says
        self.denoiser: Denoiser | None = None  # set by the session from audio.input.noise_reduction
        # semantic_vad: the end-of-turn decision (engine/endpointing.py); fed 16 kHz audio, asked on silent frames
        self._partial = ""
        # The words are evidence only when decoded from all of the turn's speech: a partial that lags behind (a busy
        # recogniser) ends mid-sentence ("... tell me how to get to the") and would hold a finished turn.
        self.endpointer = Endpointer(eot_model, self._end_by_model, lambda: self._partial if self.words_fresh else "",
                                     lambda: self._stt.tail if self._stt is not None and self.words_fresh else None,
                                     lambda: self._stt is not None and hasattr(self._stt.stream, "pause_reported"))

    # ----------------------------------------------------------------------------- properties
    @property
    def buffered_ms(self) -> float:
        return self._chunks_samples / (ENGINE_RATE / 1000)

    @property
    def words_final(self) -> bool:
        """The fresh pause words are already the final transcript: the recogniser's pause decode is final-quality
        and ``finish()`` reuses it when nothing was said after (``pause_decode_is_final`` on the stream, as
        :class:`~voicecall.speech.stt_redecode.RedecodeStream` has). A streaming recogniser's interim result (a
        cloud stream, pocketsphinx) may still change in the final pass, so an answer to it waits for that."""
        return self.words_fresh and self._pause_decodes_final()

    def _pause_decodes_final(self) -> bool:
        """The recogniser decodes every pause in final quality (``pause_decode_is_final``: a re-decoding stream)."""
        stt = self._stt
        return stt is not None and bool(getattr(stt.stream, "pause_decode_is_final", False))

    @property
    def stale_words_doubtful(self) -> bool:
        """The latest partial is not the pause's words yet, a recogniser that decodes every pause in full quality
        will deliver them, and it doubts the partial's last word (not :func:`~.endpointing.settled`: "... the
        capital and frat", "... a good book about it"). A speculative answer to such words is almost always thrown
        away when the pause's words come ~100-200 ms later, and on two cores it slows their decode."""
        stt = self._stt
        if stt is None or self.words_fresh or not self._pause_decodes_final():
            return False
        stream = stt.stream
        return isinstance(stream, TailEvidence) and stream.tail_evidence and not settled(stt.tail, self._partial)

    @property
    def heard(self) -> str:
        """The latest partial transcript as the recogniser decoded it, final mark included when it keeps one
        ("... of France?"; a partial drops it because its last word may still grow)."""
        return self._stt.heard if self._stt is not None else ""

    @property
    def partial_audio_ms(self) -> float:
        """Audio of the turn (from its padded start) that the latest partial transcript was decoded from: a
        partial that arrives late (a busy recogniser) speaks for less than the turn has lasted."""
        return self._stt.covered * 1000 / STT_RATE if self._stt is not None else 0.0

    # --------------------------------------------------------------------------------- input
    def append(self, pcm: PCM16) -> None:
        if self.denoiser is not None:  # audio.input.noise_reduction: before the buffer, the VAD and the STT
            pcm = self.denoiser.process(pcm)
        if pcm.size == 0:
            return
        self._chunks.append(pcm)
        self._chunks_samples += len(pcm)
        self.total_samples += len(pcm)
        td = self.turn_detection
        pcm16 = self._stt_resampler.process(pcm)
        if td is None:
            if self._stt is None:
                self._stt = SttWorker(self._stt_model, self._on_partial, self.language)
            self._stt.feed(pcm16)
            return
        self._remember16(pcm16, td)
        if td.type == "semantic_vad":
            self.endpointer.push(pcm16)
        if self.speaking and self._stt is not None:
            self._stt.feed(pcm16)
        self._run_vad(pcm, td)
        if not self.speaking:
            self._trim_idle(td)

    def _remember16(self, pcm16: PCM16, td: TurnDetection) -> None:
        self._recent16.append(pcm16)
        self._recent16_len += len(pcm16)
        keep = int((td.prefix_padding_ms + 200) * STT_RATE / 1000)
        while self._recent16 and self._recent16_len - len(self._recent16[0]) >= keep:
            self._recent16_len -= len(self._recent16.popleft())

    def _trim_idle(self, td: TurnDetection) -> None:
        keep = int((td.prefix_padding_ms + 200) * ENGINE_RATE / 1000)
        while self._chunks and self._chunks_samples - len(self._chunks[0]) >= keep:
            dropped = self._chunks.popleft()
            self._chunks_samples -= len(dropped)
            self._start_sample += len(dropped)

    def _run_vad(self, pcm: PCM16, td: TurnDetection) -> None:
        x = self._vad_resampler.process(pcm)
        if x.size:
            self._pending16.append(x)
            self._pending16_len += len(x)
        if self._pending16_len < self._frame:
            return
        buf = np.concatenate(self._pending16) if len(self._pending16) > 1 else self._pending16[0]
        n = len(buf) // self._frame
        ratio = ENGINE_RATE / self._vad.sample_rate
        start_frames = 2
        silence_frames = max(1, round(td.silence_duration_ms / (1000 * self._frame / self._vad.sample_rate)))
        low = max(0.0, td.threshold - 0.15)
        pause_frames = max(1, round(PAUSE_MS / (1000 * self._frame / self._vad.sample_rate)))
        for i in range(n):
            frame = buf[i * self._frame:(i + 1) * self._frame]
            p = self._vad.probability(frame)
            frame_end_sample = int((self._frames_done + 1) * self._frame * ratio)
            self._frames_done += 1
            db = rms_dbfs(frame)
            if p < low:
                self.room.background(db)
            if not self.speaking:
                if p >= td.threshold:
                    self._speech_run += 1
                    if self._speech_run == 1 < start_frames:
                        self._events.on_speech_onset()
                    if self._speech_run >= start_frames:
                        start = int((self._frames_done - start_frames) * self._frame * ratio)
                        self._begin_speech(start, td)
                else:
                    if self._speech_run:
                        self._events.on_speech_onset_void()
                    self._speech_run = 0
            else:
                if p >= low and not self.room.quiet(db):
                    self._speech_fed = self._stt.fed if self._stt is not None else 0
                    self.words_fresh = False
                    if self._silence_run >= pause_frames:
                        self._events.on_speech_resumed()
                    if self._silence_run:
                        self.endpointer.on_speech()
                    self._silence_run = 0
                    self.last_speech_sample = frame_end_sample
                    self.last_speech_time = time.monotonic()
                else:
                    self._silence_run += 1
                    if self._silence_run == pause_frames and pause_frames < silence_frames:
                        self._events.on_speech_paused()
                    if td.type == "semantic_vad":
                        stt = self._stt
                        if not self.words_fresh and stt is not None and stt.at_pause and self._partial:
                            # The recogniser decoded the pause (by the audio levels) while the VAD still heard the
                            # fading end of speech: those words are the pause's words all the same.
                            self.words_fresh = True
                            self.endpointer.on_partial()  # may end the turn
                        silence_ms = self._silence_run * 1000 * self._frame / self._vad.sample_rate
                        if self.speaking and self.endpointer.on_silence(silence_ms):
                            self._end_speech()
                    elif self._silence_run >= silence_frames:
                        self._end_speech()
        rest = buf[n * self._frame:]
        self._pending16 = [rest] if rest.size else []
        self._pending16_len = len(rest)

    def _begin_speech(self, start_sample: int, td: TurnDetection) -> None:
        self.speaking = True
        self.room.start_turn()
        self._silence_run = 0
        self._speech_run = 0
        padded = max(self._start_sample, start_sample - int(td.prefix_padding_ms * ENGINE_RATE / 1000))
        self._speech_start_sample = padded
        self.last_speech_sample = int(self._frames_done * self._frame * ENGINE_RATE / self._vad.sample_rate)
        self.last_speech_time = time.monotonic()
        # Drop buffered audio before the padded start: it is not part of this turn.
        self._drop_before(padded)
        if self._stt is not None:
            self._stt.abort()
        self._partial = ""
        self.words_fresh = False
        stt = self._stt = SttWorker(self._stt_model, lambda text: self._note_partial(text, stt), self.language)
        self.endpointer.start_turn(int((self.total_samples - padded) * STT_RATE / ENGINE_RATE))
        pre = np.concatenate(self._recent16) if self._recent16 else np.zeros(0, np.int16)
        pre_len = int((self.total_samples - padded) * STT_RATE / ENGINE_RATE)
        if pre_len > 0:
            self._stt.feed(pre[-pre_len:])
        self._speech_fed = self._stt.fed
        self._events.on_speech_started(int(padded * 1000 / ENGINE_RATE))

    def _drop_before(self, sample: int) -> None:
        while self._chunks and self._start_sample + len(self._chunks[0]) <= sample:
            dropped = self._chunks.popleft()
            self._chunks_samples -= len(dropped)
            self._start_sample += len(dropped)
        if self._chunks and self._start_sample < sample:
            cut = sample - self._start_sample
            self._chunks[0] = self._chunks[0][cut:]
            self._chunks_samples -= cut
            self._start_sample = sample

    def _note_partial(self, text: str, source: SttWorker) -> None:
        stt = self._stt
        if source is not stt:
            # A late partial of an earlier turn's recogniser (still decoding, e.g. on a loaded machine): it is not
            # evidence about this turn, nor words of this turn's item.
            return
        self._partial = text
        if self.speaking and self._silence_run and stt.covered >= self._speech_fed:
            self.words_fresh = True  # decoded from everything said up to this pause
        self._on_partial(text)
        if self.words_fresh and self.speaking and self._silence_run:
            self.endpointer.on_partial()

    def _end_by_model(self) -> None:
        """The end-of-turn model decided between two VAD frames that the pause ends the turn."""
        if self.speaking and self._silence_run:
            self._end_speech()

    def _end_speech(self) -> None:
        self.endpointer.end_turn()
        self.speaking = False
        self._silence_run = 0
        self.speech_stopped_at = time.monotonic()
        self._events.on_speech_stopped(int(self.total_samples * 1000 / ENGINE_RATE))

    # ----------------------------------------------------------------------------- commit
    def take(self) -> Segment:
        """Hand the buffered audio (and its recogniser) to a new item; the buffer starts empty."""
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        stt = self._stt
        self._stt = None
        self._start_sample += self._chunks_samples
        self._chunks.clear()
        self._chunks_samples = 0
        self.speaking = False
        return Segment(pcm=pcm, stt=stt)

    def clear(self) -> None:
        if self._stt is not None:
            self._stt.abort()
            self._stt = None
        self._start_sample += self._chunks_samples
        self._chunks.clear()
        self._chunks_samples = 0
        self.speaking = False
        self._speech_run = self._silence_run = 0

    def set_turn_detection(self, td: TurnDetection | None) -> None:
        if (td is None) != (self.turn_detection is None):
            self.clear()
        self.turn_detection = td
        if td is not None and td.type == "semantic_vad":
            self.endpointer.set_eagerness(td.eagerness)

    def close(self) -> None:
        self.endpointer.close()
        if self._stt is not None:
            self._stt.abort()
            self._stt = None
