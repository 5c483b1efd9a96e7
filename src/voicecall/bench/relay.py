"""``voicecall bench relay``: what the OpenAI gateway's WebSocket relay adds, per message and in throughput.

One run, three processes, everything on 127.0.0.1:

* an **echo upstream** (a minimal Realtime-shaped WebSocket server: ``session.created``; ``session.update`` ->
  ``session.updated``; each ``input_audio_buffer.append`` answered at once by a ``response.output_audio.delta``
  carrying the same audio and the append's ``event_id``);
* the **gateway** (``create_app`` with provider ``openai-realtime``, ``baseUrl`` = the echo upstream, history on in
  a temporary SQLite file, as a default deployment; uvicorn with the settings of ``voicecall serve``);
* the **load generator** (this process): ``--clients`` concurrent WebSocket clients, each streaming 24 kHz PCM16
  in real time as one 100 ms append (6.4 kB of base64) every 100 ms; the clients start at random points of the
  100 ms period, as independent callers would.

Each append's round trip (send -> its echoed delta back) is measured, first **direct** to the echo upstream, then
**through the relay**, with the same clients and load. The relay's added latency per message is the difference
of the two distributions (p50 and p99), its throughput the messages and bytes per second delivered. The relay's
CPU (of one core) is read from ``/proc``. Prints a table, writes JSON to ``--out`` and a PNG plot beside it.

The gateway, the system under test, gets a CPU of its own (``sched_setaffinity``); the load generator and the echo
upstream share the others, as callers and OpenAI would be on other machines in a deployment (``--no-pin``: all three
share every CPU, and the gateway's wake-ups queue behind the load generator's).

Direct and relayed streams are all connected for the whole run and take turns in 1 s rounds (ABBA order), so that
background load on the machine hits both modes alike; ``added_latency_ms.p99_paired_median`` (the median over
adjacent round pairs of the p99 difference) is the estimate least disturbed by a burst of other work. The processes
run at a raised priority (nice -10) when allowed.

Developer aids (environment): ``VOICECALL_BENCH_UVICORN_WS`` picks uvicorn's WebSocket implementation for the
gateway (default ``auto``, as ``voicecall serve``); ``VOICECALL_BENCH_PROFILE=/path.prof`` writes a cProfile of
the gateway process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.bench.common import free_port, machine_info, percentile, progress, write_json

APPEND_MS = 100
SAMPLES = 24000 * APPEND_MS // 1000
ROUND_S = 1.0
GRACE_S = 2.0
BENCH_KEY = "sk-bench-not-a-real-key"


# ------------------------------------------------------------------------------------------ child processes
def _echo_server(port: int) -> None:
    """The echo upstream (child process)."""
    from websockets.asyncio.server import serve

    async def handler(ws: Any) -> None:
        n = 0
        await ws.send(json.dumps({"type": "session.created", "event_id": "event_0", "session": {
            "type": "realtime", "object": "realtime.session", "model": "gpt-realtime", "instructions": ""}}))
        async for msg in ws:
            if not isinstance(msg, str):
                continue
            event = json.loads(msg)
            etype = event.get("type")
            n += 1
            if etype == "input_audio_buffer.append":
                await ws.send(json.dumps({"type": "response.output_audio.delta", "event_id": event.get("event_id"),
                                          "response_id": "resp_bench", "item_id": "item_bench", "output_index": 0,
                                          "content_index": 0, "delta": event.get("audio", "")},
                                         separators=(",", ":")))
            elif etype == "session.update":
                await ws.send(json.dumps({"type": "session.updated", "event_id": f"event_{n}",
                                          "session": {"type": "realtime", "object": "realtime.session",
                                                      "model": "gpt-realtime", **(event.get("session") or {})}}))

    import logging

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # the readiness probe is not a WebSocket

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, max_size=None, compression=None):
            await asyncio.Future()

    asyncio.run(main())


def _gateway(port: int, upstream_port: int, store_url: str, clients: int, ws_impl: str = "auto") -> None:
    """The gateway (child process), configured and served as ``voicecall serve`` would."""
    import logging

    import uvicorn

    from voicecall.config import load_config
    from voicecall.server.app import create_app, uvicorn_options

    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(None, env={}, overrides={
        "server.host": "127.0.0.1", "server.port": port, "server.maxSessions": clients + 8,
        "store.url": store_url, "server.logLevel": "warning",
        "plugins.voice-call.provider": "openai-realtime",
        "plugins.voice-call.openaiRealtime.apiKey": BENCH_KEY,
        "plugins.voice-call.openaiRealtime.baseUrl": f"http://127.0.0.1:{upstream_port}/v1",
    })
    profile_to = os.environ.get("VOICECALL_BENCH_PROFILE")
    if profile_to:  # developer aid: where the gateway spends its CPU, written when the benchmark stops it
        import cProfile
        import signal
        import sys

        prof = cProfile.Profile()

        def dump(*_: Any) -> None:
            prof.disable()
            prof.dump_stats(profile_to)
            sys.exit(0)

        signal.signal(signal.SIGTERM, dump)
        prof.enable()
    options = uvicorn_options(cfg)
    if ws_impl != "auto":
        options["ws"] = ws_impl
    uvicorn.run(create_app(cfg), host="127.0.0.1", port=port, log_level="warning", **options)


def _raise_priority(target: int = -10) -> int:
    """Run the benchmark's processes (children inherit it) at a higher CPU priority when allowed, so that other
    work on the machine disturbs the measurement less. Returns the niceness in force."""
    try:
        current = os.nice(0)
        if current > target:
            os.nice(target - current)
    except OSError:
        pass
    return os.nice(0)


def _wait_port(port: int, proc: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError("a benchmark server process died during start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def _pin(gateway_pid: int | None, echo_pid: int | None) -> dict[str, list[int]] | None:
    """Give the gateway (the system under test) a core of its own; the load generator (this process) and the echo
    upstream share the others, as callers and OpenAI would be on other machines in a deployment. ``None`` when the
    machine has fewer than 2 usable CPUs or affinity cannot be set."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or gateway_pid is None or echo_pid is None:
            return None
        mine, theirs = cpus[:-1], cpus[-1:]
        os.sched_setaffinity(gateway_pid, theirs)
        os.sched_setaffinity(echo_pid, mine)
        os.sched_setaffinity(0, mine)
    except (AttributeError, OSError):
        return None
    return {"gateway": theirs, "load_generator_and_echo": mine}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ------------------------------------------------------------------------------------------ load generator
