"""The example stacks in examples/: valid configurations, and a clear start-up failure when a key is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicecall.config import load_config
from voicecall.speech.registry import check_stages

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY_VARS = ("ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY", "OPENAI_API_KEY")
NEEDS = {
    "claude-deepgram-elevenlabs.yaml": {"ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY"},
    "openai-pipeline.yaml": {"OPENAI_API_KEY"},
    "local-ollama-whisper-piper.yaml": set(),
}


def test_every_example_is_listed_and_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == set(NEEDS)
    for var in KEY_VARS:
        monkeypatch.setenv(var, "test-key")
    for name in NEEDS:
        cfg = load_config(EXAMPLES / name, env={})
        check_stages(cfg.voice_call.local)  # types, options, keys, prices


@pytest.mark.parametrize("name", [n for n, needs in NEEDS.items() if needs])
def test_serve_stops_at_start_up_naming_the_missing_key(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    needs = sorted(NEEDS[name])
    for var in needs[1:]:  # all but one key set: the message names the one that is missing
        env[var] = "test-key"
    proc = subprocess.run([sys.executable, "-m", "voicecall.cli", "serve", "--config", str(EXAMPLES / name),
                           "--port", "0"], check=False, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert needs[0] in proc.stderr and "needs an API key" in proc.stderr
    assert "Traceback" not in proc.stderr and "test-key" not in proc.stderr
