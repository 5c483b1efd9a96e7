"""A constant end-of-turn probability: ``semantic_vad`` without a model (silence and the words decide).

``eot: {type: fixed, probability: 0.6}``. Useful where the Smart Turn model cannot be installed, and in tests that
are about something other than the model (a fake, like ``vad_energy`` or ``tts_tone``).
"""

from __future__ import annotations

from .base import PCM16


class FixedEOT:
    name = "fixed"
    sample_rate = 16000

    def __init__(self, probability: float = 0.6) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be between 0 and 1, not {probability}")
        self.p = float(probability)

    def probability(self, audio16k: PCM16) -> float:
        return self.p
