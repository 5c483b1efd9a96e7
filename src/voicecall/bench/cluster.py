"""``voicecall bench cluster``: several replicas behind a real load balancer, on this machine.

Starts ``redis-server``, N ``voicecall serve`` processes (the light echo stack: energy VAD, pocketsphinx, echo LLM,
tone TTS — the subject is the cluster, not the speech) sharing it through ``state.url``, and HAProxy in front
(round-robin, health checks on ``/readyz``), all on 127.0.0.1 inside a loopback-only network namespace. For 1, 2
and 3 replicas it measures, in alternating rounds of one run:

* **session start**: WebSocket connect → ``session.created``, straight to a replica vs through the balancer
  (what the balancer adds), and with ``state.url: memory`` vs Redis (what the shared-limit checks add);
* **a text turn** (``response.create`` → ``response.done``) over each path;
* **concurrent sessions**: ``--sessions`` clients opening a session and taking a turn at once, through the
  balancer (completed, errors, p50/p95).

On one 2-core machine the replicas share the cores, so the figures are about correctness and overhead, not
capacity (docs/scaling.md has the sizing table from the other benches). Prints a table, writes JSON and a plot.
Needs Debian's ``redis-server`` and ``haproxy``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from voicecall.bench.common import progress
from voicecall.server.thread import free_port

ECHO_STACK: dict[str, Any] = {"vad": {"type": "energy"}, "stt": {"type": "pocketsphinx", "speed": "fast", "processes": 0},
                              "llm": {"type": "echo"}, "tts": {"type": "tone"}}
SECRET_KEY = "bench-cluster-signing-key"


def find_exe(name: str) -> str | None:
    for cand in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if cand and os.path.exists(cand):
            return cand
    return None


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if predicate():
                return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class LocalCluster:
    """Replicas of ``voicecall serve`` (child processes) behind HAProxy, on loopback. Use as a context manager."""

    replicas_wanted: int = 2
    state_url: str = "memory"
    store_url: str = "none"
    server: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    local: dict[str, Any] = field(default_factory=lambda: dict(ECHO_STACK))
    check_ms: int = 500
    replicas: list[Replica] = field(default_factory=list)
    lb_port: int = 0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _dir: Path | None = None

    @property
    def lb(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def by_name(self, name: str) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def __enter__(self) -> Self:
        haproxy = find_exe("haproxy")
        if haproxy is None:
            raise FileNotFoundError("haproxy is not installed (Debian package haproxy)")
        self._dir = Path(tempfile.mkdtemp(prefix="voicecall-cluster-"))
        try:
            self._start(haproxy)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, haproxy: str) -> None:
        import httpx

        assert self._dir is not None
        for i in range(self.replicas_wanted):
            name, port = f"r{i + 1}", free_port()
            cfg = {"server": {"host": "127.0.0.1", "port": port, "secretKey": SECRET_KEY, "replicaId": name,
                              **self.server},
                   "state": {"url": self.state_url, **self.state}, "store": {"url": self.store_url},
                   "webrtc": {"hostAddresses": ["127.0.0.1"]}, "plugins": {"voice-call": {"local": self.local}}}
            path = self._dir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            log = self._dir / f"{name}.log"
            proc = subprocess.Popen([sys.executable, "-m", "voicecall.cli", "serve", "--config", str(path)],
                                    stdout=log.open("ab"), stderr=subprocess.STDOUT)
            self._procs.append(proc)
            self.replicas.append(Replica(name, port, proc, log))
        for r in self.replicas:
            wait_until(lambda r=r: r.proc.poll() is None and httpx.get(r.url + "/readyz", timeout=2).status_code == 200,
                       180, f"replica {r.name} ready (its log: {r.log})")
        self.lb_port = free_port()
        servers = "\n".join(f"  server {r.name} 127.0.0.1:{r.port} check inter {self.check_ms}ms fall 2 rise 1"
                            for r in self.replicas)
        (self._dir / "haproxy.cfg").write_text(f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend voicecall
  bind 127.0.0.1:{self.lb_port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
{servers}
""")
        self._procs.append(subprocess.Popen([haproxy, "-f", str(self._dir / "haproxy.cfg"), "-db"],
                                            stdout=subprocess.DEVNULL, stderr=(self._dir / "haproxy.log").open("ab")))
        wait_until(lambda: httpx.get(self.lb + "/readyz", timeout=2).status_code == 200, 30, "the balancer")

    def __exit__(self, *exc: object) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self._procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


