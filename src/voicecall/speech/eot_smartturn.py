"""Smart Turn v3.2 (Daily/pipecat, BSD-2) end-of-turn model through onnxruntime, with our own Whisper front end.

The model ships inside the ``pipecat-ai`` wheel at ``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx``
(8.7 MB, int8). The wheel is installed with ``--no-deps`` (Makefile ``NODEPS``) and **pipecat is never imported**:
its ``__init__`` pulls loguru, pydantic versions and more. The file is located with
:func:`importlib.util.find_spec` on the top-level package, which does not execute it.

Input: the Whisper log-mel spectrogram (80 mel bands x 800 frames) of the last 8 s of the turn at 16 kHz, the audio
left-padded with zeros when shorter, exactly as pipecat's ``LocalSmartTurnAnalyzerV3`` prepares it. Output: the
probability that the turn is complete. The front end below is the ``transformers.WhisperFeatureExtractor``
computation (``chunk_length=8``, ``do_normalize=True``) in numpy: waveform zero-mean/unit-variance normalisation,
a centred 400-point periodic-Hann STFT with hop 160 and reflect padding, power spectrum, a Slaney-normalised
80-band Slaney-scale mel filterbank over 0-8 kHz, ``log10`` with a 1e-10 floor, the last frame dropped, dynamic
range clamped to 8 (log10 units) below the maximum, then ``(x + 4) / 4``. ``tests/speech/test_eot_smartturn.py``
checks it against pipecat's own numpy port (loaded from its file, not imported as a package).

Cost: ~50 ms of one core per call here (a Whisper-tiny-sized encoder over 8 s). One ``InferenceSession`` is
shared by every session (``run`` is thread-safe); calls happen in worker threads, never on the event loop.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from .base import PCM16

SAMPLE_RATE = 16000
WINDOW_SECONDS = 8
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS  # 128000
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = WINDOW_SAMPLES // HOP  # 800
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
WHEEL_DIR = ("audio", "turn", "smart_turn", "data")
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------------ front end
def _hz_to_mel(freq: F64) -> F64:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hz(mels: F64) -> F64:
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[log_region] - 15.0))
    return freq


def mel_filterbank(n_fft: int = N_FFT, n_mels: int = N_MELS, rate: int = SAMPLE_RATE) -> F64:
    """Triangular Slaney-normalised filters, shape ``(n_fft // 2 + 1, n_mels)`` (as ``librosa.filters.mel``)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([rate / 2.0]))[0], n_mels + 2))
    fft_freqs = np.linspace(0, rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - fft_freqs[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]
    return filters


_WINDOW: F64 = np.hanning(N_FFT + 1)[:-1]  # periodic Hann (torch.hann_window)
_FILTERS_T: F64 = np.ascontiguousarray(mel_filterbank().T)


def log_mel(audio16k: PCM16 | F32) -> F32:
    """Whisper log-mel features of the last 8 s of ``audio16k`` (int16 or float in [-1, 1]): ``(80, 800)`` float32.

    Shorter audio is left-padded with zeros (the turn ends at the right edge, where the model looks)."""
    x = np.asarray(audio16k)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {x.shape}")
    x = x.astype(np.float32) / np.float32(32768.0) if x.dtype == np.int16 else x.astype(np.float32)
    if x.size >= WINDOW_SAMPLES:
        x = x[-WINDOW_SAMPLES:]
    else:
        x = np.concatenate([np.zeros(WINDOW_SAMPLES - x.size, np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))  # zero mean, unit variance (float32, as the reference)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (801, 201)
    mel = np.log10(np.maximum(1e-10, _FILTERS_T @ power.T))[:, :-1]  # (80, 800): the last frame is dropped
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


# ------------------------------------------------------------------------------------ model
def default_model_path() -> Path:
    """The ONNX file inside the installed ``pipecat-ai`` wheel (the package itself is not imported)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the pipecat-ai wheel is not installed (pip install --no-deps pipecat-ai==1.14.0; it carries the "
            "Smart Turn model); or set eot.modelPath, or use eot type 'none'")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*WHEEL_DIR, MODEL_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"Smart Turn model not found at {path}")
    return path


class SmartTurnEOT:
    """End-of-turn probability from the sound of the turn (prosody, pitch, the last words' shape).

    Options: ``modelPath`` (another Smart Turn v3 ONNX file; default: the one in the ``pipecat-ai`` wheel),
    ``threads`` (onnxruntime intra-op threads, default 1).
    """

    name = "smart-turn"
    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES

    def __init__(self, model_path: str | None = None, threads: int = 1) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"Smart Turn model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.model_path = path
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def probability(self, audio16k: PCM16) -> float:
        """P(turn complete) for the turn's audio so far (16 kHz; the last 8 s are used). Blocking, ~50 ms."""
        feats = log_mel(audio16k)[None, :, :]
        out = self.session.run(None, {self._input: feats})[0]
        return float(np.asarray(out).reshape(-1)[0])

    def warm_up(self) -> None:
        self.probability(np.zeros(SAMPLE_RATE, np.int16))
