"""``voicecall bench relay`` runs end to end with a tiny load: the echo upstream, the voicecall gateway, a compared
relay (a second gateway given by URL; the shipped Node relay when Node.js is installed), alternating rounds, CPU of
each relay read from /proc, JSON and plot written. No timing is asserted (shared, noisy machine)."""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voicecall.bench import relay as bench
from voicecall.server.thread import free_port


def _args(tmp_path: Path, **kw: Any) -> argparse.Namespace:
    base = {"clients": 3, "seconds": 1.0, "append_ms": 20, "compare": "none", "upstream_port": None,
            "history": "on", "out": str(tmp_path / "relay.json"), "pin": False, "priority": False}
    base.update(kw)
    return argparse.Namespace(**base)


def _check(tmp_path: Path, peer: str) -> dict[str, Any]:
    result = json.loads((tmp_path / "relay.json").read_text())
    assert (tmp_path / "relay.png").stat().st_size > 0
    assert list(result["modes"]) == ["direct", "voicecall", peer]
    assert sorted(set(result["schedule"])) == sorted(["direct", "voicecall", peer])
    for mode, stats in result["modes"].items():
        assert stats["messages"] == 3 * 50, mode  # 3 clients x 1 s at 50 appends/s, every one echoed
        assert stats["lost"] == 0 and stats["errors"] == [], mode
        assert stats["latency_ms"]["p50"] > 0
        assert set(stats["tcp_per_message"]) == {"OutSegs", "PureAcksIn", "DelayedACKs"}, mode
        assert 0 <= stats["calm_rounds"] <= 1 and "p99_calm_rounds" in stats, mode  # (rounds without stolen time)
    for mode in ("voicecall", peer):
        assert result["modes"][mode]["cpu"]["seconds"] >= 0
        slowest = result["modes"][mode]["slowest_rounds"]  # with what the relay and the measurers went through
        assert slowest and {"relay_major_faults", "relay_involuntary_switches", "load_generator_involuntary_switches",
                            "echo_involuntary_switches", "load_generator_late_ms", "load_generator_gc_ms",
                            "stolen_ms"} <= set(slowest[0])
    rounds = len(result["schedule"])  # the load generator's own pauses, every round
    assert len(result["load_generator_pauses"]["late_ms"]) == len(result["load_generator_pauses"]["gc_ms"]) == rounds
    assert set(result["voicecall_vs_peer"]) >= {"cpu_per_message", "added_p99"}
    assert "p99_calm_rounds" in result["added_latency_ms"][peer]
    return result


@contextlib.contextmanager
def _peer_gateway() -> Iterator[tuple[str, int]]:
    """A second voicecall gateway (history off) to compare with: its URL, and the echo upstream port it expects."""
    upstream_port, peer_port = free_port(), free_port()
    ctx = multiprocessing.get_context("spawn")
    peer = ctx.Process(target=bench._gateway, args=(peer_port, upstream_port, "none", 8), daemon=True)
    peer.start()
    try:
        bench._wait_port(peer_port, peer.is_alive)
        yield f"ws://127.0.0.1:{peer_port}/v1/realtime?model=gpt-realtime", upstream_port
    finally:
        peer.terminate()
        peer.join(5)


def test_compare_with_a_relay_given_by_url(tmp_path: Path) -> None:
    """The compared relay is a second voicecall gateway (history off) on the bench's echo upstream port."""
    with _peer_gateway() as (url, upstream_port):
        assert bench.run(_args(tmp_path, compare=url, upstream_port=upstream_port)) == 0
    result = _check(tmp_path, "compare")
    assert result["settings"]["append_base64_chars"] == 1280


def test_compare_with_the_node_relay(tmp_path: Path) -> None:
    if not bench.node_available() or not (bench.NODE_RELAY / "node_modules" / "ws").is_dir():
        message = "Node.js or bench/node-relay/node_modules (make install runs npm ci) not available"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs Node (.ci/run)
        pytest.skip(message)
    assert bench.run(_args(tmp_path, compare="node", history="off")) == 0
    _check(tmp_path, "node")


def test_idle_sessions_cost_side_by_side(tmp_path: Path) -> None:
    """``--idle N``: N silent sessions per relay (here the gateway and a second gateway given by URL) stay open
    through both windows and each relay's CPU with none and with them is reported, per session too."""
    with _peer_gateway() as (url, upstream_port):
        assert bench.run(_args(tmp_path, compare=url, upstream_port=upstream_port, idle=4, seconds=0.5)) == 0
    result = json.loads((tmp_path / "relay.json").read_text())
    assert (tmp_path / "relay.png").stat().st_size > 0
    assert result["benchmark"] == "relay-idle" and result["settings"]["idle_sessions"] == 4
    assert set(result["relays"]) == {"voicecall", "compare"} and result["errors"] == []
    for relay in result["relays"].values():
        assert relay["sessions_open_at_end"] == 4
        assert relay["cpu_ms_per_s_no_sessions"] >= 0 and relay["cpu_ms_per_s_idle"] >= 0
        assert relay["us_per_idle_session_per_s"] == pytest.approx(
            (relay["cpu_ms_per_s_idle"] - relay["cpu_ms_per_s_no_sessions"]) / 4 * 1000)
        assert relay["us_per_s_idle_window_per_session"] == pytest.approx(relay["cpu_ms_per_s_idle"] / 4 * 1000)
    assert "voicecall_minus_peer_us_per_idle_session_per_s" in result


async def test_hot_path_loop_relays_every_frame() -> None:
    """``python -m voicecall.bench.relay_hotpath``: every append it feeds goes upstream and every delta to the
    client, one write each (the figure it prints is only the CPU those took)."""
    from voicecall.bench.relay_hotpath import ROUNDS, measure

    result = await measure(100)
    relayed = 50 * 20 + 100 * ROUNDS  # warm-up + rounds
    assert result["relayed_up"] == result["relayed_down"] == relayed
    assert result["upstream_writes"] == result["client_writes"] == relayed
    assert result["us_per_pair"] > 0


def test_append_ms_outside_a_round_is_refused_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from voicecall.bench.cli import add_bench_parser

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "relay", "--append-ms", "1000"])
    assert args.append_ms == 1000
    for bad in ("5000", "0"):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", "relay", "--append-ms", bad])
        assert "must be 1-1000 ms (the benchmark runs in 1 s rounds)" in capsys.readouterr().err


def test_every_bench_refuses_a_folder_as_its_json_output_before_running(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from voicecall.bench.cli import add_bench_parser

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    for name in ("latency", "sessions", "appends", "stages", "stt", "turns", "answers", "relay", "cluster", "cost", "soak"):
        assert parser.parse_args(["bench", name, "--out", str(tmp_path / "r.json")]).out == str(tmp_path / "r.json")
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", name, "--out", str(tmp_path)])
        assert f"{tmp_path} is a folder: give the JSON file to write" in capsys.readouterr().err