class _Client:
    """One stream: a WebSocket to one mode's URL, its pending appends and measured round trips."""

    def __init__(self, index: int, mode: str) -> None:
        self.index = index
        self.mode = mode
        self.sent: dict[int, tuple[float, int]] = {}  # seq -> (perf_counter at send, round)
        self.latencies: list[tuple[int, float]] = []  # (round, ms)
        self.received_bytes = 0
        self.errors: list[str] = []


def _schedule(seconds: float) -> list[str]:
    """Which mode streams in each round: one warm-up round each, then direct/relay in ABBA order."""
    n = max(1, int(np.ceil(seconds / ROUND_S)))
    rounds = ["direct", "relay"]
    for k in range(n):
        rounds += ["direct", "relay"] if k % 2 == 0 else ["relay", "direct"]
    return rounds


async def _run_alternating(urls: dict[str, str], clients: int, seconds: float,
                           audio: list[str]) -> tuple[list[str], list[_Client]]:
    """Open ``clients`` streams per mode, then stream in alternating rounds (:func:`_schedule`): both modes see
    the same machine, minute by minute, so background load inflates neither alone."""
    from websockets.asyncio.client import connect

    schedule = _schedule(seconds)
    progress(f"{clients} streams direct + {clients} through the relay; {len(schedule)} rounds of {ROUND_S:g} s, "
             "alternating (ABBA)…")
    sem = asyncio.Semaphore(20)

    async def open_one(url: str) -> Any:
        async with sem:
            ws = await connect(url, max_size=None, compression=None, open_timeout=30)
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("type") != "session.created":
                raise RuntimeError(f"unexpected first event {first.get('type')}")
            return ws

    states = [_Client(i, mode) for mode in ("direct", "relay") for i in range(clients)]
    conns = list(await asyncio.gather(*(open_one(urls[st.mode]) for st in states)))
    loop = asyncio.get_running_loop()
    t_start = loop.time() + 0.5
    period = APPEND_MS / 1000

    async def sender(ws: Any, st: _Client) -> None:
        offset = random.Random(st.index * 2 + (st.mode == "relay")).random() * period
        seq = 0
        while True:
            at = offset + seq * period
            rnd = int(at / ROUND_S)
            if rnd >= len(schedule):
                return
            if schedule[rnd] == st.mode:
                await asyncio.sleep(max(0.0, t_start + at - loop.time()))
                chunk = audio[seq % len(audio)]
                text = '{"type":"input_audio_buffer.append","audio":"' + chunk + f'","event_id":"c{st.index}_{seq}"}}'
                st.sent[seq] = (time.perf_counter(), rnd)
                await ws.send(text)
            seq += 1

    async def receiver(ws: Any, st: _Client) -> None:
        marker = f'"event_id":"c{st.index}_'
        try:
            async for msg in ws:
                now = time.perf_counter()
                i = msg.find(marker)
                if i < 0:
                    continue
                j = msg.find('"', i + len(marker))
                sent = st.sent.pop(int(msg[i + len(marker):j]), None)
                if sent is not None:
                    st.latencies.append((sent[1], (now - sent[0]) * 1000))
                    st.received_bytes += len(msg)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            st.errors.append(type(exc).__name__)

    receivers = [asyncio.ensure_future(receiver(ws, st)) for ws, st in zip(conns, states, strict=True)]
    await asyncio.gather(*(sender(ws, st) for ws, st in zip(conns, states, strict=True)))
    await asyncio.sleep(GRACE_S)
    for ws in conns:
        await ws.close()
    await asyncio.gather(*receivers, return_exceptions=True)
    return schedule, states


