"""``voicecall bench sessions``: how many concurrent sessions one server process keeps up with.

For each N in ``--sessions``, N sessions (WebRTC through aiortc, or WebSocket) connect at once; each streams a
recording in real time, in a loop (a question, then 3 s of silence; sessions start at random points of the loop),
and the server answers every question. Measured per N over ``--seconds``:

* **frames/s per session** (WebRTC): 20 ms answer-track frames received per second, against the 50/s the server
  must send (silence included). Fewer means the server's sender fell behind (underruns: late or missing frames);
  ``late`` counts gaps over 100 ms between frames.
* **answers**: completed responses, and the answer latency (``speech_stopped`` -> first answer audio, as the
  client sees it: ``output_audio_buffer.started`` on WebRTC, the first audio delta on a WebSocket).
* **server CPU %** (of one core) of the server process (also per session: the engine's own cost), of its worker
  processes (speech recognition), and the load generator's own CPU %.

N "keeps up" when the mean frame rate is >= 98 % of 50/s with no session under 95 % (WebRTC), every session got an
answer, and the p95 answer latency stays under 2.5 s. The table, JSON (``--out``) and a PNG plot beside it report
the largest N that keeps up.

The server is started by this command as a **separate process** on a free 127.0.0.1 port (``voicecall serve``):
the load generator is as heavy as the server (aiortc costs the same on both sides), and sharing one interpreter
(one GIL) would halve what is measured. ``--url`` targets a running server instead (it must be on 127.0.0.1;
CPU is then not measured).

``--config`` is a YAML file, or one of two built-in stacks: ``echo`` (VAD energy, STT pocketsphinx at ``speed:
fast``, LLM echo, TTS tone: the engine answering every turn with the words it recognised, which measures transport
and engine rather than models; recognition stays in the loop, at its cheapest setting) and
``embedded`` (the default embedded models; the default when ``--config`` is not given).

Network: everything runs on 127.0.0.1, and for WebRTC the command re-executes itself inside a fresh loopback-only
network namespace (``unshare -n``, as ``tests/netns-run``) so ICE cannot touch any other interface; it refuses to
run WebRTC when no namespace can be created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlparse

import numpy as np

from voicecall.audio import ENGINE_RATE
from voicecall.bench.common import UTTERANCES, cpu_seconds, free_port, machine_info, percentile, progress, report

RTC_RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
EXPECTED_FPS = 50.0
SILENCE_S = 3.0
WARMUP_S = 3.0
MAX_P95_LATENCY_MS = 2500.0
ECHO_STACK: dict[str, Any] = {
    "vad": {"type": "energy", "thresholdDbfs": -40},
    "stt": {"type": "pocketsphinx", "speed": "fast"},
    "llm": {"type": "echo"},
    "tts": {"type": "tone"},
}


# ------------------------------------------------------------------------------------------ netns
def ensure_netns(argv: list[str]) -> None:
    """Re-execute this command inside a loopback-only network namespace unless already inside one."""
    if os.environ.get("VOICECALL_IN_NETNS") == "1":
        return
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode:
        raise SystemExit("voicecall bench: cannot create a network namespace (unshare -n failed; it needs "
                         "root or user namespaces). WebRTC benchmarks only run inside one, so that ICE stays on "
                         "127.0.0.1. Run as root, or use --transport websocket.")
    env = dict(os.environ, VOICECALL_IN_NETNS="1")
    cmd = ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "_", sys.executable, "-m",
           "voicecall.cli", *argv]
    progress("re-running inside a loopback-only network namespace (unshare -n)…")
    os.execvpe("unshare", cmd, env)


# ------------------------------------------------------------------------------------------ server
class ServerProcess:
    """``voicecall serve`` as a child process on 127.0.0.1 and a free port, with the benchmark's settings."""

    def __init__(self, config: str | None, max_sessions: int, stt_processes: int | None = None, *,
                 server_settings: dict[str, Any] | None = None, log_path: Path | None = None) -> None:
        """``server_settings``: extra ``server.*`` settings (camelCase); ``log_path``: where the server's output goes
        (default: this process's)."""
        import yaml

        raw: dict[str, Any] = {}
        if config and config not in ("echo", "embedded"):
            raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
            if "voice-call" in raw:
                raw.setdefault("plugins", {})["voice-call"] = raw.pop("voice-call")
        if config == "echo":
            local = raw.setdefault("plugins", {}).setdefault("voice-call", {}).setdefault("local", {})
            local.update(ECHO_STACK)
            # Load the recognisers the trials will need up front: a pocketsphinx decoder created on demand holds
            # the GIL for ~0.3 s, which would show up as stalls in the trial that first needs it.
            local["stt"] = {**ECHO_STACK["stt"], "poolSize": max(2, max_sessions // 2 + 2),
                            "maxPoolSize": 2 * max_sessions + 4}
        if stt_processes is not None:
            stt = raw.setdefault("plugins", {}).setdefault("voice-call", {}).setdefault("local", {}).setdefault(
                "stt", {"type": "pocketsphinx"})
            stt["processes"] = stt_processes
        self.stack = config or "embedded"
        self.port = free_port()
        server = raw.setdefault("server", {})
        server.update({"host": "127.0.0.1", "port": self.port, "maxSessions": max_sessions + 4,
                       "mintRatePerMinute": 100000, "logLevel": "warning", **(server_settings or {})})
        self.log_path = log_path
        raw.setdefault("webrtc", {})["hostAddresses"] = ["127.0.0.1"]
        raw["webrtc"]["iceServers"] = []
        raw.setdefault("store", {})["url"] = "none"
        self._dir = tempfile.TemporaryDirectory(prefix="voicecall-bench-")
        self.config_path = Path(self._dir.name) / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        import httpx

        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECALL_")}
        env["VOICECALL_IN_NETNS"] = os.environ.get("VOICECALL_IN_NETNS", "")
        out = self.log_path.open("ab") if self.log_path is not None else None
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "voicecall.cli", "serve", "--config",
                                          str(self.config_path)], env=env, stdout=out, stderr=out)
        finally:
            if out is not None:
                out.close()
        progress(f"starting the server ({self.stack} stack, pid {self.proc.pid}) and loading its models…")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("the server did not start within 300 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._dir.cleanup()

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def sessions(self) -> int:
        """Live sessions, from ``GET /healthz``."""
        import httpx

        return int(httpx.get(self.url + "/healthz", timeout=5).json()["sessions"])

    def rss_mb(self) -> float:
        """Resident memory of the server process, MiB (Linux ``/proc``)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float | None:
        if self.proc is None:
            return None
        return cpu_seconds(self.proc.pid)

    def worker_cpu_seconds(self) -> dict[int, float]:
        """CPU seconds of each of the server's child processes (speech worker processes), by pid."""
        if self.proc is None:
            return {}
        out = {}
        for pid in descendant_pids(self.proc.pid):
            cpu = cpu_seconds(pid)
            if cpu is not None:
                out[pid] = cpu
        return out


def descendant_pids(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc ``children`` lists)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found


# ------------------------------------------------------------------------------------------ audio
def speech_loop(rate: int) -> np.ndarray:
    """The recording every session streams: each benchmark utterance followed by SILENCE_S of near-silence."""
    from voicecall.bench.common import utterance_pcm

    parts = []
    rng = np.random.default_rng(11)
    for text in UTTERANCES[:3]:
        parts.append(utterance_pcm(text, rate))
        parts.append(np.clip(rng.normal(0, 30, int(SILENCE_S * rate)), -32768, 32767).astype(np.int16))
    return np.concatenate(parts)


# ------------------------------------------------------------------------------------------ sessions
@dataclass
class SessionStats:
    frames: int = 0  # answer-track frames received in the window (WebRTC)
    late: int = 0  # gaps > 100 ms between frames in the window
    audio_ms: float = 0.0  # answer audio received in the window (WebSocket)
    answers: int = 0  # completed responses in the window
    responses: int = 0  # responses done (any status) in the window
    latencies: list[float] = field(default_factory=list)  # ms, speech_stopped -> first answer audio
    errors: list[str] = field(default_factory=list)
    connect_ms: float | None = None
    send_lag_ms: float = 0.0  # worst lateness of the client's own audio sending (client overload indicator)


class Window:
    """The measurement window shared by all sessions of a trial (loop time)."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")

    def inside(self, t: float) -> bool:
        return self.start <= t < self.end


class _EventCounter:
    """Counts answers and answer latency from server events (either transport)."""

    def __init__(self, stats: SessionStats, window: Window) -> None:
        self.stats = stats
        self.window = window
        self.stopped_at: float | None = None

    def on_event(self, ev: dict[str, Any], now: float) -> None:
        t = ev.get("type")
        if t == "input_audio_buffer.speech_stopped":
            self.stopped_at = now
        elif t in ("output_audio_buffer.started", "response.output_audio.delta"):
            if self.stopped_at is not None:
                if self.window.inside(now):
                    self.stats.latencies.append((now - self.stopped_at) * 1000)
                self.stopped_at = None
        elif t == "response.done" and self.window.inside(now):
            self.stats.responses += 1
            if ev.get("response", {}).get("status") == "completed":
                self.stats.answers += 1
        elif t == "error":
            self.stats.errors.append(str(ev.get("error", {}).get("message")))


async def _mint_secret(base: str) -> str | None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        r = await http.post("/session", json={})
    return str(r.json()["value"]) if r.status_code == 200 else None


def opus_packets(pcm: np.ndarray) -> list[bytes]:
    """The recording as 20 ms mono Opus packets, encoded once and replayed by every session (so the load generator
    spends its CPU on the transport, not on encoding)."""
    import fractions

    from av import AudioFrame, CodecContext

    enc = CodecContext.create("libopus", "w")
    enc.bit_rate = 32000
    enc.format = "s16"
    enc.layout = "mono"
    enc.sample_rate = RTC_RATE
    enc.time_base = fractions.Fraction(1, RTC_RATE)
    enc.options = {"application": "voip"}
    out: list[bytes] = []
    for i in range(len(pcm) // FRAME):
        frame = AudioFrame.from_ndarray(pcm[i * FRAME:(i + 1) * FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RTC_RATE
        frame.pts = i * FRAME
        frame.time_base = enc.time_base
        out += [bytes(p) for p in enc.encode(frame)]
    return out


async def rtc_session(base: str, secret: str | None, packets: list[bytes], offset: int, window: Window,
                      stop: asyncio.Event, ready: asyncio.Event) -> SessionStats:
    """One WebRTC session: send ``packets`` (20 ms Opus each) in real time in a loop from ``offset``, count the
    answer track's frames and the answers until ``stop``."""
    import fractions

    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
    from av import Packet

    from voicecall.transports.webrtc import pinned_host_addresses

    stats = SessionStats()
    counter = _EventCounter(stats, window)
    loop = asyncio.get_running_loop()
    tb = fractions.Fraction(1, RTC_RATE)
    frames = len(packets)

    class LoopTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.i = offset // FRAME
            self.t0: float | None = None
            self.pts = 0

        async def recv(self) -> Packet:  # type: ignore[override]
            if self.t0 is None:
                self.t0 = loop.time()
            else:
                self.pts += FRAME
                wait = self.t0 + self.pts / RTC_RATE - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif -wait * 1000 > stats.send_lag_ms and window.inside(loop.time()):
                    stats.send_lag_ms = -wait * 1000
            packet = Packet(packets[self.i % frames])
            self.i += 1
            packet.pts = self.pts
            packet.time_base = tb
            return packet

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tasks: list[asyncio.Task[Any]] = []

    async def read(track: Any) -> None:
        last: float | None = None
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            now = loop.time()
            if window.inside(now):
                stats.frames += 1
                if last is not None and now - last > 0.1:
                    stats.late += 1
            last = now

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(read(track))))
    pc.addTrack(LoopTrack())
    dc = pc.createDataChannel("oai-events")
    opened = asyncio.Event()
    dc.on("open", opened.set)
    dc.on("message", lambda m: counter.on_event(json.loads(m), loop.time()))
    t0 = time.perf_counter()
    try:
        with pinned_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            r = await http.post("/v1/realtime/calls", content=pc.localDescription.sdp, headers=headers)
        if r.status_code != 201:
            stats.errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            return stats
        await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
        await asyncio.wait_for(opened.wait(), 30)
        stats.connect_ms = (time.perf_counter() - t0) * 1000
        ready.set()
        await stop.wait()
    except Exception as exc:  # noqa: BLE001 - a failed session is a result, not a crash
        stats.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        ready.set()
        for t in tasks:
            t.cancel()
        await pc.close()
    return stats


