"""The configuration users of the seed already have, verbatim (a beta-era model name and a TTS-only voice), starts
``voicecall serve`` with one warning per mapping; ``--strict-config`` keeps refusing it (exit 2)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from voicecall.config import load_config
from voicecall.server.thread import free_port

VOICECALL = [sys.executable, "-m", "voicecall.cli"]
SEED = """plugins:
  voice-call:
    provider: openai-realtime
    openaiRealtime:
      apiKey: sk-test-seed-key
      model: gpt-4o-realtime
      voice: nova
      instructions: "You are a helpful assistant."
"""


def test_seed_config_starts_with_warnings(tmp_path: Path) -> None:
    cfg = tmp_path / "seed.yaml"
    cfg.write_text(SEED)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen([*VOICECALL, "serve", "--config", str(cfg), "--port", str(port)], cwd=tmp_path,
                                stdout=err, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            health = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert health is not None and health.status_code == 200, log.read_text()
            assert health.json()["provider"] == "openai-realtime"
        finally:
            proc.terminate()
            proc.wait(20)
    out = log.read_text()
    warnings = [line for line in out.splitlines() if "WARNING" in line and "openaiRealtime." in line]
    assert len(warnings) == 2, out
    assert any("'gpt-4o-realtime'" in w and "'gpt-realtime'" in w for w in warnings), warnings
    assert any("'nova'" in w and "'coral'" in w for w in warnings), warnings
    assert "sk-test-seed-key" not in out


def test_strict_config_refuses_seed_values(tmp_path: Path) -> None:
    cfg = tmp_path / "seed.yaml"
    cfg.write_text(SEED)
    out = subprocess.run([*VOICECALL, "serve", "--strict-config", "--config", str(cfg), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "openaiRealtime.model" in out.stderr and "gpt-4o-realtime" in out.stderr
    assert "openaiRealtime.voice" in out.stderr and "nova" in out.stderr
    assert "sk-test-seed-key" not in out.stderr


def test_seed_era_names_map_to_current_ones(tmp_path: Path) -> None:
    for model, expected in (("gpt-4o-realtime-preview-2024-12-17", "gpt-realtime"),
                            ("gpt-4o-mini-realtime-preview", "gpt-realtime-mini"), ("gpt-realtime-2", "gpt-realtime-2")):
        for voice, voice_expected in (("fable", "sage"), ("onyx", "ash"), ("cedar", "cedar")):
            cfg = load_config(None, env={}, overrides={"plugins.voice-call.openaiRealtime.model": model,
                                                       "plugins.voice-call.openaiRealtime.voice": voice})
            oai = cfg.voice_call.openai_realtime
            assert (oai.model, oai.voice) == (expected, voice_expected)
            assert len(cfg.warnings) == (model != expected) + (voice != voice_expected), cfg.warnings