def _stats(schedule: list[str], states: list[_Client], mode: str) -> dict[str, Any]:
    """Pooled statistics of one mode over its measured rounds (warm-up rounds 0 and 1 left out)."""
    measured = [r for r in range(2, len(schedule)) if schedule[r] == mode]
    mine = [st for st in states if st.mode == mode]
    lat = [ms for st in mine for r, ms in st.latencies if r >= 2]
    per_round: dict[int, list[float]] = {}
    for st in mine:
        for r, ms in st.latencies:
            if r >= 2:
                per_round.setdefault(r, []).append(ms)
    active = len(measured) * ROUND_S
    return {
        "clients": len(mine), "seconds": active, "messages": len(lat),
        "lost": sum(len(st.sent) for st in mine), "errors": sorted({e for st in mine for e in st.errors}),
        "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                       "p999": percentile(lat, 99.9), "max": max(lat) if lat else None,
                       "mean": float(np.mean(lat)) if lat else None},
        "throughput": {"messages_per_s": len(lat) / active if active else 0.0,
                       "echo_mb_per_s": sum(st.received_bytes for st in mine) / (active + 2 * ROUND_S) / 1e6,
                       "expected_messages_per_s": len(mine) * 1000 / APPEND_MS},
        "p99_per_round": {str(r): percentile(v, 99) for r, v in sorted(per_round.items())},
        "_samples": lat,
    }


def _paired_p99(schedule: list[str], direct: dict[str, Any], relay: dict[str, Any]) -> float | None:
    """Median over adjacent (direct, relay) round pairs of relay p99 minus direct p99: a background-load burst
    spoils one pair, not the estimate."""
    diffs = []
    for r in range(2, len(schedule) - 1, 2):
        a, b = str(r), str(r + 1)
        d = direct["p99_per_round"].get(a) or direct["p99_per_round"].get(b)
        x = relay["p99_per_round"].get(a) or relay["p99_per_round"].get(b)
        if d is not None and x is not None:
            diffs.append(x - d)
    return float(np.median(diffs)) if diffs else None


