"""Fixtures of the speech-stage tests: real models, loaded once per test session through the registry cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.conftest import fixed_piper
from voicecall.audio import resample
from voicecall.config import StageConfig
from voicecall.speech.registry import load_stage

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="session")
def piper() -> Any:
    return fixed_piper()  # deterministic: tests that listen to it pass or fail for a reason, not by chance


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
    """Piper speaking the question (its deterministic rendition), resampled to 16 kHz (no padding)."""
    pcm = np.concatenate(list(piper.synthesize(QUESTION)))
    return resample(pcm, piper.sample_rate, 16000)