async def ws_session(base: str, secret: str | None, pcm: np.ndarray, offset: int, window: Window,
                     stop: asyncio.Event, ready: asyncio.Event) -> SessionStats:
    """One WebSocket session: 20 ms appends in real time in a loop; counts answers and answer audio."""
    import base64

    import websockets

    stats = SessionStats()
    counter = _EventCounter(stats, window)
    loop = asyncio.get_running_loop()
    chunk = ENGINE_RATE // 50
    n = len(pcm) // chunk
    url = base.replace("http://", "ws://", 1) + "/v1/realtime"
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    t0 = time.perf_counter()
    try:
        async with websockets.connect(url, subprotocols=["realtime"], additional_headers=headers,  # type: ignore[list-item]
                                      max_size=1 << 24) as ws:
            stats.connect_ms = (time.perf_counter() - t0) * 1000
            ready.set()

            async def reader() -> None:
                async for raw in ws:
                    ev = json.loads(raw)
                    now = loop.time()
                    if ev.get("type") == "response.output_audio.delta" and window.inside(now):
                        stats.audio_ms += len(ev.get("delta", "")) * 3 / 4 / 2 / 24
                    counter.on_event(ev, now)

            rtask = asyncio.ensure_future(reader())
            i = offset // chunk
            start = loop.time()
            sent = 0
            while not stop.is_set():
                j = i % n
                i += 1
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(pcm[j * chunk:(j + 1) * chunk].tobytes()).decode()}))
                sent += 1
                wait = start + sent * 0.02 - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif -wait * 1000 > stats.send_lag_ms and window.inside(loop.time()):
                    stats.send_lag_ms = -wait * 1000
            rtask.cancel()
    except Exception as exc:  # noqa: BLE001
        stats.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        ready.set()
    return stats


