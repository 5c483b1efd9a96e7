"""Fixtures of the speech-stage tests: real models, loaded once per test session through the registry cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from voicecall.audio import resample
from voicecall.config import StageConfig
from voicecall.speech.registry import load_stage

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="session")
def piper() -> Any:
    return load_stage("tts", StageConfig(type="piper"))


@pytest.fixture(scope="session")
def espeak() -> Any:
    return load_stage("tts", StageConfig(type="espeak"))


@pytest.fixture(scope="session")
def silero() -> Any:
    return load_stage("vad", StageConfig(type="silero"))


@pytest.fixture(scope="session")
def sphinx() -> Any:
    return load_stage("stt", StageConfig(type="pocketsphinx"))


@pytest.fixture(scope="session")
def llama() -> Any:
    llm = load_stage("llm", StageConfig(type="llama-cpp"))
    llm.warm_up()
    return llm


@pytest.fixture(scope="session")
def question_16k(piper: Any) -> np.ndarray:
    """Piper speaking the question, resampled to 16 kHz (no padding).

    Piper samples noise at every synthesis and pocketsphinx misses a word in about one rendition in eight, so the
    tests use the deterministic rendition (noise scales 0) of the same loaded voice.
    """
    from piper.config import SynthesisConfig

    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, volume=0.9)
    pcm = np.concatenate([c.audio_int16_array for c in piper.voice.synthesize(QUESTION, syn_config=cfg)])
    return resample(pcm, piper.sample_rate, 16000)
