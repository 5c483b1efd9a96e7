"""Streaming on top of a whole-utterance recogniser: re-decode the growing utterance on a bounded schedule.

Whisper and Moonshine are not streaming models; :class:`RedecodeStream` makes them look like one
(:class:`~voicecall.speech.base.STTStream`) at a cost that fits two cores:

* **Partials.** The buffered utterance is decoded again after every ``partial_interval`` seconds of new audio
  (unless all of it was quiet), stretched to 3x the last decode's time when the machine is slow (so one session
  never spends more than about a third of a core on partials), and **at once when the audio goes quiet after
  speech** (80 ms more than 25 dB under the utterance's peak level, or near its noise floor): the partial then
  holds every word said so far, which is what the engine's speculative answer is built from at a 150 ms pause. A pause's decode is reported
  even when its text did not change (the end-of-turn decision waits for the words of the pause).
* **Final.** Partials on the schedule are cheap decodes (``final=False``: greedy for Whisper); the decode at a pause
  is a final-quality one (``final=True``: Whisper's beam search), and ``finish()`` reuses it when only quiet audio
  came after it, so the final transcript is usually ready the moment the turn ends; otherwise it runs one more
  final-quality decode of the whole utterance (since the last cut).
* **Bounded work.** An utterance longer than the model's ``window`` is cut at the quietest 200 ms of the window's
  second half; the text before the cut is kept (and given to the model as context for what follows), and later
  decodes only see the audio after the cut.
* A partial has no sentence-final mark (its last word may still grow: "of?" then "of France?").
* Audio that never rises above -60 dBFS is not decoded at all (an empty transcript).
* **Was the last word heard?** With a recogniser that can align its words (``transcribe_words``: Whisper), every
  decode also tells how sure it is of its last word (:meth:`RedecodeStream.tail_word`: the decoder's probability,
  and how long before the end of speech, by the levels, the word starts) and of its least probable word.
  ``semantic_vad`` uses the first (Whisper makes up the end of a sentence cut by a pause), false-interruption
  handling the second (Whisper makes words of a hum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from voicecall.audio import frame_dbfs

from .base import PCM16, TailWord

SAMPLE_RATE = 16000
HOP = 160  # 10 ms level frames
FRAME_RATE = SAMPLE_RATE // HOP


@dataclass(frozen=True, slots=True)
class Word:
    """One decoded word with its aligned start (seconds from the start of the decoded audio) and the decoder's
    probability of it (the lowest of its tokens)."""

    text: str
    start: float
    probability: float


class Redecoder(Protocol):
    """A whole-utterance recogniser: ``transcribe`` returns (text, seconds spent)."""

    window: float
    partial_interval: float

    def transcribe(self, pcm: PCM16, language: str | None = None, context: str = "",
                   final: bool = True) -> tuple[str, float]: ...


class RedecodeStream:
    """One utterance: buffers its audio and re-decodes it on a bounded schedule (see the module doc)."""

    sample_rate = SAMPLE_RATE
    #: The decode at a pause is final-quality and :meth:`finish` reuses it when only quiet audio followed, so the
    #: engine may answer the pause's words without waiting for the final pass (engine.turns.InputBuffer.words_final).
    pause_decode_is_final = True
    QUIET_FRAMES = 8  # 80 ms below the quiet level after speech = a pause worth decoding at once (docs/turns.md)
    QUIET_BELOW_PEAK_DB = 25.0

    def __init__(self, model: Redecoder, language: str, prompt: str) -> None:
        self._m = model
        self._lang = language
        self._prompt = prompt
        self._chunks: list[PCM16] = []
        self._len = 0  # samples buffered since the last cut
        self._committed = ""  # text of the audio before the last cut
        self._decoded_len = -1  # buffer length at the last decode (-1: none since the last cut)
        self._text = ""  # last decode of the buffer
        self._partial = ""
        self._last_cost = 0.0
        self._levels: list[npt.NDArray[np.float64]] = []  # 10 ms levels of the buffer
        self._tail = np.zeros(0, np.int16)  # < 10 ms not yet levelled
        self._peak_db = -120.0
        self._quiet_run = 0
        self._loud_since_decode = False  # loud audio since the last decode: a scheduled partial has news
        self._loud_since_final = False  # loud audio since the last final-quality decode
        self._pause_told = False  # this pause's words were reported
        self._open = True
        self.heard = ""
        """The last reported partial as decoded, with the final mark it leaves out ("... of France?"): what the
        final transcript reads when nothing more is said (the engine's speculative answer answers this)."""
        self.tail_evidence = callable(getattr(model, "transcribe_words", None))
        self._last_word: TailWord | None = None  # the last word of the latest decode, with the evidence on it
        self._least: float | None = None  # the lowest word probability of that decode

    # ------------------------------------------------------------------------------- levels
    def _track(self, pcm: PCM16) -> None:
        x = np.concatenate([self._tail, pcm]) if self._tail.size else pcm
        n = x.shape[0] // HOP * HOP
        db = frame_dbfs(x[:n], HOP)
        self._tail = x[n:].copy()
        if db.size == 0:
            return
        self._levels.append(db)
        self._peak_db = max(self._peak_db, float(db.max()))
        # Quiet: far under the peak, or close to the noise floor (its 10th percentile) when the room is noisy.
        floor = float(np.percentile(self._all_levels(), 10))
        quiet_level = max(self._peak_db - self.QUIET_BELOW_PEAK_DB, min(floor + 6.0, self._peak_db - 10.0))
        for v in db:  # tiny loop: one value per 10 ms
            if v < quiet_level:
                self._quiet_run += 1
            else:
                self._quiet_run = 0
                self._loud_since_decode = self._loud_since_final = True
                self._pause_told = False

    def _all_levels(self) -> npt.NDArray[np.float64]:
        if len(self._levels) > 1:
            self._levels = [np.concatenate(self._levels)]
        return self._levels[0] if self._levels else np.zeros(0)

    def _audio(self) -> PCM16:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros(0, np.int16)

    # ------------------------------------------------------------------------------- decoding
    def _context(self) -> str:
        return (self._prompt + " " + self._committed).strip()

    def _decode(self, final: bool) -> None:
        audio = self._audio()
        self._last_word = None
        self._least = None
        if self.tail_evidence:  # the alignment costs ~5 % more than the decode (its encoder output is reused)
            self._text, self._last_cost, words = self._m.transcribe_words(  # type: ignore[attr-defined]
                audio, self._lang, self._context(), final)
            if words:
                speech_end = (audio.shape[0] - self._quiet_run * HOP) / SAMPLE_RATE
                last = words[-1]
                self._least = min(w.probability for w in words)
                self._last_word = TailWord(last.text, last.probability, round((speech_end - last.start) * 1000))
        else:
            self._text, self._last_cost = self._m.transcribe(audio, self._lang, self._context(), final)
        self._decoded_len = audio.shape[0]
        self._loud_since_decode = False
        if final:
            self._loud_since_final = False

    def _cut(self) -> None:
        """Keep the buffer within the window: decode up to the quietest 200 ms of its second half, commit that text."""
        audio = self._audio()
        win = int(self._m.window * SAMPLE_RATE)
        levels = self._all_levels()
        lo, hi = int(self._m.window * FRAME_RATE) // 2, min(levels.shape[0], int(self._m.window * FRAME_RATE) - 30)
        if hi - lo > 20:
            smooth = np.convolve(levels[lo:hi], np.ones(20) / 20, mode="valid")
            cut = (lo + int(np.argmin(smooth)) + 10) * HOP
        else:
            cut = win - 30 * HOP
        head, rest = audio[:cut], audio[cut:]
        text, self._last_cost = self._m.transcribe(head, self._lang, self._context(), True)
        self._committed = (self._committed + " " + text).strip()
        self._chunks = [rest.copy()]
        self._len = rest.shape[0]
        self._levels = [levels[cut // HOP:]]
        self._decoded_len = -1
        self._text = ""
        self._last_word = None
        self._least = None

    def _full_text(self) -> str:
        return (self._committed + " " + self._text).strip()

    def feed(self, pcm: PCM16) -> str | None:
        """Buffer audio; re-decode when the schedule says so; return the partial transcript when it changed, and
        after every pause's decode (changed or not)."""
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        if pcm.shape[0] == 0:
            return None
        self._chunks.append(pcm)
        self._len += pcm.shape[0]
        self._track(pcm)
        if self._len > (self._m.window - 0.3) * SAMPLE_RATE:
            self._cut()
        new = self._len - max(self._decoded_len, 0)
        interval = max(self._m.partial_interval, 3.0 * self._last_cost) * SAMPLE_RATE
        pause = self._quiet_run >= self.QUIET_FRAMES and not self._pause_told
        if self._len < 0.3 * SAMPLE_RATE or self._peak_db < -60:
            return None
        if pause and self._loud_since_final:
            self._decode(final=True)  # the words of the pause: the final transcript unless speech follows
        elif new >= interval and self._loud_since_decode:  # quiet audio alone adds nothing to hear
            self._decode(final=False)
        elif not (pause and self._decoded_len >= 0):
            return None
        # A partial's last word may still grow ("of?" -> "of France?"): no sentence-final mark until the end.
        text = self._full_text().rstrip(".?!…")
        if text != self._partial or pause:
            # Once per pause the words are reported even when unchanged (the engine's end-of-turn decision waits
            # for the pause's words and must not wait for a change that will not come).
            self._pause_told = pause or self._pause_told
            self._partial = text
            self.heard = self._full_text()
            return text
        return None

    @property
    def pause_reported(self) -> bool:
        """The latest pause's words were reported and nothing loud came since: they are all that was said so far,
        however long a VAD goes on calling the fading end of the speech "speech"."""
        return self._pause_told

    def tail_word(self) -> TailWord | None:
        """What the recogniser knows of the last word of the latest decode, when it aligns its words
        (``tail_evidence``); else ``None``."""
        return self._last_word

    def least_probability(self) -> float | None:
        """The lowest word probability of the latest decode, when the recogniser tells (``tail_evidence``)."""
        return self._least

    def finish(self) -> str:
        """The final transcript: the last final-quality decode if only quiet audio came after it, else one more."""
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        self._open = False
        if self._len >= 0.1 * SAMPLE_RATE and self._peak_db >= -60 and (
                self._decoded_len < 0 or self._loud_since_final):
            self._decode(final=True)
        text = self._full_text()
        self._chunks, self._levels = [], []
        return text

    def abort(self) -> None:
        self._open = False
        self._chunks, self._levels = [], []
