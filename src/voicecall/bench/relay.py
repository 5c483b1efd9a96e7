"""``voicecall bench relay``: what the OpenAI gateway's WebSocket relay adds, per message, in CPU and in latency,
measured side by side with another relay (by default the one a Node user would write) in the same run.

Processes, everything on 127.0.0.1:

* an **echo upstream** (a Realtime-shaped WebSocket server: ``session.created``; ``session.update`` ->
  ``session.updated``; each ``input_audio_buffer.append`` answered at once by a ``response.output_audio.delta``
  carrying the same audio and the append's ``event_id``);
* the **voicecall gateway** (``create_app`` with provider ``openai-realtime``, ``baseUrl`` = the echo upstream,
  history on in a temporary SQLite file as in a default deployment, uvicorn with the settings of ``voicecall
  serve``);
* the **compared relay** (``--compare``): ``node`` (default when Node.js is installed) starts
  ``bench/node-relay/relay.js`` (express + ``ws`` 8: one upstream socket per client, frames forwarded both ways,
  what a Node user would write), a ``ws://`` URL uses a relay you started yourself (point it at the echo upstream:
  ``--upstream-port`` fixes its port), ``none`` compares with nothing;
* the **load generator** (this process): ``--clients`` WebSocket clients per mode, each streaming 24 kHz PCM16 in
  real time as one append every ``--append-ms`` (20 ms by default, as browsers and the SDKs send microphone audio:
  50 messages a second, 1,280 base64 characters each), starting at random points of the period.

Every mode's clients are connected for the whole run; the modes take turns in 1 s rounds (direct, voicecall and
the compared relay in rotating order, every order equally often), so that background load on the machine hits
all of them alike. Each append's round trip (send -> its echoed delta back) is measured; a relay's added latency is
its distribution minus the direct one. The CPU of each relay process is read from ``/proc`` at every round
boundary, so each relay is charged only for its own rounds: CPU per relayed message (one append up and its delta
down) and % of one core. By default both relays share one CPU of their own (they never run at the same time) and
the load generator and the echo upstream share the others, as callers and OpenAI would be on other machines
(``--no-pin``: everything shares every CPU). The processes run at a raised priority (nice -10) when allowed;
``--realtime`` runs them under ``SCHED_RR`` instead, the way to measure latency on a machine busy with other work.

Prints a table, writes JSON to ``--out`` and a PNG beside it. Developer aids (environment):
``VOICECALL_BENCH_UVICORN_WS`` picks uvicorn's WebSocket protocol for the gateway (default: voicecall's);
``VOICECALL_BENCH_PROFILE=/path.prof`` writes a cProfile of the gateway process; ``VOICECALL_BENCH_PAUSES=/path.json``
its garbage collections and event-loop stalls (:func:`_serve_watching_pauses`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import uvloop

from voicecall.bench.common import cpu_seconds, free_port, machine_info, percentile, progress, write_json

ROUND_S = 1.0
GRACE_S = 2.0
BENCH_KEY = "sk-bench-not-a-real-key"
RATE = 24000
NODE_RELAY = Path(__file__).resolve().parents[3] / "bench" / "node-relay"
"""The Node relay shipped with the sources (``bench/node-relay``: package.json, lock, relay.js)."""
_EVENT_ID = re.compile(rb'"event_id"\s*:\s*"([^"\\]{0,64})"')


# ------------------------------------------------------------------------------------------ child processes
def _echo_server(port: int) -> None:
    """The echo upstream (child process): frame-level, so that it costs little next to the relays it serves."""
    import logging

    from websockets.asyncio.server import serve

    from voicecall.protocol.peek import peek_append
    from voicecall.transports.frames import FrameServerConnection

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # the readiness probe is not a WebSocket
    head = b'{"type":"response.output_audio.delta","event_id":"'
    mid = b'","response_id":"resp_bench","item_id":"item_bench","output_index":0,"content_index":0,"delta":"'

    class Echo:
        def __init__(self, ws: FrameServerConnection) -> None:
            self.ws = ws
            self.n = 0

        def on_message(self, data: bytes, text: bool) -> None:
            self.n += 1
            hit = peek_append(data) if text else None
            if hit is not None:
                m = _EVENT_ID.search(data, hit[1])
                self.ws.send_frame(head + (m.group(1) if m else b"") + mid + data[hit[0]:hit[1]] + b'"}')
                return
            try:
                event = json.loads(data)
            except ValueError:
                return
            if isinstance(event, dict) and event.get("type") == "session.update":
                session = {"type": "realtime", "object": "realtime.session", "model": "gpt-realtime",
                           **(event.get("session") or {})}
                self.ws.send_frame(json.dumps({"type": "session.updated", "event_id": f"event_{self.n}",
                                               "session": session}).encode())

        def on_writable(self) -> None:
            pass

        def on_closed(self, code: int | None, reason: str) -> None:
            pass

    async def handler(ws: Any) -> None:
        assert isinstance(ws, FrameServerConnection)
        ws.send_frame(json.dumps({"type": "session.created", "event_id": "event_0", "session": {
            "type": "realtime", "object": "realtime.session", "model": "gpt-realtime", "instructions": ""}}).encode())
        ws.attach(Echo(ws))
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, max_size=None, compression=None, ping_interval=None,
                         create_connection=FrameServerConnection):
            await asyncio.Future()

    import uvloop
    uvloop.run(main())


def _gateway(port: int, upstream_port: int, store_url: str, clients: int, ws_impl: str = "voicecall") -> None:
    """The voicecall gateway (child process), configured and served as ``voicecall serve`` would."""
    import logging

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
    if ws_impl != "voicecall":
        options["ws"] = ws_impl
    pauses_to = os.environ.get("VOICECALL_BENCH_PAUSES")
    if pauses_to:  # developer aid: the gateway's garbage collections and event-loop stalls, written at the end
        _serve_watching_pauses(create_app(cfg), port, options, pauses_to)
        return
    _serving(create_app(cfg), port, options).run()


def _serving(app: Any, port: int, options: dict[str, Any]) -> Any:
    """The server ``voicecall serve`` runs (:class:`~voicecall.cluster.drain.DrainingServer`), for ``app`` on
    127.0.0.1:``port``."""
    import uvicorn

    from voicecall.cluster.drain import DrainingServer

    return DrainingServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options),
                          app.state.vc)


def _serve_watching_pauses(app: Any, port: int, options: dict[str, Any], out: str) -> None:
    """Serve ``app`` and record, with ``time.monotonic()`` stamps: every garbage collection over 0.5 ms (generation,
    ms, objects collected), and every time a 10 ms timer of the event loop fired over 1.5 ms late (ms late, and the
    main thread's CPU ms over that interval: about the interval when the loop was busy with something, little when
    the process was not scheduled). Written as JSON to ``out`` every 2 s while there is news."""
    import gc

    import uvloop

    records: dict[str, list[tuple[float, ...]]] = {"gc": [], "late": []}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (ms := (time.perf_counter() - started[0]) * 1000) > 0.5:
            records["gc"].append((time.monotonic(), info["generation"], ms, info["collected"]))

    async def probe() -> None:  # (perf_counter: uvloop's clock and timers have a 1 ms resolution)
        last, cpu = time.perf_counter(), time.thread_time()
        written, n = last, 0
        while True:
            await asyncio.sleep(0.01)
            now, cpu_now = time.perf_counter(), time.thread_time()
            if (late := now - last - 0.01) > 0.0015:
                records["late"].append((time.monotonic(), late * 1000, (cpu_now - cpu) * 1000))
            if now - written > 2.0 and len(records["gc"]) + len(records["late"]) != n:  # (the end is a SIGTERM)
                Path(out).write_text(json.dumps(records))
                written, n = time.perf_counter(), len(records["gc"]) + len(records["late"])
                now, cpu_now = written, time.thread_time()  # (the write is not a stall of the relay's)
            last, cpu = now, cpu_now

    async def main() -> None:
        asyncio.get_running_loop().create_task(probe())
        await _serving(app, port, options).serve()

    gc.callbacks.append(on_gc)
    uvloop.run(main())


def node_available() -> bool:
    """Whether the shipped Node relay can run here (``node`` on PATH and ``bench/node-relay`` present)."""
    return shutil.which("node") is not None and (NODE_RELAY / "relay.js").is_file()


def _start_node_relay(port: int, upstream_port: int) -> subprocess.Popen[bytes]:
    """``node bench/node-relay/relay.js`` (installing its locked dependencies with ``npm ci`` on first use)."""
    if not (NODE_RELAY / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"{NODE_RELAY}/node_modules is missing and npm is not installed")
        progress(f"installing the Node relay's dependencies (npm ci in {NODE_RELAY})…")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_RELAY, check=True)
    return subprocess.Popen(
        ["node", str(NODE_RELAY / "relay.js"), "--port", str(port),
         "--upstream", f"ws://127.0.0.1:{upstream_port}/v1/realtime", "--key", BENCH_KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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


def _realtime(priority: int = 10) -> bool:
    """Run this process and its children under ``SCHED_RR`` (``--realtime``). On a machine busy with other work,
    a process that sleeps between messages waits for a CPU at each wake-up, and those waits (tens to hundreds of
    ms at a load average of 10 on 2 CPUs) swamp sub-millisecond relay latencies; real-time scheduling removes them.
    The benchmark's processes stay below a core each, and the kernel's real-time throttling leaves other work at
    least 5 % of every CPU. ``False`` when not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    except (AttributeError, OSError):
        return False
    return True


