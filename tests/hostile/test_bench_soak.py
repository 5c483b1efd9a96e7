"""``voicecall bench soak`` with a tiny load: it runs, writes its JSON and plot, normal sessions complete without
errors and every hostile client is cut as expected."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voicecall.bench.soak import run


def test_bench_soak_tiny(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    args = argparse.Namespace(sessions=3, minutes=0.15, hostile_share=0.67, config=None, out=str(out))
    assert run(args) == 0
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").exists()
    assert data["completed"]["normal"] > 0 and not data["failed"].get("normal")
    assert sum(data["completed"].get(k, 0) for k in ("flood", "garbage", "silent", "slowloris", "vanish")) >= 2
    assert data["error_count"] == 0, data["errors"]
    assert len(data["samples"]) >= 10 and data["rss_peak_mb"] >= data["rss_start_mb"]
