"""A fake TTS that turns each word into a short tone burst — deterministic and instant, for tests/benchmarks.

Every word becomes ``wordMs`` of a sine tone (its pitch derived from the word's CRC32, 300–900 Hz, with 5 ms
fades) followed by ``gapMs`` of silence; one chunk is yielded per sentence. It loads nothing.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator

import numpy as np

from .base import PCM16

_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


class ToneTTS:
    """Tone-burst "TTS". Options: ``sampleRate`` (default 24000), ``wordMs`` (120), ``gapMs`` (40),
    ``amplitude`` (0.3 of full scale)."""

    name = "tone"

    def __init__(self, sample_rate: int = 24000, word_ms: int = 120, gap_ms: int = 40, amplitude: float = 0.3) -> None:
        self.sample_rate = int(sample_rate)
        self.word_samples = self.sample_rate * int(word_ms) // 1000
        self.gap_samples = self.sample_rate * int(gap_ms) // 1000
        t = np.arange(self.word_samples, dtype=np.float32) / self.sample_rate
        fade = min(self.word_samples // 2, self.sample_rate // 200)
        env = np.ones(self.word_samples, dtype=np.float32)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            env[:fade], env[-fade:] = ramp, ramp[::-1]
        self._t = t
        self._env = env * float(amplitude) * 32767.0

    def voices(self) -> list[str]:
        return ["tone"]

    def _word(self, word: str, speed: float) -> PCM16:
        freq = 300.0 + (zlib.crc32(word.lower().encode()) % 600)
        tone = (np.sin(2 * np.pi * freq * self._t) * self._env).astype(np.int16)
        gap = np.zeros(int(self.gap_samples / max(speed, 0.1)), dtype=np.int16)
        return np.concatenate([tone, gap])

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        """One chunk per sentence: a tone burst per word."""
        for sentence in _SENTENCE.split(text.strip()):
            words = re.findall(r"\w+", sentence)
            if words:
                yield np.concatenate([self._word(w, speed) for w in words])