def _wait_port(port: int, alive: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("a benchmark server process died during start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def _pin(relay_pids: list[int], echo_pid: int) -> dict[str, list[int]] | None:
    """Give the relays (never busy at the same time) one CPU; the load generator (this process) and the echo
    upstream share the others. ``None`` when the machine has fewer than 2 usable CPUs or affinity cannot be set."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or not relay_pids:
            return None
        mine, theirs = cpus[:-1], cpus[-1:]
        for pid in relay_pids:
            os.sched_setaffinity(pid, theirs)
        os.sched_setaffinity(echo_pid, mine)
        os.sched_setaffinity(0, mine)
    except (AttributeError, OSError):
        return None
    return {"relays": theirs, "load_generator_and_echo": mine}


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid``; NaN once it is gone (the tables print NaN rather than fail)."""
    secs = cpu_seconds(pid)
    return math.nan if secs is None else secs


def _proc_counters(pid: int) -> tuple[int, int]:
    """``(major page faults of the whole process, involuntary context switches of its main thread)`` of ``pid``
    (``(0, 0)`` once it is gone): what a round's slow messages are checked against -- a relay that waited for the
    disk (a page of its code read back) or was preempted by another process, rather than busy with itself."""
    try:
        majflt = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[9])
        status = Path(f"/proc/{pid}/status").read_text()
        at = status.find("nonvoluntary_ctxt_switches:")
        return majflt, int(status[at + 27:].split(None, 1)[0]) if at >= 0 else 0
    except (OSError, IndexError, ValueError):
        return 0, 0


TCP_COUNTERS = ("OutSegs", "PureAcksIn", "DelayedACKs")
"""Counters of the network namespace read at every round boundary (/proc/net/snmp, /proc/net/netstat): TCP segments
sent, pure ACKs received (``TCPPureAcks`` + ``TCPHPAcks``; on loopback every segment sent is received here, so these
are the pure ACKs sent too) and ACKs sent by the delayed-ACK timer. Charged to each mode's rounds per relayed
message (direct: the load generator and the echo alone); meaningful when nothing else uses TCP in the namespace
(``tests/netns-run`` gives the benchmark one of its own)."""


def _tcp_counters() -> dict[str, float]:
    values: dict[str, int] = {}
    try:
        for table in ("/proc/net/snmp", "/proc/net/netstat"):
            lines = Path(table).read_text().splitlines()
            for head, row in zip(lines[::2], lines[1::2], strict=False):
                if head.startswith(("Tcp:", "TcpExt:")):
                    values.update(zip(head.split()[1:], map(int, row.split()[1:]), strict=False))
    except (OSError, ValueError):
        return {}
    return {"OutSegs": values.get("OutSegs", 0), "DelayedACKs": values.get("DelayedACKs", 0),
            "PureAcksIn": values.get("TCPPureAcks", 0) + values.get("TCPHPAcks", 0)}


def _stolen_ms() -> dict[str, float]:
    """Per CPU (``"cpu0"``, …), the milliseconds the hypervisor ran something else while this VM wanted the CPU
    (``steal`` in /proc/stat, 10 ms ticks); empty where /proc/stat is not readable."""
    out = {}
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                fields = line.split()
                out[fields[0]] = int(fields[8]) * tick_ms if len(fields) > 8 else 0.0
    except (OSError, ValueError):
        return {}
    return out


def _listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:``port`` (to measure a relay given by URL), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


# ------------------------------------------------------------------------------------------ load generator
class _Stream:
    """One client: a frame-level WebSocket to one mode's URL, its pending appends and measured round trips."""

    def __init__(self, index: int, mode: str, offset: float) -> None:
        self.index = index
        self.mode = mode
        self.offset = offset
        self.ws: Any = None
        self.ready: asyncio.Future[None] | None = None
        self.sent: dict[int, tuple[float, int]] = {}  # seq -> (perf_counter at send, round)
        self.latencies: list[tuple[int, float]] = []  # (round, ms)
        self.errors: list[str] = []

    # FrameSink
    def on_message(self, data: bytes, text: bool) -> None:
        now = time.perf_counter()
        if self.ready is not None and not self.ready.done():
            if b'"session.created"' in data[:64]:
                self.ready.set_result(None)
            return
        i = data.find(b'"event_id":"c')
        if i < 0:
            if b'"type":"error"' in data[:40] or b'"type": "error"' in data[:40]:
                self.errors.append("error event")
            return
        j = data.find(b'"', i + 13)
        sent = self.sent.pop(int(data[i + 13:j]), None)
        if sent is not None:
            self.latencies.append((sent[1], (now - sent[0]) * 1000))

    def on_writable(self) -> None:
        pass

    def on_closed(self, code: int | None, reason: str) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before session.created ({code} {reason})"))
        if code not in (1000, 1005):
            self.errors.append(f"closed {code}")


async def _open_streams(urls: dict[str, str], streams: list[_Stream], first: bytes | None = None) -> None:
    """Connect every stream to its mode's URL (20 handshakes at a time), each ready once it saw ``session.created``;
    then each sends ``first`` when given."""
    from websockets.asyncio.client import connect

    from voicecall.transports.frames import FrameClientConnection

    sem = asyncio.Semaphore(20)
    loop = asyncio.get_running_loop()

    async def open_one(st: _Stream) -> None:
        async with sem:
            st.ready = loop.create_future()
            st.ws = await connect(urls[st.mode], max_size=None, compression=None, open_timeout=30,
                                  ping_interval=None, create_connection=FrameClientConnection)
            st.ws.attach(st)
            await asyncio.wait_for(st.ready, 30)
            if first is not None:
                st.ws.send_frame(first)

    await asyncio.gather(*(open_one(st) for st in streams))


def schedule_rounds(modes: list[str], seconds: float) -> list[str]:
    """Which mode streams in each round: one warm-up round each, then blocks of one round per mode, in every
    order in turn (two modes: ABBA…), so no mode always follows the same one."""
    blocks = max(1, math.ceil(seconds / ROUND_S))
    orders = list(itertools.permutations(modes))
    rounds = list(modes)
    for b in range(blocks):
        rounds += orders[b % len(orders)]
    return rounds


async def _run_rounds(urls: dict[str, str], clients: int, seconds: float, append_ms: int, audio: list[bytes],
                      pids: dict[str, int | None], echo_pid: int | None = None,
                      ) -> tuple[list[str], list[_Stream], list[dict[str, float]], list[dict[str, tuple[int, int]]],
                                 float, _OwnPauses]:
    """Open ``clients`` streams per mode, then stream in rotating rounds (:func:`schedule_rounds`). Returns the
    schedule, the streams, each relay's CPU seconds read at every round boundary and its :func:`_proc_counters`
    (the load generator's own under ``"load generator"``, the echo upstream's under ``"echo"``), and when the first
    round started (``time.monotonic()``)."""


    modes = list(urls)
    schedule = schedule_rounds(modes, seconds)
    period = append_ms / 1000
    progress(f"{clients} streams per mode ({', '.join(modes)}), one append every {append_ms} ms each; "
             f"{len(schedule)} rounds of {ROUND_S:g} s in rotating order…")
    rng = random.Random(1)
    streams = [_Stream(i, mode, rng.random() * period) for mode in modes for i in range(clients)]
    await _open_streams(urls, streams)
    by_mode = {m: sorted((st for st in streams if st.mode == m), key=lambda s: s.offset) for m in modes}
    head = b'{"type":"input_audio_buffer.append","audio":"'
    cpu_marks: list[dict[str, float]] = []
    proc_marks: list[dict[str, tuple[int, int]]] = []
    watched = {**{m: pid for m, pid in pids.items() if pid is not None}, "load generator": os.getpid(),
               **({"echo": echo_pid} if echo_pid is not None else {})}
    per_round = round(ROUND_S / period)
    own = _OwnPauses(len(schedule))
    clock = time.monotonic  # (the loop's own clock may count whole milliseconds: uvloop's does)
    t0 = clock() + 0.5
    for k in range(len(schedule) * per_round):
        rnd = k // per_round
        if k % per_round == 0:
            own.mark(rnd)
            cpu_marks.append({m: _cpu(pid) for m, pid in pids.items() if pid is not None})
            proc_marks.append({m: _proc_counters(pid) for m, pid in watched.items()})
        chunk = audio[k % len(audio)]
        # one sleep per 1 ms slot of the period, not one per client
        due = [(t0 + k * period + st.offset, st.index, st) for st in by_mode[schedule[rnd]]]
        heapq.heapify(due)
        while due:
            at = due[0][0]
            delay = at - clock()
            if delay > 0.0005:
                await asyncio.sleep(delay)
                delay = at - clock()
            if delay < own.late_ms[rnd] / -1000:  # (the loop's timers wake up to a millisecond late)
                own.late_ms[rnd] = -delay * 1000
            while due and due[0][0] <= at + 0.001:
                st = heapq.heappop(due)[2]
                st.sent[k] = (time.perf_counter(), rnd)
                st.ws.send_frame(head + chunk + b'","event_id":"c' + str(k).encode() + b'"}')
    await asyncio.sleep(GRACE_S)
    own.stop()
    own.mark(len(schedule))
    cpu_marks.append({m: _cpu(pid) for m, pid in pids.items() if pid is not None})
    proc_marks.append({m: _proc_counters(pid) for m, pid in watched.items()})
    await asyncio.gather(*(st.ws.close() for st in streams), return_exceptions=True)
    return schedule, streams, cpu_marks, proc_marks, t0, own


class _OwnPauses:
    """The load generator's own pauses, per round: its garbage collections (ms in all, ms in the longest) and how
    late it sent the round's latest append (its event loop was busy or not scheduled). A late load generator also
    time-stamps the echoes it reads late: such a round's slow messages are the measurer's, not the relay's. And the
    time the hypervisor took from each CPU in the round (``steal`` in /proc/stat, 10 ms ticks): a relay that was
    runnable but not running without being preempted by another process."""

    def __init__(self, rounds: int) -> None:
        import gc

        self.round = 0
        self.late_ms = [0.0] * rounds
        self.gc_ms = [0.0] * rounds
        self.gc_max_ms = [0.0] * rounds
        self.steal_marks: list[dict[str, float]] = []  # at each round's start, then at the end: CPU -> stolen ms
        self.tcp_marks: list[dict[str, float]] = []  # the same for TCP_COUNTERS
        self._t = 0.0
        self._gc = gc
        gc.callbacks.append(self._on_gc)

    def mark(self, rnd: int) -> None:
        """Round ``rnd`` starts (or, past the last, the run ends)."""
        self.round = min(rnd, len(self.late_ms) - 1)
        self.steal_marks.append(_stolen_ms())
        self.tcp_marks.append(_tcp_counters())

    def tcp_per_message(self, rounds: list[int], messages: int) -> dict[str, float]:
        """:data:`TCP_COUNTERS` over ``rounds`` (each to the next round's start), per message."""
        out = {}
        for key in TCP_COUNTERS:
            total = sum(self.tcp_marks[r + 1].get(key, 0) - self.tcp_marks[r].get(key, 0) for r in rounds
                        if r + 1 < len(self.tcp_marks))
            out[key] = total / messages if messages else 0.0
        return out

    def stolen_in(self, rnd: int) -> dict[str, float]:
        """Milliseconds stolen from each CPU during round ``rnd``."""
        if rnd + 1 >= len(self.steal_marks):
            return {}
        a, b = self.steal_marks[rnd], self.steal_marks[rnd + 1]
        return {cpu: b[cpu] - a[cpu] for cpu in b if cpu in a}

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        ms = (time.perf_counter() - self._t) * 1000
        self.gc_ms[self.round] += ms
        self.gc_max_ms[self.round] = max(self.gc_max_ms[self.round], ms)

    def stop(self) -> None:
        if self._on_gc in self._gc.callbacks:
            self._gc.callbacks.remove(self._on_gc)


CALM_STOLEN_MS = 20.0
"""A round in which the hypervisor took less than this from all CPUs together (/proc/stat steal) is *calm*; the p99
over calm rounds only is reported beside the pooled one (a busy host takes a busy vCPU away for milliseconds at a
time: in the slow rounds of 2026-12-03 night, 60-170 ms a second from the relays' CPU)."""


def _mode_stats(schedule: list[str], streams: list[_Stream], mode: str, append_ms: int,
                cpu_marks: list[dict[str, float]], calm: set[int] | None = None) -> dict[str, Any]:
    """Pooled statistics of one mode over its measured rounds (the warm-up rounds left out); with ``calm`` (the
    rounds in which no CPU time was stolen, :data:`CALM_STOLEN_MS`), also the p99 over those alone."""
    warm = len(set(schedule))  # one warm-up round per mode
    measured = [r for r in range(warm, len(schedule)) if schedule[r] == mode]
    mine = [st for st in streams if st.mode == mode]
    per_round: dict[int, list[float]] = {}
    for st in mine:
        for r, ms in st.latencies:
            if r >= warm:
                per_round.setdefault(r, []).append(ms)
    lat = [ms for r in measured for ms in per_round.get(r, [])]
    active = len(measured) * ROUND_S
    out: dict[str, Any] = {
        "clients": len(mine), "seconds": active, "messages": len(lat),
        "lost": sum(len(st.sent) for st in mine), "errors": sorted({e for st in mine for e in st.errors}),
        "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                       "p999": percentile(lat, 99.9), "max": max(lat) if lat else None,
                       "mean": float(np.mean(lat)) if lat else None},
        "messages_per_s": len(lat) / active if active else 0.0,
        "expected_messages_per_s": len(mine) * 1000 / append_ms,
        "p99_per_round": {str(r): percentile(per_round.get(r, []), 99) for r in measured},
        "_samples": lat,
    }
    if calm is not None:
        quiet = [r for r in measured if r in calm]
        out["calm_rounds"] = len(quiet)
        out["p99_calm_rounds"] = percentile([ms for r in quiet for ms in per_round.get(r, [])], 99) if quiet else None
    if cpu_marks and mode in cpu_marks[0]:
        # a round's CPU: from its start to the next round's start (the last one includes the grace period)
        secs = sum(cpu_marks[r + 1][mode] - cpu_marks[r][mode] for r in measured)
        out["cpu"] = {"seconds": secs, "percent_of_one_core": secs / active * 100 if active else None,
                      "us_per_message": secs / len(lat) * 1e6 if lat else None}
    return out


