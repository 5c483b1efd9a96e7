"""A trivial energy-threshold VAD, for tests and benchmarks that must run without any model.

It is NOT a real voice detector: any sound louder than ``thresholdDbfs`` counts as speech (music, a door, a
cough), and it does not adapt to the room's noise level. The probability ramps linearly from 0 at
``thresholdDbfs - 6 dB`` to 1 at ``thresholdDbfs + 6 dB``, so the engine's 0.5 threshold sits on
``thresholdDbfs``. Use ``silero`` (or ``webrtc``) for real audio.
"""

from __future__ import annotations

import math

import numpy as np

from .base import PCM16

SAMPLE_RATE = 16000


class EnergyVADStream:
    """Stateless per-frame RMS level test."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, frame_samples: int, threshold_dbfs: float) -> None:
        self.frame_samples = frame_samples
        self._threshold = threshold_dbfs

    def probability(self, frame: PCM16) -> float:
        if frame.shape[0] == 0:
            return 0.0
        x = frame.astype(np.float32)
        rms = math.sqrt(float(np.dot(x, x)) / frame.shape[0]) / 32768.0
        level = 20.0 * math.log10(max(rms, 1e-7))
        return min(1.0, max(0.0, (level - self._threshold + 6.0) / 12.0))

    def reset(self) -> None:
        return None


class EnergyVAD:
    """Energy-threshold VAD (tests/benchmarks only). Options: ``thresholdDbfs`` (default -40),
    ``frameSamples`` (default 512, i.e. 32 ms at 16 kHz)."""

    name = "energy"

    def __init__(self, threshold_dbfs: float = -40.0, frame_samples: int = 512) -> None:
        if frame_samples < 80:
            raise ValueError(f"energy VAD frameSamples must be at least 80 (got {frame_samples})")
        self.threshold_dbfs = float(threshold_dbfs)
        self.frame_samples = int(frame_samples)

    def new_stream(self) -> EnergyVADStream:
        return EnergyVADStream(self.frame_samples, self.threshold_dbfs)
