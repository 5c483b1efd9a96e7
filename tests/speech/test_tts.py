"""TTS adapters on real models: Piper (joe-medium) and espeak-ng, plus the tone fake."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from voicecall.audio import rms_dbfs
from voicecall.speech.base import TTSModel
from voicecall.speech.tts_tone import ToneTTS

SENTENCES = "The weather today is sunny and warm. Tomorrow it will rain in the afternoon."


def speak(tts: Any, text: str, **kw: Any) -> list[np.ndarray]:
    return list(tts.synthesize(text, **kw))


@pytest.mark.parametrize("name", ["piper", "espeak"])
def test_speech_is_audible_and_plausibly_long(name: str, request: pytest.FixtureRequest) -> None:
    tts = request.getfixturevalue(name)
    assert isinstance(tts, TTSModel) and tts.sample_rate == 22050
    chunks = speak(tts, SENTENCES)
    assert len(chunks) == 2  # one chunk per sentence, yielded as each is ready
    pcm = np.concatenate(chunks)
    assert pcm.dtype == np.int16
    seconds = pcm.shape[0] / tts.sample_rate
    words = len(SENTENCES.split())
    assert words / 4.5 < seconds < words / 1.5, seconds  # 1.5–4.5 words per second
    assert rms_dbfs(pcm) > -30 and np.abs(pcm).max() > 8000


@pytest.mark.parametrize("name", ["piper", "espeak"])
def test_speed_changes_duration(name: str, request: pytest.FixtureRequest) -> None:
    tts = request.getfixturevalue(name)
    normal = sum(c.shape[0] for c in speak(tts, "Speaking at different rates.", speed=1.0))
    fast = sum(c.shape[0] for c in speak(tts, "Speaking at different rates.", speed=1.5))
    assert fast < normal * 0.85


def test_piper_voice_and_arguments(piper: Any) -> None:
    assert piper.voices() == ["en_US-joe-medium"]
    assert speak(piper, "   ") == []
    with pytest.raises(ValueError, match="en_US-joe-medium"):
        speak(piper, "Hi.", voice="alloy")


def test_espeak_voices_differ(espeak: Any) -> None:
    assert {"en-us", "en-us+f3", "en-us+m3"} <= set(espeak.voices())
    a = np.concatenate(speak(espeak, "Hello there.", voice="en-us+f3"))
    b = np.concatenate(speak(espeak, "Hello there.", voice="en-us+m3"))
    assert a.shape != b.shape or not np.array_equal(a, b)
    with pytest.raises(ValueError, match="no voice"):
        speak(espeak, "Hi.", voice="no-such-language")
    with pytest.raises(ValueError, match="no voice"):
        speak(espeak, "Hi.", voice="en-us+nosuchvariant")


def test_espeak_and_piper_from_many_threads(espeak: Any, piper: Any) -> None:
    """espeak's global state is behind one lock; piper is re-entrant. Results match the serial ones (both engines
    add a little randomness, so lengths are compared), and the two espeak-ng copies in the process
    (espeakng-loader's library and piper's phonemizer) do not clash."""
    texts = {f"en-us+{v}": f"Thread number {i} is talking." for i, v in enumerate(["f3", "m3", "f2", "m1"])}
    serial = {v: np.concatenate(speak(espeak, t, voice=v)) for v, t in texts.items()}
    piper_serial = np.concatenate(speak(piper, "Piper in parallel."))
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def run(voice: str) -> None:
        try:
            for _ in range(5):
                results[voice] = np.concatenate(speak(espeak, texts[voice], voice=voice))
            results["piper" + voice] = np.concatenate(speak(piper, "Piper in parallel."))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for voice, pcm in serial.items():
        assert abs(results[voice].shape[0] - pcm.shape[0]) < 0.05 * pcm.shape[0]
        assert rms_dbfs(results[voice]) > -30
        assert abs(results["piper" + voice].shape[0] - piper_serial.shape[0]) < 0.2 * piper_serial.shape[0]


def test_tone_tts_is_deterministic() -> None:
    tts = ToneTTS()
    a, b = speak(tts, "Hello world. Again"), speak(tts, "Hello world. Again")
    assert len(a) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape[0] == 2 * (tts.word_samples + tts.gap_samples)
    assert speak(tts, "...") == []


def test_piper_threads_sleep_unless_told_to_spin() -> None:
    from voicecall.config import StageConfig
    from voicecall.speech.registry import load_stage

    def spinning(options: dict[str, Any]) -> str:
        tts = load_stage("tts", StageConfig(type="piper", **options))
        opts = tts.voice.session.get_session_options()
        assert opts.intra_op_num_threads == options.get("threads", 1)
        assert speak(tts, "Hi.")  # it still speaks
        return str(opts.get_session_config_entry("session.intra_op.allow_spinning"))

    assert spinning({}) == "0"
    assert spinning({"threads": 2}) == "0"
    assert spinning({"threads": 2, "spinning": True}) == "1"