def _slowest_rounds(stats: dict[str, Any], proc_marks: list[dict[str, tuple[int, int]]], mode: str,
                    own: _OwnPauses | None = None, n: int = 3) -> list[dict[str, Any]]:
    """The mode's ``n`` rounds with the highest p99, each with what happened in it: the relay's major page faults
    and involuntary context switches (preempted), and those of the load generator and the echo upstream (preempted,
    they delay every mode's messages alike), and the load generator's own pauses (:class:`_OwnPauses`)."""
    rounds = sorted(((p, int(r)) for r, p in stats["p99_per_round"].items() if p is not None), reverse=True)[:n]
    out = []
    for p99, r in rounds:
        row: dict[str, Any] = {"round": r, "p99_ms": p99}
        if own is not None:
            row.update(load_generator_late_ms=own.late_ms[r], load_generator_gc_ms=own.gc_ms[r],
                       load_generator_gc_max_ms=own.gc_max_ms[r], stolen_ms=own.stolen_in(r))
        for who, key in ((mode, "relay"), ("load generator", "load_generator"), ("echo", "echo")):
            if r + 1 < len(proc_marks) and who in proc_marks[r]:
                (f0, s0), (f1, s1) = proc_marks[r][who], proc_marks[r + 1][who]
                row[f"{key}_major_faults"], row[f"{key}_involuntary_switches"] = f1 - f0, s1 - s0
        out.append(row)
    return out


