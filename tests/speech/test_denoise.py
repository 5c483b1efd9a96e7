"""Input noise reduction (RNNoise through ctypes): noise goes down, speech stays recognisable."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from voicecall.audio import resample
from voicecall.speech.denoise_rnnoise import RNNoiseStream


def _run(stream: RNNoiseStream, pcm: np.ndarray, chunk: int = 480) -> np.ndarray:
    return np.concatenate([stream.process(pcm[i:i + chunk]) for i in range(0, pcm.shape[0], chunk)])


def _db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt((x.astype(np.float64) ** 2).mean()) + 1e-9))


def test_rnnoise_removes_stationary_noise_and_keeps_speech(piper: Any) -> None:
    from voicecall.config import StageConfig
    from voicecall.speech.registry import load_stage

    noise = np.random.default_rng(0).normal(0, 1000, 48000).astype(np.int16)  # -30 dBFS hiss, 2 s at 24 kHz
    far, near = _run(RNNoiseStream("far_field"), noise), _run(RNNoiseStream("near_field"), noise)
    assert noise.shape[0] - far.shape[0] < 2400  # at most ~100 ms held inside (frames, resamplers)
    assert _db(noise) - _db(far[24000:]) > 15  # far field: RNNoise alone
    assert 8 < _db(noise) - _db(near[24000:]) < _db(noise) - _db(far[24000:])  # near field: original at -12 dB
    speech = resample(np.concatenate(list(piper.synthesize("Tell me something about the moon."))), 22050, 24000)
    noisy = np.clip(np.concatenate([noise[:7200], speech + noise[:speech.shape[0]] // 4, noise[:7200]]),
                    -32768, 32767).astype(np.int16)
    whisper = load_stage("stt", StageConfig(type="whisper"))
    text = whisper.transcribe(resample(_run(RNNoiseStream("near_field"), noisy), 24000, 16000))[0]
    assert "moon" in text.lower(), text
    with pytest.raises(ValueError, match="near_field"):
        RNNoiseStream("studio")