async def _loop_lag(window: Window, out: list[float], stop: asyncio.Event) -> None:
    """Lateness of a 10 ms timer on the load generator's own loop: shows when the client, not the server, lags."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        if window.inside(t):
            out.append((loop.time() - t - 0.01) * 1000)


async def _server_calls(base: str) -> dict[str, dict[str, Any]]:
    """Media counters of the server's live WebRTC calls (``GET /v1/realtime/calls``), by call id."""
    import httpx

    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.get("/v1/realtime/calls")
        return {c["id"]: c for c in r.json().get("data", [])} if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


async def trial(base: str, transport: str, n: int, seconds: float, pcm: np.ndarray, media: Any,
                server: ServerProcess | None) -> dict[str, Any]:
    """N concurrent sessions for ``seconds`` (after a warm-up); returns the figures of this N. ``media`` is what
    each session streams: Opus packets (WebRTC) or 24 kHz PCM (WebSocket) of the recording ``pcm``."""
    loop = asyncio.get_running_loop()
    window = Window()
    stop = asyncio.Event()
    secret = await _mint_secret(base)  # one client secret opens all N sessions
    fn = rtc_session if transport == "webrtc" else ws_session
    rng = random.Random(n)
    readies = [asyncio.Event() for _ in range(n)]
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(fn(base, secret, media, rng.randrange(len(pcm)), window, stop, readies[i])))
        await asyncio.sleep(0.02)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    lags: list[float] = []
    lag_task = asyncio.ensure_future(_loop_lag(window, lags, stop))
    await asyncio.sleep(WARMUP_S)
    load0 = os.getloadavg()[0]
    calls0 = await _server_calls(base) if transport == "webrtc" else {}
    cpu0 = server.cpu_seconds() if server else None
    workers0 = server.worker_cpu_seconds() if server else {}
    me0 = time.process_time()
    window.start = loop.time()
    await asyncio.sleep(seconds)
    window.end = loop.time()
    wall = window.end - window.start
    cpu1 = server.cpu_seconds() if server else None
    workers1 = server.worker_cpu_seconds() if server else {}
    me1 = time.process_time()
    calls1 = await _server_calls(base) if transport == "webrtc" else {}
    load1 = os.getloadavg()[0]
    stop.set()
    await lag_task
    results: list[SessionStats] = await asyncio.gather(*tasks)
    await _wait_idle(base)
    ok = [s for s in results if not s.errors or s.connect_ms is not None]
    fps = [s.frames / wall for s in ok]
    lat = [v for s in ok for v in s.latencies]
    row: dict[str, Any] = {
        "sessions": n,
        "connected": sum(1 for s in results if s.connect_ms is not None),
        "seconds": round(wall, 2),
        "server_cpu_pct": round((cpu1 - cpu0) / wall * 100, 1) if cpu0 is not None and cpu1 is not None else None,
        "server_workers_cpu_pct": round(sum(v - workers0.get(k, 0.0) for k, v in workers1.items()) / wall * 100, 1)
        if server else None,
        "client_cpu_pct": round((me1 - me0) / wall * 100, 1),
        "server_cpu_pct_per_session": round((cpu1 - cpu0) / wall * 100 / n, 2)
        if cpu0 is not None and cpu1 is not None and n else None,
        "answers": sum(s.answers for s in ok),
        "responses": sum(s.responses for s in ok),
        "sessions_answered": sum(1 for s in ok if s.answers > 0),
        "answer_latency_ms": {"p50": _r(percentile(lat, 50)), "p95": _r(percentile(lat, 95)), "n": len(lat)},
        "connect_ms_p50": _r(percentile([s.connect_ms for s in ok if s.connect_ms is not None], 50)),
        "client_send_lag_ms_max": _r(max((s.send_lag_ms for s in ok), default=0.0)),
        "client_loop_lag_ms": {"p50": _r(percentile(lags, 50)), "p99": _r(percentile(lags, 99)),
                               "max": _r(max(lags, default=0.0))},
        "load_average": [round(load0, 2), round(load1, 2)],
        "errors": sorted({e for s in results for e in s.errors})[:5],
    }
    if transport == "webrtc":
        sent = [(calls1[c]["frames_sent"] - calls0[c]["frames_sent"]) / wall for c in calls1 if c in calls0]
        row.update({
            "server_frames_per_s_mean": _r(float(np.mean(sent)), 2) if sent else None,
            "server_stalls": sum(calls1[c]["late_frames"] - calls0[c]["late_frames"] for c in calls1 if c in calls0),
            "frames_per_s_mean": _r(float(np.mean(fps)) if fps else 0.0, 2),
            "frames_per_s_min": _r(min(fps) if fps else 0.0, 2),
            "underrun_pct": _r((1 - (float(np.mean(fps)) if fps else 0.0) / EXPECTED_FPS) * 100, 2),
            "late_gaps": sum(s.late for s in ok),
        })
    else:
        row["answer_audio_ms_per_s"] = _r(sum(s.audio_ms for s in ok) / wall / max(1, n), 1)
    row["keeps_up"] = keeps_up(row, transport, seconds)
    return row