def _paired_added_p99(schedule: list[str], stats: dict[str, dict[str, Any]], mode: str) -> float | None:
    """Median over blocks (one round per mode) of the mode's p99 minus direct's p99 in the same block: a burst of
    other work on the machine spoils one block, not the estimate."""
    n = len(set(schedule))
    diffs = []
    for start in range(n, len(schedule), n):
        block = range(start, min(start + n, len(schedule)))
        mine = [stats[mode]["p99_per_round"].get(str(r)) for r in block if schedule[r] == mode]
        base = [stats["direct"]["p99_per_round"].get(str(r)) for r in block if schedule[r] == "direct"]
        if mine and base and mine[0] is not None and base[0] is not None:
            diffs.append(mine[0] - base[0])
    return float(np.median(diffs)) if diffs else None


def _audio_chunks(append_ms: int, n: int = 50) -> list[bytes]:
    """Base64 appends of ``append_ms`` of a 24 kHz speech-like signal (a harmonic tone with noise)."""
    import base64

    samples = RATE * append_ms // 1000
    rng = np.random.default_rng(3)
    t = np.arange(samples * n) / RATE
    pcm = 4000 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 300, t.shape)
    pcm = np.clip(pcm, -32768, 32767).astype("<i2")
    return [base64.b64encode(pcm[i * samples:(i + 1) * samples].tobytes()) for i in range(n)]


