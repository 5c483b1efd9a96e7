"""``semantic_vad``: when a pause inside a turn is the end of it.

Silence detection (the server VAD's frames) only *proposes* an end of turn. After ``candidate_ms`` of silence the
:class:`Endpointer` asks an end-of-turn model (Smart Turn v3.2 by default, ``speech/eot_smartturn.py``) how likely
the turn is complete from the sound of it, and weighs the words heard so far (a turn that ends on "of", "and",
"the", "um" is not finished, whatever its melody). Then:

* probability >= the eagerness' ``threshold``: the turn ends now (a complete question is answered sooner than a
  fixed silence window would allow);
* below it: the turn ends only after a longer silence, the lower the probability the longer, up to the hard
  maximum ``max_ms`` of the eagerness; the model is asked again every ``recheck_ms`` while the silence lasts.

The recogniser's doubt about the last word counts too: Whisper makes up the end of a sentence cut by a pause
("What is the capital of" → "What is the capital done"), so a last word the decoder found improbable, or that is
aligned to the very end of the speech, is not trusted (:func:`doubtful`) and the turn waits as for a trailing
"of", a little less.

With a recogniser that reports the words of every pause, the model waits for them (at most
:data:`WORDS_FIRST_MS`), and words heard in full end the turn without it (:func:`settled`).

Speech during the wait simply continues the turn. The model runs in a worker thread (~50 ms); a result that
arrives after the user spoke again is ignored.

The eagerness table is the one place to tune (``voicecall bench turns`` measures every row; docs/turns.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voicecall.speech.base import PCM16, EOTModel, TailWord

log = logging.getLogger(__name__)
RATE = 16000


@dataclass(frozen=True, slots=True)
class Eagerness:
    candidate_ms: int
    """Silence after which the model is first asked."""
    threshold: float
    """End now when P(complete), after transcript evidence, is at least this."""
    max_ms: int
    """Hard maximum: the turn ends after this much silence whatever the model says."""
    recheck_ms: int = 400
    """While waiting, ask the model again after this much more silence."""
    name: str = ""

    def wait_ms(self, p: float) -> float:
        """Silence to wait for when P(complete) = ``p`` is below the threshold: from ``candidate_ms`` (p just below)
        to ``max_ms`` (p = 0); a square root, so that a clearly incomplete turn waits nearly the maximum."""
        short = min(1.0, max(0.0, 1.0 - p / self.threshold))
        return self.candidate_ms + (self.max_ms - self.candidate_ms) * short ** 0.5


EAGERNESS: dict[str, Eagerness] = {
    "high": Eagerness(candidate_ms=200, threshold=0.3, max_ms=1000, name="high"),
    "medium": Eagerness(candidate_ms=200, threshold=0.5, max_ms=2000, name="auto"),
    "low": Eagerness(candidate_ms=300, threshold=0.7, max_ms=3500, name="low"),
}
EAGERNESS["auto"] = EAGERNESS["medium"]

# Words a complete English turn (almost) never ends on: articles, prepositions, conjunctions, possessives,
# auxiliaries and hesitations. Evidence, not a rule: "what are you thinking of" is complete.
INCOMPLETE_TAIL = frozenset(["a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "from", "with", "about", "into", "onto", "over", "under", "between", "through", "during", "without", "within", "and", "or", "but", "nor", "so", "because", "if", "when", "while", "although", "though", "than", "that", "which", "who", "whose", "where", "whom", "my", "your", "his", "her", "its", "our", "their", "this", "these", "those", "some", "any", "every", "each", "no", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "have", "has", "had", "will", "would", "can", "could", "should", "shall", "may", "might", "must", "i", "you", "he", "she", "we", "they", "it's", "i'm", "you're", "we're", "they're", "let's", "um", "uh", "er", "erm", "hmm", "like"])
TAIL_FACTOR = 0.2
"""P(complete) is multiplied by this when the transcript so far ends on one of :data:`INCOMPLETE_TAIL`."""
DOUBT_FACTOR = 0.3
"""P(complete) is multiplied by this when the recogniser doubts the last word (:func:`doubtful`): a made-up word
hides the trailing "of" / "the" that was really said. Less than :data:`TAIL_FACTOR`'s hold: some complete turns
are doubted too (a short last word like "earth", a misheard one); with ``auto`` the wait is ~1.3 s, not ~1.6 s."""
DOUBT_PROBABILITY = 0.4
"""A last word the decoder gave less than this probability is doubted ("What is the weather liking" 0.17-0.35,
"… how to get dinner" 0.14). Correct last words of complete questions mostly score 0.9+, but some 0.45-0.6
("… London today" 0.45): at 0.5 they were doubted and waited ~1.3 s."""
DOUBT_LEAD_MS = 180
"""A last word aligned to start less than this before the end of speech is doubted: a word really said at the
end of a turn lasts longer (sentence-final lengthening: 270-480 ms for most last words of the bench's espeak and
Piper questions); one squeezed into the tail of the word really said ("… isn't it", "… I'm out", "… for it",
"… a notebook come out") starts at its very end (110-175 ms) or inside the pause. Short last words said in full
("… from the earth", 70-110 ms) are doubted too: they wait ~1.3 s."""
NO_MODEL_PRIOR = 0.6
"""P(complete) assumed without a model verdict (type ``fixed`` by default, a failing model, or one that is late):
transcript evidence and silence decide."""
MODEL_BUDGET_MS = 300
"""A model verdict still missing this long after it was asked for (an overloaded machine) does not hold the turn:
the pause is judged by its words and :data:`NO_MODEL_PRIOR` meanwhile, and again when the verdict comes."""
STRONG_PROBABILITY = 0.7
STRONG_LEAD_MS = 250
"""The pause's words **settle** the turn without the model's verdict (:func:`settled`) when their last word is no
continuation word, the decoder gave it at least :data:`STRONG_PROBABILITY` and it is aligned to start at least
:data:`STRONG_LEAD_MS` before the end of speech (said in full, with sentence-final lengthening): the turn then ends
on them as on a late verdict (:data:`NO_MODEL_PRIOR`) once ``candidate_ms`` of silence have passed. On 2 cores the
verdict often comes 60-160 ms after the words, or not within its budget. Of the bench's cut turns' first pauses
only "What is the capital" (for "… capital of", a complete question to any reader) has such words."""
WORDS_FIRST_MS = 200
"""With a recogniser that reports the words of every pause (a re-decoding one, ``words_due``), the model is asked
when those words are in (and do not settle the turn) rather than at ``candidate_ms`` while they are being decoded,
at most this much later: on 2 cores the model's call slows the pause's decode."""
WORDS_GRACE_MS = 900
"""A "complete" verdict before any partial transcript came during the pause waits this much longer than
``candidate_ms`` for the pause's words (a re-decoding recogniser delivers the last word a little after the pause
begins; a recogniser that has nothing new to say sends nothing)."""


def last_word(text: str) -> str:
    words = re.findall(r"[a-z']+", text.lower())
    return words[-1] if words else ""


def doubtful(tail: TailWord | None, transcript: str) -> bool:
    """Whether the recogniser's last word was probably not said (see :data:`DOUBT_PROBABILITY`,
    :data:`DOUBT_LEAD_MS`). Without evidence (another recogniser, a partial that is not a pause's decode), no."""
    if tail is None or tail.word != last_word(transcript):
        return False
    return tail.probability < DOUBT_PROBABILITY or tail.lead_ms < DOUBT_LEAD_MS


def settled(tail: TailWord | None, transcript: str) -> bool:
    """Whether the words alone say the turn is complete: a last word heard with confidence, said in full, that no
    complete turn avoids ending on (see :data:`STRONG_PROBABILITY`)."""
    word = last_word(transcript)
    return (tail is not None and tail.word == word and word not in INCOMPLETE_TAIL
            and tail.probability >= STRONG_PROBABILITY and tail.lead_ms >= STRONG_LEAD_MS)


def with_evidence(p: float, transcript: str, tail: TailWord | None = None) -> float:
    """Combine the model's P(complete) with what the words say."""
    if last_word(transcript) in INCOMPLETE_TAIL:
        return p * TAIL_FACTOR
    return p * DOUBT_FACTOR if doubtful(tail, transcript) else p


class Endpointer:
    """The end-of-turn decision of one session's ``semantic_vad`` (see the module doc).

    The input buffer feeds it every 16 kHz chunk (:meth:`push`), says when a turn starts (:meth:`start_turn`) and
    when speech resumes inside it (:meth:`on_speech`), and asks on each silent VAD frame whether the turn ends
    (:meth:`on_silence`). When a model result decides to end the turn between frames, ``on_end`` is called.
    """

    def __init__(self, model: EOTModel | None, on_end: Callable[[], None], transcript: Callable[[], str],
                 tail: Callable[[], TailWord | None] = lambda: None,
                 words_due: Callable[[], bool] = lambda: False) -> None:
        self.model = model
        self._words_due = words_due  # the recogniser reports the words of every pause (see WORDS_FIRST_MS)
        self._on_end = on_end
        self._transcript = transcript  # the latest partial transcript of the turn
        self._tail = tail  # what the recogniser knows of its last word (None: nothing)
        self.eagerness = EAGERNESS["auto"]
        self._ring: deque[PCM16] = deque()
        self._ring_len = 0
        self._pushed = 0  # 16 kHz samples pushed since the session began (the audio clock of the records)
        self._turn_len = 0  # 16 kHz samples of the current turn (with its padding) in the ring's tail
        self._pause = 0  # generation: bumps whenever speech resumes or a turn starts / ends
        self._required: float = float("inf")  # silence (ms) after which the turn ends
        self._next_check: float = 0.0
        self._task: asyncio.Task[None] | None = None
        self._silence_ms = 0.0
        self._p_model: float | None = None  # the model's verdict on the current pause
        self._fresh = False  # a partial transcript arrived during this pause (it covers the last word)
        self._asked_at = 0.0  # silence (ms) when the model was last asked
        self._verdict_at: float | None = None  # silence (ms) when the model's verdict on this pause came
        self._words_at: float | None = None  # silence (ms) when the pause's words came
        self.last: dict[str, float | str] = {}
        """The last decision (for metrics and logs): p_model, p, tail word, wait_ms."""

    def set_eagerness(self, name: str | None) -> None:
        self.eagerness = EAGERNESS.get(name or "auto", EAGERNESS["auto"])

    def push(self, pcm16k: PCM16) -> None:
        self._pushed += len(pcm16k)
        self._ring.append(pcm16k)
        self._ring_len += len(pcm16k)
        self._turn_len += len(pcm16k)
        limit = RATE * 8
        while self._ring and self._ring_len - len(self._ring[0]) >= limit:
            self._ring_len -= len(self._ring.popleft())

    def start_turn(self, samples16k: int) -> None:
        """A turn began; the last ``samples16k`` pushed samples belong to it (prefix padding included)."""
        self._turn_len = samples16k + RATE // 5  # 200 ms more of lead-in, as pipecat gives the model
        self.on_speech()

    def on_speech(self) -> None:
        """Speech (again): any pending decision is void."""
        self._pause += 1
        self._required = float("inf")
        self._next_check = self.eagerness.candidate_ms
        self._silence_ms = 0.0
        self._p_model = None
        self._fresh = False
        self._verdict_at = self._words_at = None

    def end_turn(self) -> None:
        self._pause += 1
        self._required = float("inf")

    def on_partial(self) -> None:
        """A newer partial transcript: weigh the model's verdict on this pause again with its words (a recogniser
        that re-decodes at a pause often delivers the last word after the model has answered)."""
        self._fresh = True
        if self._words_at is None:
            self._words_at = self._silence_ms
        if self._words_settle(self._silence_ms):
            return
        if self.model is not None and self._ask_due(self._silence_ms):  # the model's call waited for these words
            self._ask(self._silence_ms)
        if self._required != float("inf"):  # something was decided for this pause: decide again with the words
            verdict = self._p_model is not None
            self._decide(self._p_model if self._p_model is not None else NO_MODEL_PRIOR, self._silence_ms, verdict)
            if self._due("words"):
                self.end_turn()
                self._on_end()

    def on_silence(self, silence_ms: float) -> bool:
        """One more silent frame inside the turn; True when the turn ends now."""
        self._silence_ms = silence_ms
        if silence_ms >= self.eagerness.max_ms or silence_ms >= self._required:
            self._ended("maximum" if silence_ms < self._required else "silence")
            return True
        if self._words_settle(silence_ms, on_frame=True):
            return True
        if (self._p_model is None and self._task is not None and not self._task.done()
                and silence_ms >= self._asked_at + MODEL_BUDGET_MS):
            self._decide(NO_MODEL_PRIOR, silence_ms, verdict=False)
            return self._due("model late")
        if self._ask_due(silence_ms):
            if self.model is None:
                self._next_check = silence_ms + self.eagerness.recheck_ms
                self._decide(NO_MODEL_PRIOR, silence_ms)
                return self._due("silence")
            if (self._p_model is None and not self._fresh and self._words_due()
                    and silence_ms < self._next_check + WORDS_FIRST_MS):
                return False  # the pause's words are being decoded: they come first (on_partial asks then)
            self._ask(silence_ms)
        return False

    def _ask_due(self, silence_ms: float) -> bool:
        return silence_ms >= self._next_check and (self._task is None or self._task.done())

    def _ask(self, silence_ms: float) -> None:
        self._next_check = silence_ms + self.eagerness.recheck_ms
        assert self.model is not None
        audio = self._turn_audio()
        self._asked_at = silence_ms
        self._task = asyncio.get_running_loop().create_task(self._evaluate(audio))

    def _words_settle(self, silence_ms: float, on_frame: bool = False) -> bool:
        """End the turn on the pause's words without the model's verdict when they settle it (:func:`settled`),
        once ``candidate_ms`` of silence have passed. From a frame the caller ends the turn (True); from a partial
        this calls ``on_end``."""
        e = self.eagerness
        if (self._p_model is not None or not self._fresh or self.model is None or silence_ms < e.candidate_ms
                or NO_MODEL_PRIOR < e.threshold):
            return False
        transcript = self._transcript()
        if not transcript or not settled(self._tail(), transcript):
            return False
        self._decide(NO_MODEL_PRIOR, silence_ms, verdict=False)
        self._ended("words settled")
        if not on_frame:
            self.end_turn()
            self._on_end()
        return True

    def _turn_audio(self) -> PCM16:
        pcm = np.concatenate(self._ring) if len(self._ring) > 1 else (self._ring[0] if self._ring else
                                                                      np.zeros(0, np.int16))
        return pcm[-min(self._turn_len, len(pcm)):]

    async def _evaluate(self, audio: PCM16) -> None:
        pause = self._pause
        model = self.model
        assert model is not None
        try:
            p = await asyncio.to_thread(model.probability, audio)
        except Exception:  # a failing model must not stall the turn: fall back to silence
            log.exception("end-of-turn model failed")
            p = NO_MODEL_PRIOR
        if pause != self._pause:
            return  # the user spoke again meanwhile
        if self._verdict_at is None:
            self._verdict_at = self._silence_ms
        self._decide(p, self._silence_ms)
        if self._due("model"):
            self.end_turn()
            self._on_end()

    def _decide(self, p_model: float, at_ms: float, verdict: bool = True) -> None:
        e = self.eagerness
        if verdict:
            self._p_model = p_model
        transcript = self._transcript()
        tail = self._tail() if transcript else None
        p = with_evidence(p_model, transcript, tail)
        wait = 0.0 if p >= e.threshold else e.wait_ms(p)
        if not wait and not self._fresh and self.model is not None:
            # Complete by its sound, but the words of the pause are not in yet (a re-decoding recogniser answers
            # a little later): wait for them (on_partial decides again) or one more recheck period.
            wait = e.candidate_ms + WORDS_GRACE_MS
        self._required = max(at_ms, wait) if wait else at_ms
        self.last = {"p_model": round(p_model, 3), "p": round(p, 3), "tail": last_word(transcript),
                     "wait_ms": round(self._required), "words": transcript,
                     "doubt": f"{tail.probability:.2f}/{tail.lead_ms:.0f}ms" + (" doubtful" if doubtful(
                         tail, transcript) else "") if tail is not None else ""}
        log.debug("end of turn? %s", self.last)

    def _due(self, by: str) -> bool:
        """Whether the silence so far reaches what the last decision requires; if so, record ``by`` as the cause."""
        if self._silence_ms < self._required:
            return False
        self._ended(by)
        return True

    def _ended(self, by: str) -> None:
        """Log how this pause became the end of the turn: what decided, and when (ms of silence) the model's
        verdict and the pause's words had come. ``voicecall bench turns`` collects these records."""
        info = {**self.last, "by": by, "at_ms": round(self._silence_ms), "verdict_at_ms": self._verdict_at,
                "words_at_ms": self._words_at, "eagerness": self.eagerness.name,
                "audio_ms": round(self._pushed * 1000 / RATE)}
        log.debug("end of turn: %s", info, extra={"end_of_turn": info})

    def close(self) -> None:
        self._pause += 1
        if self._task is not None:
            self._task.cancel()
