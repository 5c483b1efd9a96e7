"""Whisper (CTranslate2, the default STT) and Moonshine on real synthesized speech: words, streaming, model paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voicecall.audio import resample
from voicecall.bench.signals import mic_like
from voicecall.config import ConfigError, StageConfig
from voicecall.speech.registry import load_stage
from voicecall.speech.stt_whisper import bundled_model_dir, drop_repeats

FRAME = 512  # 32 ms, as the engine feeds


def _words(text: str) -> set[str]:
    return set("".join(c.lower() if c.isalnum() else " " for c in text).split())


@pytest.fixture(scope="module")
def whisper() -> Any:
    model = load_stage("stt", StageConfig(type="whisper"))
    model.warm_up()
    return model


@pytest.fixture(scope="module")
def moon_16k(piper: Any) -> np.ndarray:
    pcm = np.concatenate(list(piper.synthesize("Tell me something about the moon.")))
    return mic_like(resample(pcm, piper.sample_rate, 16000), pad_s=0.3)


def _stream(model: Any, pcm: np.ndarray) -> tuple[list[str], str]:
    stream = model.new_stream()
    partials = [p for i in range(0, pcm.shape[0], FRAME) if (p := stream.feed(pcm[i:i + FRAME]))]
    return partials, stream.finish()


def test_whisper_streams_partials_then_the_final_transcript(whisper: Any, question_16k: np.ndarray) -> None:
    """Partials grow while the user speaks; the final pass is free when only silence followed the last decode."""
    signal = mic_like(question_16k, pad_s=0.5)
    decodes = whisper.decodes
    partials, final = _stream(whisper, signal)
    assert {"what", "capital", "france"} <= _words(final), final
    assert len(partials) >= 2, partials  # several partials for a 2 s question
    assert {"capital", "france"} <= _words(partials[-1]), partials  # the pause decode already heard everything
    assert not partials[-1].endswith("?")  # a partial's last word may still grow
    # bounded work: a decode per ~0.5 s of audio at most, and none at finish (the tail was quiet)
    assert whisper.decodes - decodes <= signal.shape[0] / 16000 / 0.5 + 2


def test_whisper_partials_are_greedy_and_the_pause_decode_is_the_final_beam_decode(
        whisper: Any, question_16k: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scheduled partials stay cheap (greedy); the decode at the pause is the beam decode, reused by finish(), and
    the only one that aligns its words (the end-of-turn evidence on the last word)."""
    finals: list[tuple[bool, bool]] = []
    real = whisper._decode

    def spy(pcm: np.ndarray, language: str | None, context: str, final: bool, words: bool) -> Any:
        finals.append((final, words))
        return real(pcm, language, context, final, words)

    monkeypatch.setattr(whisper, "_decode", spy)
    stream = whisper.new_stream()
    signal = mic_like(question_16k, pad_s=1.5)  # 1.5 s of quiet after the question
    partials = [p for i in range(0, signal.shape[0], FRAME) if (p := stream.feed(signal[i:i + FRAME]))]
    tail = stream.tail_word()
    final = stream.finish()
    assert {"capital", "france"} <= _words(final), final
    # partials while speaking are greedy; a pause inside the question (80 ms of quiet between Piper's words) may get
    # a final-quality decode of its own
    assert partials and finals[:-1] and sum(f for f, _ in finals[:-1]) <= 1, finals
    # the pause decode is the last one: no partial re-decodes the quiet tail, and finish() reuses it
    assert finals[-1] == (True, True) and finals.count((True, True)) <= 2, finals
    assert whisper.beam_size == 5
    # the last word was said in full (Piper): probable, and aligned to start before the end of speech
    assert tail is not None and tail.word == "france" and tail.probability > 0.5 and tail.lead_ms > 0, tail


def test_whisper_hears_several_voices(whisper: Any, piper: Any, espeak: Any, moon_16k: np.ndarray) -> None:
    assert {"tell", "something", "moon"} <= _words(whisper.transcribe(moon_16k)[0])
    pcm = np.concatenate(list(espeak.synthesize("What is the capital of France?", "en-us")))
    text = whisper.transcribe(mic_like(resample(pcm, espeak.sample_rate, 16000), pad_s=0.3))[0]
    assert {"capital", "france"} <= _words(text), text
    assert text.lower().count("capital") == 1, text  # a length-normalised beam wrote this question twice


def test_whisper_silence_and_noise_give_nothing(whisper: Any) -> None:
    noise = mic_like(np.zeros(32000, np.int16), pad_s=0.0)
    assert _stream(whisper, noise) == ([], "")


def test_whisper_long_utterance_is_cut_within_the_window(whisper: Any, piper: Any) -> None:
    """Past the 10 s window the stream commits the text before a quiet point and decodes only the rest."""
    texts = ["The train to Boston leaves at half past seven.", "Please book two seats by the window.",
             "I would also like a coffee and a sandwich.", "Then remind me to call my sister tonight."]
    parts = [resample(np.concatenate(list(piper.synthesize(t))), piper.sample_rate, 16000) for t in texts]
    gap = np.zeros(4000, np.int16)
    signal = mic_like(np.concatenate([x for p in parts for x in (p, gap)]), pad_s=0.3)
    assert signal.shape[0] > 10.5 * 16000
    _, final = _stream(whisper, signal)
    assert {"boston", "seats", "window", "coffee", "sandwich", "sister", "tonight"} <= _words(final), final


def test_whisper_loads_a_user_supplied_model_directory(tmp_path: Path, moon_16k: np.ndarray) -> None:
    """``model: /path`` takes any CTranslate2 Whisper directory (here the bundled one, given as a path)."""
    path = str(bundled_model_dir())
    model = load_stage("stt", StageConfig(type="whisper", model=path, device="cpu", computeType="int8", threads=1))
    assert model.path == Path(path) and model.compute_type == "int8" and not model.multilingual
    assert {"moon"} <= _words(model.transcribe(moon_16k)[0])
    with pytest.raises(ConfigError, match="not found"):
        load_stage("stt", StageConfig(type="whisper", model=str(tmp_path / "nope")))
    with pytest.raises(ConfigError, match="model.bin"):
        load_stage("stt", StageConfig(type="whisper", model=str(tmp_path)))
    with pytest.raises(ConfigError, match="CUDA"):  # this machine has no GPU
        load_stage("stt", StageConfig(type="whisper", device="cuda"))
    with pytest.raises(ConfigError, match="English-only"):
        load_stage("stt", StageConfig(type="whisper", language="fr"))


def test_moonshine_streams_and_transcribes(moon_16k: np.ndarray) -> None:
    model = load_stage("stt", StageConfig(type="moonshine"))
    partials, final = _stream(model, moon_16k)
    assert {"tell", "something", "moon"} <= _words(final), final
    assert partials and {"moon"} <= _words(partials[-1])
    with pytest.raises(ValueError, match="English"):
        model.new_stream("fr")


def test_whisper_repetition_loop_is_dropped() -> None:
    """A short turn transcribed twice over (seen on the bench set, greedy and beam alike) keeps one copy."""
    assert drop_repeats("Turn off the lights. Turn off the lights.") == "Turn off the lights."
    assert drop_repeats("What is 2 plus 2? What is 2 plus 2? What is") == "What is 2 plus 2?"  # cut by the cap
    for kept in ("Hello? Hello?", "Is it on? Is it on? No.", "What is it? I wonder what it is", "no stop no stop"):
        assert drop_repeats(kept) == kept