# ------------------------------------------------------------------------------------------ entry point
class _Bench:
    """The benchmark's processes, started by :func:`_servers`: the echo upstream, the voicecall gateway and the compared
    relay, with their URLs (``direct`` = the echo itself) and process ids."""

    def __init__(self, urls: dict[str, str], pids: dict[str, int | None], echo_pid: int, peer: str | None,
                 settings: dict[str, Any]) -> None:
        self.urls = urls
        self.pids = pids
        self.echo_pid = echo_pid
        self.peer = peer
        self.settings = settings


@contextlib.contextmanager
def _servers(args: argparse.Namespace, clients: int) -> Iterator[_Bench]:
    """Start the echo upstream, the gateway and the compared relay (``args.compare``), pinned and prioritised as
    ``args`` says; stop them at the end."""
    compare = getattr(args, "compare", None) or ("node" if node_available() else "none")
    niceness = _raise_priority() if getattr(args, "priority", True) else os.nice(0)
    realtime = _realtime() if getattr(args, "realtime", False) else False
    ctx = multiprocessing.get_context("spawn")
    echo_port = int(getattr(args, "upstream_port", None) or free_port())
    gw_port = free_port()
    tmp = tempfile.mkdtemp(prefix="voicecall-bench-relay-")
    history = getattr(args, "history", "on") != "off"
    store_url = f"sqlite:///{tmp}/gateway.db" if history else "none"
    ws_impl = getattr(args, "ws", None) or os.environ.get("VOICECALL_BENCH_UVICORN_WS", "voicecall")
    echo = ctx.Process(target=_echo_server, args=(echo_port,), daemon=True, name="bench-echo")
    gateway = ctx.Process(target=_gateway, args=(gw_port, echo_port, store_url, clients, ws_impl), daemon=True,
                          name="bench-gateway")
    echo.start()
    gateway.start()
    node: subprocess.Popen[bytes] | None = None
    urls = {"direct": f"ws://127.0.0.1:{echo_port}/v1/realtime?model=gpt-realtime",
            "voicecall": f"ws://127.0.0.1:{gw_port}/v1/realtime?model=gpt-realtime"}
    pids: dict[str, int | None] = {"voicecall": gateway.pid}
    peer = None
    try:
        _wait_port(echo_port, echo.is_alive)
        _wait_port(gw_port, gateway.is_alive)
        if compare == "node":
            node_port = free_port()
            node = _start_node_relay(node_port, echo_port)
            _wait_port(node_port, lambda: node is not None and node.poll() is None)
            peer = "node"
            urls[peer] = f"ws://127.0.0.1:{node_port}/v1/realtime?model=gpt-realtime"
            pids[peer] = node.pid
        elif compare != "none":
            peer = "compare"
            urls[peer] = compare
            where = urlsplit(compare)
            local = where.hostname in ("127.0.0.1", "localhost", "::1")
            pids[peer] = _listening_pid(where.port or 80) if local else None  # its CPU, when it runs here
        assert echo.pid is not None
        pin = getattr(args, "pin", True)
        pinning = _pin([p for p in pids.values() if p is not None], echo.pid) if pin else None
        yield _Bench(urls, pids, echo.pid, peer, {
            "history": history, "uvicorn_ws": ws_impl, "niceness": niceness, "realtime": realtime,
            "cpu_pinning": pinning, "compare": compare})
    finally:
        if node is not None:
            node.terminate()
            node.wait(5)
        for proc in (gateway, echo):
            proc.terminate()
            proc.join(5)


