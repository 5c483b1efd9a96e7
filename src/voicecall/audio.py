"""Audio helpers shared by every layer: formats of the protocol, resampling, WAV files.

The engine's internal format is the protocol's native one: mono int16 at 24 kHz (``ENGINE_RATE``).
"""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

PCM16 = npt.NDArray[np.int16]
ENGINE_RATE = 24000


class Resampler:
    """Streaming resampler for mono int16 (keeps filter state between chunks, so no clicks at joins)."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: PCM16, last: bool = False) -> PCM16:
        if self._stream is None:
            return pcm
        return self._stream.resample_chunk(pcm, last=last)


def resample(pcm: PCM16, in_rate: int, out_rate: int) -> PCM16:
    """One-shot resampling of a whole signal."""
    if in_rate == out_rate:
        return pcm
    return soxr.resample(pcm, in_rate, out_rate, quality="HQ").astype(np.int16, copy=False)


# ---------------------------------------------------------------------------------- G.711 (8 kHz)
def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -sample, sample).astype(np.int16)


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    sample = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, sample, -sample).astype(np.int16)


_ULAW_DEC = _ulaw_decode_table()
_ALAW_DEC = _alaw_decode_table()


def _build_encoder(dec: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    # Encode by nearest decoded value: a 65536-entry lookup built once (64 KiB).
    order = np.argsort(dec.astype(np.int32))
    sorted_vals = dec.astype(np.int32)[order]
    x = np.arange(-32768, 32768, dtype=np.int32)
    idx = np.clip(np.searchsorted(sorted_vals, x), 1, 255)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    pick = np.where(np.abs(x - left) <= np.abs(right - x), idx - 1, idx)
    return order[pick].astype(np.uint8)


_ULAW_ENC = _build_encoder(_ULAW_DEC)
_ALAW_ENC = _build_encoder(_ALAW_DEC)


def ulaw_decode(data: bytes) -> PCM16:
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def ulaw_encode(pcm: PCM16) -> bytes:
    return _ULAW_ENC[pcm.astype(np.int32) + 32768].tobytes()


def alaw_decode(data: bytes) -> PCM16:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: PCM16) -> bytes:
    return _ALAW_ENC[pcm.astype(np.int32) + 32768].tobytes()


# -------------------------------------------------------------------------- protocol audio formats
FORMAT_RATES = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}


class AudioCodec:
    """Converts between a session's wire format and engine PCM (24 kHz int16), with streaming resampling."""

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMAT_RATES:
            raise ValueError(f"unsupported audio format {fmt!r}")
        self.format = fmt
        self.rate = FORMAT_RATES[fmt]
        self._up = Resampler(self.rate, ENGINE_RATE)
        self._down = Resampler(ENGINE_RATE, self.rate)

    def decode(self, data: bytes) -> PCM16:
        """Wire bytes -> engine PCM."""
        if self.format == "audio/pcm":
            if len(data) % 2:
                data = data[:-1]
            return np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
        pcm = ulaw_decode(data) if self.format == "audio/pcmu" else alaw_decode(data)
        return self._up.process(pcm)

    def encode(self, pcm: PCM16) -> bytes:
        """Engine PCM -> wire bytes."""
        if self.format == "audio/pcm":
            return pcm.astype("<i2", copy=False).tobytes()
        low = self._down.process(pcm)
        return ulaw_encode(low) if self.format == "audio/pcmu" else alaw_encode(low)

    def flush(self) -> bytes:
        """Wire bytes still held by the output resampler (call at the end of a response)."""
        if self.format == "audio/pcm":
            return b""
        low = self._down.process(np.zeros(0, dtype=np.int16), last=True)
        self._down = Resampler(ENGINE_RATE, self.rate)
        return ulaw_encode(low) if self.format == "audio/pcmu" else alaw_encode(low)

    def bytes_to_ms(self, n: int) -> float:
        return n / 2 / 24 if self.format == "audio/pcm" else n / 8


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------------------- WAV files
def read_wav(path: str | Path) -> tuple[PCM16, int]:
    """Read a 16-bit PCM WAV (mono or stereo, which is mixed down). Returns (samples, rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported (got {8 * w.getsampwidth()}-bit)")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data.astype(np.int16, copy=False), rate


def wav_bytes(pcm: PCM16, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2", copy=False).tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, pcm: PCM16, rate: int) -> None:
    Path(path).write_bytes(wav_bytes(pcm, rate))


def frame_dbfs(pcm: PCM16, hop: int) -> npt.NDArray[np.float64]:
    """Level of each whole ``hop``-sample frame of ``pcm`` in dBFS (a trailing part frame is left out)."""
    n = pcm.shape[0] // hop
    if n == 0:
        return np.zeros(0)
    f = pcm[: n * hop].astype(np.float64).reshape(n, hop)
    return 20 * np.log10(np.sqrt((f * f).mean(axis=1)) / 32768 + 1e-9)


def rms_dbfs(pcm: PCM16) -> float:
    if pcm.size == 0:
        return -120.0
    r = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) / 32768.0
    return 20 * np.log10(max(r, 1e-6))
