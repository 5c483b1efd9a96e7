"""False interruptions: speech while the assistant talks is not always a barge-in.

A cough, a door, "mm-hm", "yeah", "okay" while the assistant speaks are not requests to stop. When speech starts
while answer audio is audible, the session *pauses* the answer at once (WebRTC: the media track sends silence,
so a real barge-in is as fast as before) and holds back ``input_audio_buffer.speech_started`` (stock clients stop
their own playback when they see it). Then the words decide (:func:`classify`):

* a real interruption — words that are not a backchannel, or speech longer than ``max_backchannel_ms`` — is
  confirmed: ``speech_started`` goes out with the original ``audio_start_ms``, the answer is cancelled and
  truncated where it was paused (what the user heard), and the turn goes on as any other;
* no words (noise) or only backchannel words, once the speech ended: the answer resumes where it paused, and the
  sound is dropped from the input buffer — nothing was said to the assistant, so the conversation gets no user
  item and the assistant's message keeps all its audio, since the user heard all of it.

On a WebSocket the client owns playback: the server cannot pause what it already sent, so there the feature
only keeps stock clients playing through a backchannel (by not telling them to stop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BACKCHANNEL_WORDS = frozenset(["mm", "mmm", "mhm", "hm", "hmm", "mm-hm", "mm-hmm", "uh-huh", "uhhuh", "uh", "huh", "um", "ah", "oh", "aha", "ooh", "wow", "yeah", "yep", "yup", "yes", "ya", "yah", "okay", "ok", "right", "sure", "alright", "cool", "nice", "great", "good", "fine", "true", "exactly", "indeed", "totally", "i", "see", "got", "it", "gotcha", "really", "interesting", "cool", "sounds"])
"""Words of a backchannel ("mm-hm", "yeah okay", "I see", "got it", "right right"). "no", "wait", "stop",
"but" and every other word make an interruption."""
MAX_BACKCHANNEL_WORDS = 4
INTERRUPT_WORDS = frozenset(["stop", "wait", "no", "nope", "hold", "hang", "hey", "excuse", "sorry", "pardon", "but", "actually", "listen", "what", "why", "how", "who", "where", "when", "which", "cancel", "enough", "quiet", "shut", "please"])
"""Words that make even a short sound an interruption ("Stop!", "Wait", "No, ...")."""
SHORT_MS = 600
"""Speech shorter than this with at most two words and no :data:`INTERRUPT_WORDS` counts as a backchannel: a
recogniser often makes "words" of a grunt or a cough ("mm-hm" heard as "MMA Chen")."""
EARLY_MS = 800
"""While the speech goes on, two words that are not a backchannel confirm an interruption only after this much
speech (a hum of ~0.7 s made into words must end first, so that :func:`classify` can weigh the recogniser's
confidence); :data:`INTERRUPT_WORDS` confirm it at once, and any speech longer than ``local.maxBackchannelMs``
does."""
UNSURE_PROBABILITY = 0.3
"""A short sound (it ended before ``local.maxBackchannelMs``) of at most :data:`UNSURE_MAX_WORDS` words, none of
:data:`INTERRUPT_WORDS`, whose least probable word the recogniser gave less than this, is a sound, not words:
Whisper makes sentences of a hum ("Mm-hm" → "And then they come", its "And" at 0.08–0.29) but hears short requests
it can make out with every word above ~0.4."""
UNSURE_MAX_WORDS = 4


_VOCALIZATION = re.compile(r"(?:[mh]*m[mh]*|u+h+|a+h+|o+h+|e+r+m*|u+m+)(?:-(?:[mh]*m[mh]*|u+h+|a+h+))*")
"""A hum or filler spelled any way a recogniser spells it: "mm", "MMMM", "mhm", "hmmm", "mm-hmm", "uhh", "ahh",
"erm". Not a word of a request, whatever its length."""


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*", text.lower())


def _is_backchannel_word(word: str) -> bool:
    return word in BACKCHANNEL_WORDS or _VOCALIZATION.fullmatch(word) is not None


def classify(text: str, spoken_ms: float = float("inf"), least_probability: float | None = None) -> str:
    """``"none"`` (no words: noise, or words the recogniser is unsure of, see :data:`UNSURE_PROBABILITY`),
    ``"backchannel"`` or ``"words"`` (a real interruption). ``least_probability``: the recogniser's probability of
    the least probable word of ``text``, when it tells."""
    words = words_of(text)
    if not words:
        return "none"
    # "yeah yeah yeah" is one backchannel said three times (and a recogniser's repetition on a short sound)
    if len(set(words)) <= MAX_BACKCHANNEL_WORDS and all(_is_backchannel_word(w) for w in words):
        return "backchannel"
    if any(w in INTERRUPT_WORDS for w in words):
        return "words"
    if spoken_ms < SHORT_MS and len(words) <= 2:
        return "backchannel"
    if least_probability is not None and least_probability < UNSURE_PROBABILITY and len(words) <= UNSURE_MAX_WORDS:
        return "none"
    return "words"


def is_clear_interruption(partial: str, spoken_ms: float) -> bool:
    """Early decision while the user still speaks: an interrupting word, or two other words that are not a
    backchannel over at least :data:`EARLY_MS` of speech."""
    words = words_of(partial)
    if any(w in INTERRUPT_WORDS for w in words):
        return True
    return spoken_ms >= EARLY_MS and sum(1 for w in words if not _is_backchannel_word(w)) >= 2


@dataclass(slots=True)
class Tentative:
    """Speech that started while the answer was audible, not yet known to be an interruption."""

    item_id: str
    audio_start_ms: int
    started_at: float  # time.monotonic()
    partial: str = ""
