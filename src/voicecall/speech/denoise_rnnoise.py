"""Input noise reduction with RNNoise (``audio.input.noise_reduction``), from the ``pyrnnoise`` wheel.

``pyrnnoise`` 0.4.5 (Apache-2.0 wrapper; RNNoise itself is BSD-3) ships ``librnnoise.so`` with the model compiled
in. Its Python package imports ``audiolab`` (not installed), so the library is located with ``find_spec`` and
called through ctypes: ``rnnoise_create(NULL)``, then ``rnnoise_process_frame`` on 480-sample frames (10 ms at
48 kHz, floats at int16 scale). It costs about 0.4 ms of one core per 10 ms frame.

One :class:`RNNoiseStream` per session (RNNoise keeps recurrent state): engine audio (24 kHz int16) is resampled
to 48 kHz, denoised frame by frame and resampled back; about 10 ms of audio stays buffered.

The two OpenAI profiles differ by how much of the original signal is mixed back in (an attenuation limit, as
DeepFilterNet's ``atten_lim``): ``near_field`` (a headset: little noise) keeps the original at -12 dB under the
denoised signal, so speech is never carved into; ``far_field`` (a laptop or room microphone) uses RNNoise's output
alone. Measured against recognition in docs/speech.md: on our synthetic test set it does not help Whisper, which
is why it is off by default.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from pathlib import Path

import numpy as np

from voicecall.audio import ENGINE_RATE, PCM16, Resampler

RATE = 48000
FRAME = 480
DELAY = 960  # samples at 48 kHz between an input frame and its denoised output (measured by cross-correlation)
PROFILES = {"near_field": 10 ** (-12 / 20), "far_field": 0.0}
"""Share of the original signal mixed back into the denoised one, per ``noise_reduction.type``."""

_LIB: ctypes.CDLL | None = None
_LIB_LOCK = threading.Lock()


def _lib() -> ctypes.CDLL:
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            spec = importlib.util.find_spec("pyrnnoise")
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError("noise reduction needs the pyrnnoise wheel (requirements-models.txt)")
            lib = ctypes.CDLL(str(Path(next(iter(spec.submodule_search_locations))) / "librnnoise.so"))
            lib.rnnoise_create.restype = ctypes.c_void_p
            lib.rnnoise_create.argtypes = [ctypes.c_void_p]
            lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
            lib.rnnoise_process_frame.restype = ctypes.c_float
            lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                                  ctypes.POINTER(ctypes.c_float)]
            if lib.rnnoise_get_frame_size() != FRAME:
                raise RuntimeError("unexpected RNNoise frame size")
            _LIB = lib
        return _LIB


class RNNoiseStream:
    """Denoises one session's input audio (engine rate in, engine rate out)."""

    def __init__(self, profile: str, rate: int = ENGINE_RATE) -> None:
        if profile not in PROFILES:
            raise ValueError(f"noise_reduction type must be one of {', '.join(PROFILES)}, not {profile!r}")
        self.profile = profile
        self._mix = PROFILES[profile]
        self._lib = _lib()
        self._state = ctypes.c_void_p(self._lib.rnnoise_create(None))
        self._up = Resampler(rate, RATE, quality="HQ")
        self._down = Resampler(RATE, rate, quality="HQ")
        self._pending = np.zeros(0, np.float32)
        self._out = np.zeros(FRAME, np.float32)
        self._dry = np.zeros(DELAY, np.float32)  # the original, delayed to line up with RNNoise's output

    def process(self, pcm: PCM16) -> PCM16:
        """Denoise a chunk; returns what is ready (about 10 ms stays buffered inside)."""
        up = self._up.process(pcm).astype(np.float32)
        x = np.concatenate([self._pending, up]) if self._pending.size else up
        n = x.shape[0] // FRAME
        y = np.empty(n * FRAME, np.float32)
        fptr = ctypes.POINTER(ctypes.c_float)
        for i in range(n):
            frame = np.ascontiguousarray(x[i * FRAME:(i + 1) * FRAME])
            self._lib.rnnoise_process_frame(self._state, self._out.ctypes.data_as(fptr), frame.ctypes.data_as(fptr))
            y[i * FRAME:(i + 1) * FRAME] = self._out
        self._pending = x[n * FRAME:].copy()
        if self._mix:  # RNNoise's output lags its input by DELAY samples: mix the original in aligned
            dry = np.concatenate([self._dry, x[: n * FRAME]])
            y += self._mix * dry[: n * FRAME]
            self._dry = dry[n * FRAME:]
        out16 = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
        return self._down.process(out16)

    def close(self) -> None:
        if getattr(self, "_state", None):
            self._lib.rnnoise_destroy(self._state)
            self._state = ctypes.c_void_p(None)

    def __del__(self) -> None:
        self.close()
