"""WebRTC VAD (the GMM detector from WebRTC, as shipped inside pocketsphinx) — the zero-cost fallback.

``pocketsphinx.Vad`` is the same algorithm as the ``webrtcvad`` package and is already installed with the STT
stage, so it needs no extra download. It costs about 2.5 µs per 30 ms frame, but it is a binary decision (the
"probability" is 0.0 or 1.0) and modes 0–1 fail under stationary noise: keep ``mode`` at 3 (the default).
"""

from __future__ import annotations

import numpy as np
from pocketsphinx import Vad

from .base import PCM16

SAMPLE_RATE = 16000
FRAME_SAMPLES = 480  # 30 ms


class WebRTCVADStream:
    """One ``pocketsphinx.Vad`` per session (it keeps a little state between frames)."""

    sample_rate: int = SAMPLE_RATE
    frame_samples: int = FRAME_SAMPLES

    def __init__(self, mode: int) -> None:
        self._mode = mode
        self._vad = Vad(mode, SAMPLE_RATE, FRAME_SAMPLES / SAMPLE_RATE)
        if self._vad.frame_bytes != FRAME_SAMPLES * 2:  # pragma: no cover - guards a library change
            raise RuntimeError(f"pocketsphinx.Vad chose {self._vad.frame_bytes} bytes per frame")

    def probability(self, frame: PCM16) -> float:
        """1.0 if the 480-sample frame is speech, else 0.0."""
        if frame.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"webrtc VAD needs frames of {FRAME_SAMPLES} samples at 16 kHz, got {frame.shape[0]}")
        buf = np.ascontiguousarray(frame, dtype="<i2").view(np.uint8)  # no copy for the usual contiguous int16
        return 1.0 if self._vad.is_speech(buf) else 0.0

    def reset(self) -> None:
        self._vad = Vad(self._mode, SAMPLE_RATE, FRAME_SAMPLES / SAMPLE_RATE)


class WebRTCVAD:
    """WebRTC VAD model. Option ``mode``: aggressiveness 0–3 (default 3; lower modes fail in noise)."""

    name = "webrtc"

    def __init__(self, mode: int = 3) -> None:
        if mode not in (0, 1, 2, 3):
            raise ValueError(f"webrtc VAD mode must be 0, 1, 2 or 3 (got {mode!r})")
        self.mode = mode

    def new_stream(self) -> WebRTCVADStream:
        return WebRTCVADStream(self.mode)