class RedisServer:
    """A throwaway ``redis-server`` on 127.0.0.1 and a free port, in a temporary directory (no persistence). It can
    be stopped and started again on the same port (the tests use that to take Redis away mid-run)."""

    def __init__(self) -> None:
        exe = find_exe("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (Debian package redis-server)")
        self.exe = exe
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="voicecall-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self._client()
        wait_until(lambda: client.ping(), 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def flush(self) -> None:
        self._client().flushall()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------- measuring
async def _session_start(base: str) -> float:
    import websockets

    t0 = time.perf_counter()
    async with websockets.connect(base.replace("http://", "ws://") + "/v1/realtime") as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if first.get("type") != "session.created":
            raise RuntimeError(f"no session: {first}")
        return (time.perf_counter() - t0) * 1000


async def _turn(base: str) -> tuple[float, float]:
    """(session start ms, text turn ms) of one fresh session."""
    import websockets

    t0 = time.perf_counter()
    async with websockets.connect(base.replace("http://", "ws://") + "/v1/realtime") as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if first.get("type") != "session.created":
            raise RuntimeError(f"no session: {first.get('error', first)}")
        started = (time.perf_counter() - t0) * 1000
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}}))
        t1 = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if event["type"] == "error":
                raise RuntimeError(event["error"].get("code"))
            if event["type"] == "response.done":
                return started, (time.perf_counter() - t1) * 1000


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2), "mean": round(statistics.fmean(ordered), 2)}


async def _measure(cluster: LocalCluster, rounds: int, concurrent: int) -> dict[str, Any]:
    paths = {"direct": cluster.replicas[0].url, "balancer": cluster.lb}
    start: dict[str, list[float]] = {k: [] for k in paths}
    turn: dict[str, list[float]] = {k: [] for k in paths}
    for base in paths.values():  # warm up (first connections, imports, pools) before measuring
        for _ in range(3):
            await _turn(base)
    for i in range(rounds):  # alternate the paths round by round
        for name in (list(paths) if i % 2 == 0 else list(reversed(paths))):
            s, t = await _turn(paths[name])
            start[name].append(s)
            turn[name].append(t)
    results = await asyncio.gather(*(_turn(cluster.lb) for _ in range(concurrent)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, tuple)]
    errors = [str(r) for r in results if not isinstance(r, tuple)]
    return {"session_start_ms": {k: _stats(v) for k, v in start.items()},
            "turn_ms": {k: _stats(v) for k, v in turn.items()},
            "concurrent": {"sessions": concurrent, "completed": len(ok), "errors": errors[:5],
                           "session_start_ms": _stats([r[0] for r in ok]), "turn_ms": _stats([r[1] for r in ok])}}


def run(args: argparse.Namespace) -> int:
    from voicecall.bench.sessions import ensure_netns

    ensure_netns(sys.argv[1:])
    report: dict[str, Any] = {"bench": "cluster", "rounds": args.rounds, "concurrent": args.sessions, "runs": []}
    with RedisServer() as redis:
        redis_url = redis.url
        for n in args.replicas:
            for state in ("memory", "redis"):
                if state == "memory" and n > 1:
                    continue  # several replicas need the shared state
                progress(f"{n} replica(s), state {state}: starting…")
                cluster = LocalCluster(replicas_wanted=n, state_url=redis_url if state == "redis" else "memory",
                                       server={"maxSessions": max(32, args.sessions)})
                with cluster:
                    figures = asyncio.run(_measure(cluster, args.rounds, args.sessions))
                figures.update({"replicas": n, "state": state})
                report["runs"].append(figures)
                s, t = figures["session_start_ms"], figures["turn_ms"]
                progress(f"  session start p50 direct {s['direct']['p50']} ms, via balancer {s['balancer']['p50']} ms; "
                         f"turn p50 {t['direct']['p50']} / {t['balancer']['p50']} ms; concurrent "
                         f"{figures['concurrent']['completed']}/{args.sessions} completed")
    _print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    _plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"{'replicas':>8} {'state':>6} | {'start direct':>12} {'start via LB':>12} {'LB adds':>8} | "
          f"{'turn direct':>11} {'turn via LB':>11} | concurrent ok / p95 start")
    base = next((r for r in report["runs"] if r["replicas"] == 1 and r["state"] == "memory"), None)
    for r in report["runs"]:
        s, t, c = r["session_start_ms"], r["turn_ms"], r["concurrent"]
        adds = s["balancer"]["p50"] - s["direct"]["p50"]
        print(f"{r['replicas']:>8} {r['state']:>6} | {s['direct']['p50']:>10.2f}ms {s['balancer']['p50']:>10.2f}ms "
              f"{adds:>+7.2f} | {t['direct']['p50']:>9.2f}ms {t['balancer']['p50']:>9.2f}ms | "
              f"{c['completed']}/{c['sessions']} / {c['session_start_ms'].get('p95', float('nan'))} ms")
    redis1 = next((r for r in report["runs"] if r["replicas"] == 1 and r["state"] == "redis"), None)
    if base and redis1:
        print(f"Redis checks add {redis1['session_start_ms']['direct']['p50'] - base['session_start_ms']['direct']['p50']:+.2f} "
              "ms per session start (p50, direct, 1 replica)")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    labels = [f"{r['replicas']}×{r['state']}" for r in runs]
    x = range(len(runs))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([i - 0.2 for i in x], [r["session_start_ms"]["direct"]["p50"] for r in runs], 0.4, label="direct")
    ax.bar([i + 0.2 for i in x], [r["session_start_ms"]["balancer"]["p50"] for r in runs], 0.4, label="via HAProxy")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("session start p50 (ms)")
    ax.set_title("voicecall replicas: session start, direct vs through the balancer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
