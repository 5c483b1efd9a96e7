"""``voicecall bench stages`` still runs (quick mode) and its WER helper is right."""

from __future__ import annotations

import json
from pathlib import Path

from voicecall.bench.speech_stages import main, wer


def test_wer() -> None:
    assert wer("The capital of France is Paris.", "the capital of france is paris") == (0, 6)
    assert wer("set a timer", "set the timer for") == (2, 3)
    assert wer("a b c", "") == (3, 3)


def test_quick_bench_writes_json(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "stages.json"
    assert main(["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["tts"]) == {"piper", "espeak"}
    assert data["tts"]["piper"]["first_chunk"]["6"]["first_audio_ms"] > 0
    assert 0.0 <= data["tts"]["espeak"]["intelligibility"]["wer"] <= 1.5
    assert data["llm"]["n_threads=1"]["prompt_tokens"] > 100
    assert set(data["vad"]) == {"silero", "webrtc", "energy"}
