"""``voicecall bench appends``: the local engine's WebSocket receive path at microphone rate.

For each N in ``--sessions``, N WebSocket sessions stream ``input_audio_buffer.append`` events in real time (one
every ``--append-ms``, 20 ms by default: 50 a second per session, as browsers and the SDKs send; 24 kHz PCM16 at a
noise floor of about -70 dBFS, so no turn starts and what is measured is the receive path and the engine's input
processing: VAD, buffering) to one server process (``voicecall serve``, started by this command on a free
127.0.0.1 port; ``--config echo`` by default). At the end each session sends ``input_audio_buffer.clear`` and waits
for ``input_audio_buffer.cleared``: since a session handles its events in order, that answer says every append
before it was processed.

Reported per N: appends handled per second (sent appends / time from the first append to the last ``cleared``),
the lag of the last ``cleared`` after the last append (how far behind the server was), the server process's CPU
(% of one core, per session, and µs per append), ``error`` events. Prints a table, writes JSON to ``--out`` and a
PNG beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import heapq
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.bench.common import cpu_seconds, machine_info, percentile, progress, report

RATE = 24000


class _Session:
    """One streaming client (frame-level, so that the load generator costs little)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset
        self.ws: Any = None
        self.created: asyncio.Future[None] | None = None
        self.cleared: asyncio.Future[float] | None = None
        self.errors: list[str] = []
        self.sent = 0

    def on_message(self, data: bytes, text: bool) -> None:
        head = data[:60]
        if b'"session.created"' in head and self.created is not None and not self.created.done():
            self.created.set_result(None)
        elif b'"input_audio_buffer.cleared"' in head and self.cleared is not None and not self.cleared.done():
            self.cleared.set_result(time.perf_counter())
        elif b'"type":"error"' in head or b'"type": "error"' in head:
            try:
                self.errors.append(str(json.loads(data)["error"].get("code")))
            except (ValueError, KeyError, AttributeError):
                self.errors.append("?")

    def on_writable(self) -> None:
        pass

    def on_closed(self, code: int | None, reason: str) -> None:
        for fut in (self.created, self.cleared):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(f"closed ({code} {reason})"))


def _chunks(append_ms: int, n: int = 50) -> list[bytes]:
    samples = RATE * append_ms // 1000
    pcm = np.random.default_rng(11).normal(0, 10, samples * n).astype("<i2")  # about -70 dBFS
    return [base64.b64encode(pcm[i * samples:(i + 1) * samples].tobytes()) for i in range(n)]


async def _trial(url: str, n: int, seconds: float, append_ms: int, pid: int | None) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from voicecall.transports.frames import FrameClientConnection

    loop = asyncio.get_running_loop()
    period = append_ms / 1000
    rng = random.Random(n)
    sessions = [_Session(rng.random() * period) for _ in range(n)]
    sem = asyncio.Semaphore(16)

    async def open_one(s: _Session) -> None:
        async with sem:
            s.created = loop.create_future()
            s.ws = await connect(url, max_size=None, compression=None, open_timeout=30, ping_interval=None,
                                 create_connection=FrameClientConnection)
            s.ws.attach(s)
            await asyncio.wait_for(s.created, 30)

    await asyncio.gather(*(open_one(s) for s in sessions))
    chunks = _chunks(append_ms)
    head = b'{"type":"input_audio_buffer.append","audio":"'
    periods = max(1, round(seconds / period))
    cpu0 = cpu_seconds(pid) if pid else None
    t0 = loop.time() + 0.3
    first = time.perf_counter() + 0.3
    for k in range(periods):
        frame = head + chunks[k % len(chunks)] + b'"}'
        due = [(t0 + k * period + s.offset, i, s) for i, s in enumerate(sessions)]
        heapq.heapify(due)
        while due:
            at = due[0][0]
            delay = at - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            while due and due[0][0] <= at + 0.001:
                s = heapq.heappop(due)[2]
                s.ws.send_frame(frame)
                s.sent += 1
    last_sent = time.perf_counter()
    for s in sessions:
        s.cleared = loop.create_future()
        s.ws.send_frame(b'{"type":"input_audio_buffer.clear","event_id":"bench_end"}')
    done = await asyncio.gather(*(asyncio.wait_for(s.cleared, 60) for s in sessions if s.cleared is not None),
                                return_exceptions=True)
    cpu1 = cpu_seconds(pid) if pid else None
    ends = [d for d in done if isinstance(d, float)]
    await asyncio.gather(*(s.ws.close() for s in sessions), return_exceptions=True)
    sent = sum(s.sent for s in sessions)
    wall = (max(ends) if ends else time.perf_counter()) - first
    lags = [(e - last_sent) * 1000 for e in ends]
    row: dict[str, Any] = {
        "sessions": n, "appends_sent": sent, "appends_per_s": sent / wall if wall > 0 else None,
        "expected_per_s": n * 1000 / append_ms, "all_cleared": len(ends) == n,
        "lag_ms": {"p50": percentile(lags, 50), "max": max(lags) if lags else None},
        "errors": sorted({e for s in sessions for e in s.errors}),
    }
    if cpu0 is not None and cpu1 is not None and wall > 0:
        secs = cpu1 - cpu0
        row["server_cpu_percent"] = secs / wall * 100
        row["server_cpu_percent_per_session"] = secs / wall * 100 / n
        row["server_cpu_us_per_append"] = secs / sent * 1e6 if sent else None
    return row