def _audio_chunks(n: int = 50) -> list[str]:
    """Base64 100 ms chunks of a 24 kHz speech-like signal (a harmonic tone with noise)."""
    import base64

    rng = np.random.default_rng(3)
    t = np.arange(SAMPLES * n) / 24000
    pcm = 4000 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 300, t.shape)
    pcm = np.clip(pcm, -32768, 32767).astype("<i2")
    return [base64.b64encode(pcm[i * SAMPLES:(i + 1) * SAMPLES].tobytes()).decode() for i in range(n)]


# ------------------------------------------------------------------------------------------ entry point
def run(args: argparse.Namespace) -> int:
    """Run the benchmark: ``args.clients`` streams per mode, ``args.seconds`` of measured streaming per mode,
    results to ``args.out`` (JSON) and a PNG beside it."""
    clients = int(args.clients)
    seconds = float(args.seconds)
    out = Path(args.out)
    niceness = _raise_priority()
    ctx = multiprocessing.get_context("spawn")
    echo_port, gw_port = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="voicecall-bench-relay-")
    store_url = getattr(args, "store", None) or f"sqlite:///{tmp}/gateway.db"
    ws_impl = getattr(args, "ws", None) or os.environ.get("VOICECALL_BENCH_UVICORN_WS", "auto")
    echo = ctx.Process(target=_echo_server, args=(echo_port,), daemon=True, name="bench-echo")
    gateway = ctx.Process(target=_gateway, args=(gw_port, echo_port, store_url, clients, ws_impl), daemon=True,
                          name="bench-gateway")
    echo.start()
    gateway.start()
    pinning = _pin(gateway.pid, echo.pid) if getattr(args, "pin", True) else None
    load_before = os.getloadavg()
    try:
        _wait_port(echo_port, echo)
        _wait_port(gw_port, gateway)
        assert echo.pid is not None and gateway.pid is not None
        if load_before[0] > 1.0:
            progress(f"warning: load average {load_before[0]:.1f} before the run: other processes compete for the "
                     "2 cores and inflate the tails of both modes")
        urls = {"direct": f"ws://127.0.0.1:{echo_port}/v1/realtime?model=gpt-realtime",
                "relay": f"ws://127.0.0.1:{gw_port}/v1/realtime?model=gpt-realtime"}
        e0, g0, t0 = _cpu_seconds(echo.pid), _cpu_seconds(gateway.pid), time.monotonic()
        schedule, states = asyncio.run(_run_alternating(urls, clients, seconds, _audio_chunks()))
        wall = time.monotonic() - t0
        relay_active = schedule.count("relay") * ROUND_S
        cpu = {"relay_gateway": (_cpu_seconds(gateway.pid) - g0) / relay_active * 100,
               "echo_upstream": (_cpu_seconds(echo.pid) - e0) / wall * 100}
    finally:
        for proc in (gateway, echo):
            proc.terminate()
            proc.join(5)
    direct, relay = _stats(schedule, states, "direct"), _stats(schedule, states, "relay")
    result = _report(clients, seconds, direct, relay, cpu)
    result["added_latency_ms"]["p99_paired_median"] = _paired_p99(schedule, direct, relay)
    result["schedule"] = schedule
    result["loadavg_before"] = list(load_before)
    result["loadavg_after"] = list(os.getloadavg())
    result["settings"]["uvicorn_ws"] = ws_impl
    result["settings"]["niceness"] = niceness
    result["settings"]["cpu_pinning"] = pinning
    samples = {"direct": direct.pop("_samples"), "relay": relay.pop("_samples")}
    paired = result["added_latency_ms"]["p99_paired_median"]
    if paired is not None:
        print(f"added p99, median over {len(schedule) // 2 - 1} adjacent round pairs: {paired:+.3f} ms")
    write_json(out, result)
    png = out.with_suffix(".png")
    _plot(png, samples, result)
    print(f"\nwrote {out} and {png}")
    return 0 if not relay["lost"] and not relay["errors"] else 1


