"""Smart Turn v3.2 from the pipecat-ai wheel: our Whisper front end and the model's verdicts, plus the
semantic_vad decision rules (engine/endpointing.py) that weigh them."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from voicecall.audio import resample
from voicecall.config import StageConfig
from voicecall.engine.endpointing import EAGERNESS, with_evidence
from voicecall.speech.eot_smartturn import N_FRAMES, N_MELS, WINDOW_SAMPLES, default_model_path, log_mel
from voicecall.speech.registry import load_stage


def _reference() -> Any:
    """pipecat's own numpy port of the transformers feature extractor, loaded from its file in the wheel (the
    pipecat package itself is never imported)."""
    path = default_model_path().parent.parent / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("smart_turn_reference_features", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_front_end_matches_pipecat_reference() -> None:
    ref = _reference()
    rng = np.random.default_rng(0)
    for n in (16000, WINDOW_SAMPLES, WINDOW_SAMPLES + 40000):  # shorter (left-padded), exact, longer (last 8 s)
        x = (rng.normal(0, 2000, n) * np.sin(np.arange(n) / 200.0)).astype(np.int16)
        ours = log_mel(x)
        assert ours.shape == (N_MELS, N_FRAMES) and ours.dtype == np.float32
        xf = x.astype(np.float32) / 32768.0
        xf = xf[-WINDOW_SAMPLES:] if n > WINDOW_SAMPLES else np.pad(xf, (WINDOW_SAMPLES - n, 0))
        np.testing.assert_allclose(ours, ref.compute_whisper_log_mel_features(xf), atol=1e-5)


def test_front_end_properties() -> None:
    t = np.arange(16000 * 2) / 16000
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    feats = log_mel(tone)
    assert feats.max() - feats.min() <= 2.0 + 1e-6  # dynamic range clamped to 8 log10 units, scaled by 1/4
    # the audio sits at the right edge: the last 2 s carry the energy, the left padding is flat
    assert np.ptp(feats[:, :500]) < 1e-6 < np.ptp(feats[:, -150:])
    band = int(np.argmax(feats[:, -100:].mean(axis=1)))
    assert 15 <= band <= 40  # 1 kHz falls in the lower-middle mel bands


@pytest.fixture(scope="module")
def smart_turn() -> Any:
    return load_stage("eot", StageConfig(type="smart-turn"))


def _mic(pcm16k: np.ndarray, tail_s: float = 0.25) -> np.ndarray:
    x = np.concatenate([np.zeros(4000), pcm16k.astype(np.float64), np.zeros(int(16000 * tail_s))])
    x += np.random.default_rng(1).normal(0, 60, x.shape)
    return np.clip(x, -32768, 32767).astype(np.int16)


def test_complete_question_scores_higher_than_a_cut_one(smart_turn: Any, piper: Any) -> None:
    def say(text: str) -> np.ndarray:
        return resample(np.concatenate(list(piper.synthesize(text))), piper.sample_rate, 16000)

    complete = smart_turn.probability(_mic(say("What is the weather like in London today?")))
    cut = smart_turn.probability(_mic(say("What is the weather like in")))
    assert complete > 0.7 and cut < 0.3, (complete, cut)  # evidence, not a rule: engine/endpointing.py weighs it


def test_transcript_evidence_and_eagerness() -> None:
    assert with_evidence(0.9, "what is the capital of") < 0.2
    assert with_evidence(0.9, "what is the capital of france") == 0.9
    for e in EAGERNESS.values():
        waits = [e.wait_ms(p) for p in (0.0, 0.1, 0.2, 0.29)]
        assert waits == sorted(waits, reverse=True) and waits[0] == e.max_ms
        assert e.candidate_ms < e.max_ms
    assert EAGERNESS["high"].max_ms < EAGERNESS["auto"].max_ms < EAGERNESS["low"].max_ms
    assert EAGERNESS["auto"] is EAGERNESS["medium"]


def test_model_file_comes_from_the_wheel_without_importing_pipecat() -> None:
    import sys

    path = default_model_path()
    assert path.name == "smart-turn-v3.2-cpu.onnx" and path.stat().st_size > 5_000_000
    assert "pipecat" not in sys.modules
    assert path.parts[-6:-1] == ("pipecat", "audio", "turn", "smart_turn", "data")
