"""``voicecall bench stt``: its scoring is right, and a one-question run writes figures for every voice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicecall.bench.stt import ENGINES, HELD_OUT_QUESTIONS, QUESTIONS, VOICES, engine_stages, main, normalize, word_errors
from voicecall.speech.stt_whisper import bundled_model_dir


def test_scoring_normalizes_numbers_case_and_punctuation() -> None:
    assert normalize("Set a timer for 10 minutes.") == ["set", "a", "timer", "for", "ten", "minutes"]
    assert normalize("It's 125 km to-night!") == ["it", "is", "one", "hundred", "twenty", "five", "km", "tonight"]
    # Whisper's English normaliser: contractions the same on both sides, fillers dropped; never the words themselves
    assert word_errors("Where is the nearest train station?", "Um, where's the nearest train station?") == (0, 6)
    assert word_errors("Why is the sky blue?", "Why isn't the sky blue?") == (1, 5)
    assert word_errors("What is two plus two?", "what is 2 plus 2") == (0, 5)
    assert word_errors("Tell me something about the moon.", "Tell me something about them.") == (2, 6)


def test_the_held_out_set_shares_no_question_with_the_tuning_set() -> None:
    assert len(HELD_OUT_QUESTIONS) == 20 and not set(HELD_OUT_QUESTIONS) & set(QUESTIONS)


def test_engines_are_names_or_stages_of_your_own() -> None:
    own = '{"type": "whisper", "model": "/models/whisper-base.en-ct2", "beamSize": 2}'
    assert engine_stages(["moonshine", f"base={own}"]) == {
        "moonshine": ENGINES["moonshine"], "base": {"type": "whisper", "model": "/models/whisper-base.en-ct2", "beamSize": 2}}
    with pytest.raises(SystemExit, match="unknown engine 'whisper-large': choose from whisper, "):
        engine_stages(["whisper-large"])
    with pytest.raises(SystemExit, match="--engines base: not JSON"):
        engine_stages(["base={type: whisper}"])


def test_one_question_run_writes_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "stt.json"
    own = json.dumps({"type": "whisper", "model": str(bundled_model_dir()), "beamSize": 1})
    assert main(["--engines", "whisper", f"own dir={own}", "--questions", "1", "--stream-clips", "2",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["clips"] == len(VOICES) and data["noisy_clips"] == 2
    w = data["engines"]["whisper"]
    assert set(w["wer_by_voice"]) == {v[0] for v in VOICES} and 0.0 <= w["wer"] <= 1.0 and w["decode_s_p50"] > 0
    assert 0.0 <= w["wer_tuning_half"] <= 1.0 and w["wer_held_out_half"] == 0.0  # one question: question 0 only
    assert data["streaming"]["whisper"]["decodes_per_clip"] >= 1
    assert set(data["noise_reduction"]) == {"off", "near_field", "far_field"}
    assert data["noise_reduction"]["far_field"]["denoise_per_audio_s"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    # a model directory given by path loads through the same adapter, and is measured like the named engines
    assert 0.0 <= data["engines"]["own dir"]["wer"] <= 1.0 and data["streaming"]["own dir"]["decodes_per_clip"] >= 1
