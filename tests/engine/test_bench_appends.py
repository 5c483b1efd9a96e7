"""``voicecall bench appends`` runs end to end with a tiny load against a real server process (echo stack): every
append handled (the final ``input_audio_buffer.cleared`` arrives), the server's CPU read, JSON and plot written.
No timing is asserted (shared, noisy machine)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voicecall.bench import appends


def test_bench_appends_with_a_tiny_load(tmp_path: Path) -> None:
    out = tmp_path / "appends.json"
    args = argparse.Namespace(sessions=[2, 1], seconds=0.5, append_ms=20, config="echo", out=str(out))
    assert appends.run(args) == 0
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert [r["sessions"] for r in data["rows"]] == [1, 2]
    for row in data["rows"]:
        assert row["all_cleared"] and row["errors"] == []
        assert row["appends_sent"] == row["sessions"] * 25  # 0.5 s at 50 appends/s
        assert row["server_cpu_percent"] is not None and row["server_cpu_us_per_append"] > 0