def _load_warning() -> tuple[float, float, float]:
    load_before = os.getloadavg()
    if load_before[0] > 1.0:
        progress(f"warning: load average {load_before[0]:.1f} before the run: other processes compete for the "
                 "CPUs and inflate the tails of every mode (compare the modes with each other, not with other runs)")
    return load_before


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (``args``: see ``voicecall bench relay --help``); results to ``args.out`` (JSON) and a PNG
    beside it. Exit status 1 when the voicecall relay lost messages or reported errors. With ``args.idle``:
    :func:`run_idle` instead."""
    if getattr(args, "idle", None):
        return run_idle(args)
    clients = int(args.clients)
    seconds = float(args.seconds)
    append_ms = int(getattr(args, "append_ms", 20))
    out = Path(args.out)
    with _servers(args, clients) as bench:
        urls, pids = bench.urls, bench.pids
        load_before = _load_warning()
        e0, t0 = _cpu(bench.echo_pid), time.monotonic()
        schedule, streams, cpu_marks, proc_marks, rounds_t0, own = uvloop.run(
            _run_rounds(urls, clients, seconds, append_ms, _audio_chunks(append_ms), pids, bench.echo_pid))
        echo_cpu = (_cpu(bench.echo_pid) - e0) / (time.monotonic() - t0) * 100
    calm = {r for r in range(len(schedule)) if sum(own.stolen_in(r).values()) < CALM_STOLEN_MS}
    stats = {m: _mode_stats(schedule, streams, m, append_ms, cpu_marks, calm) for m in urls}
    warm = len(set(schedule))
    for m in urls:
        stats[m]["slowest_rounds"] = _slowest_rounds(stats[m], proc_marks, m, own)
        mine = [r for r in range(warm, len(schedule)) if schedule[r] == m]
        stats[m]["tcp_per_message"] = own.tcp_per_message(mine, stats[m]["messages"])
    samples = {m: stats[m].pop("_samples") for m in urls}
    settings = dict(bench.settings)
    result = _result(clients, seconds, append_ms, settings.pop("history"), bench.peer, stats, schedule)
    result["echo_upstream_cpu_percent"] = echo_cpu
    result["settings"].update(settings)
    result["first_round_monotonic"] = rounds_t0  # (to place VOICECALL_BENCH_PAUSES' records in rounds)
    result["load_generator_pauses"] = {"late_ms": own.late_ms, "gc_ms": own.gc_ms, "gc_max_ms": own.gc_max_ms,
                                       "stolen_ms": [own.stolen_in(r) for r in range(len(schedule))]}
    result["loadavg_before"] = list(load_before)
    result["loadavg_after"] = list(os.getloadavg())
    _print(result)
    write_json(out, result)
    png = out.with_suffix(".png")
    _plot(png, samples, result)
    print(f"\nwrote {out} and {png}")
    vc = stats["voicecall"]
    return 0 if not vc["lost"] and not vc["errors"] else 1


# ------------------------------------------------------------------------------------------ idle sessions
IDLE_SETTLE_S = 3.0
"""Seconds before each measurement: after the relays started (Node's compiler and collector finish their start-up
work) and after the idle sessions opened (their set-up work, history rows, is over)."""
IDLE_FIRST_EVENT = b'{"type":"session.update","session":{"type":"realtime"}}'
"""What each idle session sends once, as the SDKs do first (a session that never sends anything is closed after
``server.firstEventSeconds``), before it goes silent."""


async def _idle_windows(urls: dict[str, str], pids: dict[str, int], sessions: int, seconds: float,
                        ) -> tuple[dict[str, float], dict[str, float], dict[str, int], list[str]]:
    """CPU ms per second of each relay process (``pids``) with no session, then with ``sessions`` idle sessions
    each (connected, one first event, then silent). Returns the two rates per relay, the sessions still open at the
    end per relay, and the errors the clients saw."""
    from websockets.protocol import State


    def rates() -> tuple[dict[str, float], float]:
        return {m: _cpu(pid) for m, pid in pids.items()}, time.monotonic()

    async def window() -> dict[str, float]:
        c0, t0 = rates()
        await asyncio.sleep(seconds)
        c1, t1 = rates()
        return {m: (c1[m] - c0[m]) / (t1 - t0) * 1000 for m in pids}

    progress(f"idle: each relay's CPU for {seconds:g} s with no session…")
    await asyncio.sleep(IDLE_SETTLE_S)
    empty = await window()
    streams = [_Stream(i, mode, 0.0) for mode in pids for i in range(sessions)]
    progress(f"idle: opening {sessions} sessions per relay ({', '.join(pids)})…")
    try:
        await _open_streams(urls, streams, IDLE_FIRST_EVENT)
        await asyncio.sleep(IDLE_SETTLE_S)
        progress(f"idle: each relay's CPU for {seconds:g} s with {sessions} idle sessions…")
        idle = await window()
        still = {m: sum(1 for st in streams if st.mode == m and st.ws.protocol.state is State.OPEN) for m in pids}
    finally:
        await asyncio.gather(*(st.ws.close() for st in streams if st.ws is not None), return_exceptions=True)
    return empty, idle, still, sorted({e for st in streams for e in st.errors})


def run_idle(args: argparse.Namespace) -> int:
    """``voicecall bench relay --idle N``: what N connected, silent sessions cost each relay process in CPU, side by
    side (the gateway and the compared relay measured over the same windows): its CPU ms per second with no session,
    then with N idle sessions, and the difference per session. JSON to ``args.out``, a bar chart beside it. Exit
    status 1 when a voicecall session did not stay open."""
    sessions = int(args.idle)
    seconds = float(args.seconds)
    out = Path(args.out)
    with _servers(args, sessions) as bench:
        pids = {m: pid for m, pid in bench.pids.items() if pid is not None}
        load_before = _load_warning()
        empty, idle, still, errors = uvloop.run(_idle_windows(bench.urls, pids, sessions, seconds))
    relays = {m: {"cpu_ms_per_s_no_sessions": empty[m], "cpu_ms_per_s_idle": idle[m],
                  "us_per_idle_session_per_s": (idle[m] - empty[m]) / sessions * 1000,
                  "us_per_s_idle_window_per_session": idle[m] / sessions * 1000, "sessions_open_at_end": still[m]}
              for m in pids}
    settings = dict(bench.settings)
    result: dict[str, Any] = {
        "benchmark": "relay-idle", "machine": machine_info(),
        "settings": {"idle_sessions": sessions, "seconds_per_window": seconds, "settle_s": IDLE_SETTLE_S,
                     "history": "sqlite" if settings.pop("history") else "off", **settings},
        "relays": relays, "errors": errors, "peer": bench.peer,
        "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
    }
    if bench.peer is not None and bench.peer in relays:
        mine, theirs = relays["voicecall"]["us_per_idle_session_per_s"], relays[bench.peer]["us_per_idle_session_per_s"]
        result["voicecall_minus_peer_us_per_idle_session_per_s"] = mine - theirs
    print(f"\nidle relay sessions: {sessions} per relay, connected and silent (one first event each), "
          f"{seconds:g} s windows; voicecall history {result['settings']['history']}")
    heads = ("CPU ms/s, no session", f"CPU ms/s, {sessions} idle", "µs/s per session: above none",
             "all / N", "open at end")
    width = max(len(m) for m in relays)
    print(f"{'':{width}}  " + "  ".join(heads))
    for m, r in relays.items():
        cells = (f"{r['cpu_ms_per_s_no_sessions']:.3f}", f"{r['cpu_ms_per_s_idle']:.3f}",
                 f"{r['us_per_idle_session_per_s']:.2f}", f"{r['us_per_s_idle_window_per_session']:.2f}",
                 str(r["sessions_open_at_end"]))
        print(f"{m:{width}}  " + "  ".join(c.rjust(len(h)) for c, h in zip(cells, heads, strict=True)))
    if errors:
        print("client errors: " + ", ".join(errors))
    write_json(out, result)
    png = out.with_suffix(".png")
    _plot_idle(png, result)
    print(f"\nwrote {out} and {png}")
    return 0 if relays["voicecall"]["sessions_open_at_end"] == sessions and not errors else 1


def _plot_idle(path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    relays = result["relays"]
    n = result["settings"]["idle_sessions"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(len(relays))
    ax.bar(x - 0.2, [r["cpu_ms_per_s_no_sessions"] for r in relays.values()], 0.4, label="no session")
    ax.bar(x + 0.2, [r["cpu_ms_per_s_idle"] for r in relays.values()], 0.4, label=f"{n} idle sessions")
    ax.set_xticks(x, list(relays))
    ax.set_ylabel("relay process CPU (ms per second)")
    ax.legend()
    ax.set_title(f"idle relay sessions ({result['settings']['seconds_per_window']:g} s windows)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _result(clients: int, seconds: float, append_ms: int, history: bool, peer: str | None,
            stats: dict[str, dict[str, Any]], schedule: list[str]) -> dict[str, Any]:
    relays = [m for m in stats if m != "direct"]
    direct = stats["direct"]["latency_ms"]
    added = {m: {k: (stats[m]["latency_ms"][k] - direct[k]) if stats[m]["latency_ms"][k] is not None
                 and direct[k] is not None else None for k in ("p50", "p90", "p99", "p999", "mean")}
             for m in relays}
    for m in relays:
        added[m]["p99_paired_median"] = _paired_added_p99(schedule, stats, m)
        mine, base = stats[m].get("p99_calm_rounds"), stats["direct"].get("p99_calm_rounds")
        added[m]["p99_calm_rounds"] = mine - base if mine is not None and base is not None else None
    result: dict[str, Any] = {
        "benchmark": "relay", "machine": machine_info(),
        "settings": {"clients": clients, "seconds_per_mode": seconds, "append_ms": append_ms, "sample_rate": RATE,
                     "append_base64_chars": RATE * append_ms // 1000 * 2 * 4 // 3, "compression": "none",
                     "history": "sqlite" if history else "off", "round_s": ROUND_S},
        "modes": stats, "added_latency_ms": added, "schedule": schedule, "peer": peer,
    }
    if peer is not None:
        vc, other = stats["voicecall"], stats[peer]

        def ratio(a: float | None, b: float | None) -> float | None:
            return None if a is None or not b else a / b

        cpu_ratio = ratio((vc.get("cpu") or {}).get("us_per_message"), (other.get("cpu") or {}).get("us_per_message"))
        p99_ratio = ratio(added["voicecall"]["p99"], added[peer]["p99"])
        result["voicecall_vs_peer"] = {
            "cpu_per_message": cpu_ratio, "added_p99": p99_ratio,
            "added_p99_paired": ratio(added["voicecall"]["p99_paired_median"], added[peer]["p99_paired_median"]),
            "p99": ratio(vc["latency_ms"]["p99"], other["latency_ms"]["p99"]),
        }
        mine, theirs = added["voicecall"]["p99"], added[peer]["p99"]
        result["targets"] = {
            "cpu_per_message_le_peer": cpu_ratio is not None and cpu_ratio <= 1.0,
            "added_p99_le_peer": mine is not None and theirs is not None and mine <= theirs,
            "nothing_lost": not vc["lost"] and not vc["errors"],
        }
    return result


def _print(result: dict[str, Any]) -> None:
    stats = result["modes"]
    modes = list(stats)
    s = result["settings"]
    rows: list[tuple[str, ...]] = [("", *modes)]

    def fmt(v: float | None, spec: str = ".3f") -> str:
        return "—" if v is None else format(v, spec)

    for key, label in (("p50", "round trip p50 (ms)"), ("p90", "round trip p90 (ms)"), ("p99", "round trip p99 (ms)"),
                       ("p999", "round trip p99.9 (ms)"), ("max", "round trip max (ms)")):
        rows.append((label, *(fmt(stats[m]["latency_ms"][key]) for m in modes)))
    added = result["added_latency_ms"]
    for key, label in (("p50", "added p50 (ms)"), ("p99", "added p99 (ms)"),
                       ("p99_paired_median", "added p99, paired rounds (ms)"),
                       ("p99_calm_rounds", "added p99, calm rounds (ms)")):
        rows.append((label, "", *(fmt(added[m].get(key), "+.3f") for m in modes[1:])))
    rows.append(("calm rounds (< 20 ms stolen)", *(str(stats[m].get("calm_rounds", "—")) for m in modes)))
    rows.append(("relay CPU, % of one core", "", *(fmt((stats[m].get("cpu") or {}).get("percent_of_one_core"), ".1f")
                                                    for m in modes[1:])))
    rows.append(("relay CPU per message (µs)", "", *(fmt((stats[m].get("cpu") or {}).get("us_per_message"), ".1f")
                                                      for m in modes[1:])))
    for key, label in (("OutSegs", "TCP segments per message"), ("PureAcksIn", "pure ACKs per message"),
                       ("DelayedACKs", "delayed ACKs per message")):
        rows.append((label, *(fmt((stats[m].get("tcp_per_message") or {}).get(key), ".2f") for m in modes)))
    rows.append(("messages/s", *(f"{stats[m]['messages_per_s']:.0f}" for m in modes)))
    rows.append(("lost / errors", *(f"{stats[m]['lost']} / {len(stats[m]['errors'])}" for m in modes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(modes) + 1)]
    print(f"\nrelay benchmark: {s['clients']} clients per mode, one {s['append_ms']} ms append "
          f"({s['append_base64_chars']} base64 chars) every {s['append_ms']} ms each, {s['seconds_per_mode']:g} s per "
          f"mode in {s['round_s']:g} s rounds; voicecall history {s['history']}")
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    for m in modes:
        slow = stats[m].get("slowest_rounds") or []
        if slow:
            print(f"slowest rounds, {m}: " + "; ".join(
                f"#{x['round']} p99 {x['p99_ms']:.2f} ms" + (
                    f" (relay: {x['relay_major_faults']} major faults, {x['relay_involuntary_switches']} preempted)"
                    if "relay_major_faults" in x else "")
                + "".join(f", {who} preempted {x[f'{key}_involuntary_switches']}x" for who, key in (
                    ("load generator", "load_generator"), ("echo", "echo")) if f"{key}_involuntary_switches" in x)
                + (f", load generator late {x['load_generator_late_ms']:.1f} ms, its GC {x['load_generator_gc_ms']:.1f}"
                   f" ms" if "load_generator_late_ms" in x else "")
                + "".join(f", {cpu} stolen {ms:.0f} ms" for cpu, ms in (x.get("stolen_ms") or {}).items() if ms)
                for x in slow))
    cmp = result.get("voicecall_vs_peer")
    if cmp:
        t = result["targets"]
        print(f"voicecall / {result['peer']}: CPU per message x{fmt(cmp['cpu_per_message'], '.2f')} "
              f"({'<= 1: met' if t['cpu_per_message_le_peer'] else 'NOT met'}), added p99 "
              f"x{fmt(cmp['added_p99'], '.2f')} ({'met' if t['added_p99_le_peer'] else 'NOT met'}), "
              f"p99 x{fmt(cmp['p99'], '.2f')}; nothing lost: {'yes' if t['nothing_lost'] else 'NO'}")


def _plot(path: Path, samples: dict[str, list[float]], result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"direct": "tab:blue", "voicecall": "tab:orange", "node": "tab:green", "compare": "tab:green"}
    for name, vals_list in samples.items():
        vals = np.sort(np.asarray(vals_list))
        if len(vals) == 0:
            continue
        color = colors.get(name, "tab:grey")
        ax1.plot(vals, np.arange(1, len(vals) + 1) / len(vals), label=name, color=color)
        per_r = result["modes"][name]["p99_per_round"]
        pts = [(int(k), v) for k, v in per_r.items() if v is not None]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, ls="", label=f"{name} p99", color=color)
    ax1.set_xscale("log")
    ax1.set_xlabel("round trip per message (ms, log)")
    ax1.set_ylabel("fraction of messages")
    ax1.axhline(0.99, color="grey", lw=0.6, ls="--")
    ax1.legend()
    ax1.set_title("round-trip latency CDF")
    ax2.set_xlabel(f"round ({ROUND_S:g} s each; the modes take turns)")
    ax2.set_ylabel("p99 round trip (ms)")
    ax2.set_yscale("log")
    ax2.legend()
    ax2.set_title("p99 per round")
    s = result["settings"]
    fig.suptitle(f"relay: {s['clients']} clients x {1000 // s['append_ms']} appends/s, history {s['history']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