def _r(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def keeps_up(row: dict[str, Any], transport: str, seconds: float) -> bool:
    """The criterion of the table's last column (see the module docstring)."""
    n = row["sessions"]
    if row["connected"] < n or row["errors"]:
        return False
    if transport == "webrtc" and (row["frames_per_s_mean"] < 0.98 * EXPECTED_FPS
                                  or row["frames_per_s_min"] < 0.95 * EXPECTED_FPS):
        return False
    loop_s = len(UTTERANCES[:3]) * (SILENCE_S + 2.0)
    if seconds >= loop_s and row["sessions_answered"] < n:
        return False
    p95 = row["answer_latency_ms"]["p95"]
    return p95 is None or p95 <= MAX_P95_LATENCY_MS


async def _wait_idle(base: str, timeout: float = 30.0) -> None:
    """Wait until the server reports no live session (so trials do not overlap)."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/healthz")).json().get("sessions") == 0:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    counts = sorted({int(n) for n in args.sessions})
    server: ServerProcess | None = None
    base = args.url
    if base is not None:
        host = urlparse(base).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise SystemExit("--url must point at 127.0.0.1 (this benchmark never leaves the machine)")
        base = base.replace("ws://", "http://").replace("/v1/realtime", "").rstrip("/")
    else:
        server = ServerProcess(args.config, max(counts), getattr(args, "stt_processes", None)).__enter__()
        base = server.url
    try:
        progress("synthesizing the test recording…")
        pcm = speech_loop(RTC_RATE if args.transport == "webrtc" else ENGINE_RATE)
        media = opus_packets(pcm) if args.transport == "webrtc" else pcm
        rows = []
        for n in counts:
            progress(f"{n} concurrent {args.transport} session(s) for {args.seconds:.0f} s…")
            row = await trial(base, args.transport, n, args.seconds, pcm, media, server)
            rows.append(row)
            progress("  " + _row_text(row, args.transport))
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    ok = [r["sessions"] for r in rows if r["keeps_up"]]
    return {"benchmark": "sessions", "transport": args.transport, "stack": server.stack if server else "external",
            "url": args.url or "child process", "seconds": args.seconds, "machine": machine_info(),
            "criterion": {"frames_per_s_mean_min": 0.98 * EXPECTED_FPS, "frames_per_s_min": 0.95 * EXPECTED_FPS,
                          "answer_latency_p95_max_ms": MAX_P95_LATENCY_MS},
            "rows": rows, "max_sessions_keeping_up": max(ok) if ok else 0}


def _row_text(r: dict[str, Any], transport: str) -> str:
    lat = r["answer_latency_ms"]
    sfps = r.get("server_frames_per_s_mean")
    media = (f"{r['frames_per_s_mean']:5.1f}/{r['frames_per_s_min']:5.1f} fps (server sent "
             f"{sfps if sfps is not None else float('nan'):5.1f})  late {r['late_gaps']:3d}"
             if transport == "webrtc" else f"{r['answer_audio_ms_per_s']:6.0f} audio ms/s")
    cpu = f"{r['server_cpu_pct']:5.1f}%" if r["server_cpu_pct"] is not None else "   n/a"
    if r.get("server_cpu_pct_per_session") is not None:
        cpu += f" ({r['server_cpu_pct_per_session']:.2f}% per session)"
    if r.get("server_workers_cpu_pct"):
        cpu += f" + workers {r['server_workers_cpu_pct']:5.1f}%"
    p50 = f"{lat['p50']:.0f}" if lat["p50"] is not None else "-"
    p95 = f"{lat['p95']:.0f}" if lat["p95"] is not None else "-"
    return (f"N={r['sessions']:3d}  {media}  answers {r['answers']:4d} ({r['sessions_answered']}/{r['sessions']} sessions)"
            f"  latency p50/p95 {p50}/{p95} ms  server cpu {cpu}  client cpu {r['client_cpu_pct']:5.1f}%"
            f" (loop lag p99 {r['client_loop_lag_ms']['p99']} ms)  load {r['load_average'][1]}"
            f"  {'OK' if r['keeps_up'] else 'BEHIND'}")


def print_table(data: dict[str, Any]) -> None:
    webrtc = data["transport"] == "webrtc"
    head = (f"{'N':>4} {'fps mean':>9} {'fps min':>8} {'late':>5}" if webrtc else f"{'N':>4} {'audio ms/s':>10}")
    head += (f" {'answers':>8} {'answered':>9} {'lat p50':>8} {'lat p95':>8} {'srv cpu':>8} {'/session':>9}"
             f" {'workers':>8} {'cli cpu':>8}  keeps up")
    print(f"\nconcurrent {data['transport']} sessions, {data['stack']} stack, {data['seconds']:.0f} s per N")
    print(head)
    for r in data["rows"]:
        lat = r["answer_latency_ms"]
        cells = (f"{r['sessions']:>4} {r['frames_per_s_mean']:>9.1f} {r['frames_per_s_min']:>8.1f} {r['late_gaps']:>5}"
                 if webrtc else f"{r['sessions']:>4} {r['answer_audio_ms_per_s']:>10.0f}")
        fmt = lambda v: f"{v:>8.0f}" if v is not None else f"{'-':>8}"
        cpu = f"{r['server_cpu_pct']:>7.1f}%" if r["server_cpu_pct"] is not None else f"{'n/a':>8}"
        per = r.get("server_cpu_pct_per_session")
        cpu += f" {per:>8.2f}%" if per is not None else f" {'n/a':>9}"
        wcpu = r.get("server_workers_cpu_pct")
        cpu += f" {wcpu:>7.1f}%" if wcpu is not None else f" {'n/a':>8}"
        cells += (f" {r['answers']:>8} {r['sessions_answered']:>4}/{r['sessions']:<4} {fmt(lat['p50'])} {fmt(lat['p95'])}"
                  f" {cpu} {r['client_cpu_pct']:>7.1f}%  {'yes' if r['keeps_up'] else 'NO'}")
        print(cells)
        if r["errors"]:
            print(f"     errors: {r['errors']}")
    print(f"largest N that keeps up: {data['max_sessions_keeping_up']}"
          + (" (expected 50 frames/s per session; latency = speech_stopped -> first answer audio)" if webrtc else ""))


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    ns = [r["sessions"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if data["transport"] == "webrtc":
        ax.plot(ns, [r["frames_per_s_mean"] for r in rows], "o-", label="frames/s per session (mean)")
        ax.plot(ns, [r["frames_per_s_min"] for r in rows], "v--", label="frames/s per session (worst)")
        ax.axhline(EXPECTED_FPS, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("answer-track frames/s")
        ax.set_ylim(0, EXPECTED_FPS * 1.15)
    else:
        ax.plot(ns, [r["answer_latency_ms"]["p95"] or 0 for r in rows], "o-", label="answer latency p95 (ms)")
        ax.set_ylabel("ms")
    ax.set_xlabel("concurrent sessions")
    ax2 = ax.twinx()
    total = [(r["server_cpu_pct"] or 0) + (r.get("server_workers_cpu_pct") or 0) for r in rows]
    ax2.plot(ns, [r["server_cpu_pct"] or 0 for r in rows], "s-", color="tab:red", label="server process CPU %")
    ax2.plot(ns, total, "s:", color="tab:purple", label="server + worker processes CPU %")
    ax2.set_ylabel("CPU (% of one core)")
    ax2.set_ylim(0, max(110, max(total) * 1.1))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower left", fontsize=8)
    ax.set_title(f"voicecall concurrent {data['transport']} sessions ({data['stack']} stack): "
                 f"{data['max_sessions_keeping_up']} keep up")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``voicecall bench sessions`` (args: url, config, transport, sessions, seconds, out)."""
    if args.transport == "webrtc" and args.url is None:
        ensure_netns(sys.argv[1:])
    return report(asyncio.run(run_async(args)), args.out, print_table, plot)
