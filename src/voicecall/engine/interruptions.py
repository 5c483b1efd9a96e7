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


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*", text.lower())


def classify(text: str) -> str:
    """``"none"`` (no words: noise), ``"backchannel"`` or ``"words"`` (a real interruption)."""
    words = words_of(text)
    if not words:
        return "none"
    if len(words) <= MAX_BACKCHANNEL_WORDS and all(w in BACKCHANNEL_WORDS for w in words):
        return "backchannel"
    return "words"


def is_clear_interruption(partial: str) -> bool:
    """Early decision while the user still speaks: two words that are not a backchannel are enough."""
    return sum(1 for w in words_of(partial) if w not in BACKCHANNEL_WORDS) >= 2


@dataclass(slots=True)
class Tentative:
    """Speech that started while the answer was audible, not yet known to be an interruption."""

    item_id: str
    audio_start_ms: int
    started_at: float  # time.monotonic()
    partial: str = ""