def _report(clients: int, seconds: float, direct: dict[str, Any], relay: dict[str, Any],
            cpu: dict[str, float]) -> dict[str, Any]:
    def added(key: str) -> float | None:
        a, b = relay["latency_ms"][key], direct["latency_ms"][key]
        return None if a is None or b is None else a - b

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    result: dict[str, Any] = {
        "benchmark": "relay", "machine": machine_info(),
        "settings": {"clients": clients, "seconds": seconds, "append_ms": APPEND_MS, "sample_rate": 24000,
                     "append_base64_chars": SAMPLES * 2 * 4 // 3, "compression": "none",
                     "history": "sqlite (relay conversations recorded)"},
        "direct": {k: v for k, v in direct.items() if k != "_samples"},
        "relay": {k: v for k, v in relay.items() if k != "_samples"},
        "added_latency_ms": {"p50": added("p50"), "p90": added("p90"), "p99": added("p99"), "mean": added("mean")},
        "ratio_relay_to_direct": {
            "latency_p50": ratio(relay["latency_ms"]["p50"], direct["latency_ms"]["p50"]),
            "latency_p99": ratio(relay["latency_ms"]["p99"], direct["latency_ms"]["p99"]),
            "throughput": ratio(relay["throughput"]["messages_per_s"], direct["throughput"]["messages_per_s"]),
        },
        "cpu_percent_of_one_core": cpu,
        "target": {"added_p99_ms_max": 1.0},
    }
    add99 = result["added_latency_ms"]["p99"]
    result["target"]["met"] = add99 is not None and add99 <= 1.0
    rows = [("", "direct", "relay", "added", "relay/direct")]
    for key in ("p50", "p90", "p99", "p999", "max", "mean"):
        d, r = direct["latency_ms"][key], relay["latency_ms"][key]
        rows.append((f"round trip {key} (ms)", f"{d:.3f}", f"{r:.3f}", f"{r - d:+.3f}", f"{r / d:.2f}x"))
    dm, rm = direct["throughput"]["messages_per_s"], relay["throughput"]["messages_per_s"]
    rows.append(("messages/s", f"{dm:.0f}", f"{rm:.0f}", f"{rm - dm:+.0f}", f"{rm / dm:.3f}x"))
    rows.append(("echo MB/s", f"{direct['throughput']['echo_mb_per_s']:.2f}",
                 f"{relay['throughput']['echo_mb_per_s']:.2f}", "", ""))
    rows.append(("lost / errors", f"{direct['lost']} / {len(direct['errors'])}",
                 f"{relay['lost']} / {len(relay['errors'])}", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print(f"\nrelay benchmark: {clients} concurrent streams x {seconds:g} s, one 100 ms append "
          f"(24 kHz PCM16) every 100 ms each, echoed by the upstream")
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print(f"gateway CPU {cpu['relay_gateway']:.0f}% of one core while relaying "
          f"({cpu['relay_gateway'] / clients:.2f}% per stream); echo upstream {cpu['echo_upstream']:.0f}%")
    verdict = "met" if result["target"]["met"] else "NOT met"
    print(f"added latency p50 {result['added_latency_ms']['p50']:+.3f} ms, p99 {add99:+.3f} ms "
          f"(target <= 1 ms at p99: {verdict})")
    return result


def _plot(path: Path, samples: dict[str, list[float]], result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in (("direct", "tab:blue"), ("relay", "tab:orange")):
        vals = np.sort(np.asarray(samples[name]))
        if len(vals) == 0:
            continue
        ax1.plot(vals, np.arange(1, len(vals) + 1) / len(vals), label=name, color=color)
        per_r = result[name]["p99_per_round"]
        ax2.plot([int(k) for k in per_r], list(per_r.values()), marker="o", ms=3, ls="", label=f"{name} p99",
                 color=color)
    ax1.set_xscale("log")
    ax1.set_xlabel("round trip per message (ms, log)")
    ax1.set_ylabel("fraction of messages")
    ax1.axhline(0.99, color="grey", lw=0.6, ls="--")
    ax1.legend()
    ax1.set_title("round-trip latency CDF")
    ax2.set_xlabel("round (1 s each; direct and relay alternate)")
    ax2.set_ylabel("p99 round trip (ms)")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.set_title("p99 per round")
    s = result["settings"]
    add = result["added_latency_ms"]
    fig.suptitle(f"relay: {s['clients']} streams, 100 ms appends — added p50 {add['p50']:+.3f} ms, "
                 f"p99 {add['p99']:+.3f} ms")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