def run(args: argparse.Namespace) -> int:
    from voicecall.bench.sessions import ServerProcess

    counts = sorted({int(n) for n in args.sessions})
    append_ms = int(args.append_ms)
    rows = []
    with ServerProcess(args.config or "echo", max(counts)) as srv:
        assert srv.proc is not None
        for n in counts:
            progress(f"{n} sessions x {1000 // append_ms} appends/s for {args.seconds:g} s…")
            rows.append(asyncio.run(_trial(srv.ws + "?model=gpt-realtime", n, float(args.seconds), append_ms,
                                           srv.proc.pid)))
    data = {"benchmark": "appends", "machine": machine_info(), "settings": {
        "append_ms": append_ms, "seconds": float(args.seconds), "config": args.config or "echo",
        "audio": "24 kHz PCM16 noise at about -70 dBFS (no turn)"}, "rows": rows}
    report(data, Path(args.out), print_table, plot)
    return 0 if all(r["all_cleared"] and not r["errors"] for r in rows) else 1


def print_table(data: dict[str, Any]) -> None:
    s = data["settings"]
    print(f"\nengine WebSocket appends: one {s['append_ms']} ms append every {s['append_ms']} ms per session, "
          f"{s['seconds']:g} s, config {s['config']}")
    print(f"{'sessions':>8} {'appends/s':>10} {'expected':>9} {'lag p50':>8} {'lag max':>8} {'srv cpu':>8} "
          f"{'per sess':>9} {'µs/append':>10}  errors")
    for r in data["rows"]:
        def f(v: float | None, spec: str) -> str:
            return "n/a" if v is None else format(v, spec)

        print(f"{r['sessions']:>8} {f(r['appends_per_s'], '.0f'):>10} {r['expected_per_s']:>9.0f} "
              f"{f(r['lag_ms']['p50'], '.1f'):>8} {f(r['lag_ms']['max'], '.1f'):>8} "
              f"{f(r.get('server_cpu_percent'), '.1f'):>7}% {f(r.get('server_cpu_percent_per_session'), '.2f'):>8}% "
              f"{f(r.get('server_cpu_us_per_append'), '.1f'):>10}  {', '.join(r['errors']) or '-'}")


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    ns = [r["sessions"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ns, [r["appends_per_s"] or 0 for r in rows], "o-", label="handled")
    ax1.plot(ns, [r["expected_per_s"] for r in rows], "k:", label="sent (real time)")
    ax1.set_xlabel("sessions")
    ax1.set_ylabel("appends per second")
    ax1.legend()
    ax2.plot(ns, [r.get("server_cpu_percent") or 0 for r in rows], "s-", color="tab:red", label="server CPU %")
    ax2.set_xlabel("sessions")
    ax2.set_ylabel("% of one core")
    ax3 = ax2.twinx()
    ax3.plot(ns, [r.get("server_cpu_us_per_append") or 0 for r in rows], "^--", color="tab:purple",
             label="µs per append")
    ax3.set_ylabel("CPU µs per append")
    fig.suptitle(f"engine WebSocket receive path, {1000 // data['settings']['append_ms']} appends/s per session")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
