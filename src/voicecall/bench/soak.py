"""``voicecall bench soak``: N client slots for M minutes against one ``voicecall serve`` process, a mix of normal
and hostile clients, with the server's memory (RSS) sampled every second.

Each slot runs sessions back to back. A *normal* session: connect, three text turns answered with audio (echo LLM,
tone TTS by default), every event read, close; it must complete with no ``error`` event. A *hostile* session is one
of (in turn):

* ``flood``: asks for a 4 s audio item hundreds of times and reads nothing (expects close 1008 ``client too slow``);
* ``garbage``: the hostile-input generator (malformed, deep, huge, out-of-order events), expecting one ``error``
  per bad event and a working session after;
* ``silent``: opens a WebSocket and sends nothing (expects ``idle_timeout`` and close 1008);
* ``slowloris``: an HTTP request whose headers never end (expects the server to drop it);
* ``vanish``: starts an answer and drops the TCP connection without a close.

Printed: RSS over time, sessions completed per kind, errors; written: JSON and a plot (RSS and live sessions over
time). The server runs with short limits so that hostile clients are cut within the run (see ``SOAK_LIMITS``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.bench.common import machine_info, progress, report

HOSTILE_KINDS = ("flood", "garbage", "silent", "slowloris", "vanish")
SOAK_LIMITS: dict[str, Any] = {
    "maxOutgoingBytes": 1 << 20, "sendTimeoutSeconds": 10, "firstEventSeconds": 5, "idleSessionSeconds": 20,
    "headerTimeoutSeconds": 5, "bodyTimeoutSeconds": 10, "maxMessageBytes": 1 << 20, "logLevel": "warning",
}


class Tally:
    def __init__(self) -> None:
        self.completed: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.errors: list[str] = []
        """Unexpected outcomes (a normal session's error event, a hostile client not cut as expected)."""


async def _connect(url: str, **kwargs: Any) -> Any:
    import websockets

    return await websockets.connect(url, subprotocols=["realtime"], max_size=None,  # type: ignore[list-item]
                                    compression=None, open_timeout=30, **kwargs)


async def _until(ws: Any, etype: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        out.append(ev)
        if ev["type"] == etype:
            return out


async def _until_closed(ws: Any, timeout: float = 60.0) -> tuple[int | None, str, list[dict[str, Any]]]:
    import websockets

    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))))
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), (exc.rcvd.reason if exc.rcvd else ""), events


def _item(text: str, item_id: str | None = None, audio: str | None = None) -> str:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": text}] if audio is None else \
        [{"type": "input_audio", "audio": audio}]
    item: dict[str, Any] = {"type": "message", "role": "user", "content": content}
    if item_id:
        item["id"] = item_id
    return json.dumps({"type": "conversation.item.create", "item": item})


async def normal(url: str, tally: Tally) -> None:
    ws = await _connect(url)
    try:
        await _until(ws, "session.created")
        for turn in range(3):
            await ws.send(_item(f"tell me something number {turn}"))
            await ws.send('{"type":"response.create"}')
            events = await _until(ws, "response.done")
            errors = [e["error"]["code"] for e in events if e["type"] == "error"]
            if errors or events[-1]["response"]["status"] != "completed":
                tally.errors.append(f"normal: {errors or events[-1]['response']['status']}")
                tally.failed["normal"] += 1
                return
        tally.completed["normal"] += 1
    finally:
        await ws.close()


async def flood(url: str, tally: Tally) -> None:
    ws = await _connect(url, max_queue=1)
    audio = base64.b64encode(np.zeros(24000 * 4, np.int16).tobytes()).decode()
    await ws.send(_item("", "item_big", audio))
    for _ in range(300):
        await ws.send('{"type":"conversation.item.retrieve","item_id":"item_big"}')
    await asyncio.sleep(3)
    code, reason, _ = await _until_closed(ws, 60)
    _expect(tally, "flood", code == 1008 and reason.startswith("client too slow"), f"closed {code} {reason!r}")


async def garbage(url: str, tally: Tally) -> None:
    from voicecall.bench.hostile import hostile_messages

    ws = await _connect(url)
    try:
        await _until(ws, "session.created")
        bad = 0
        for n, (name, message, code) in enumerate(hostile_messages(SOAK_LIMITS["maxMessageBytes"], seed=int(time.time()))):
            await ws.send(message)
            await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": f"m{n}"}))
            events = await _until(ws, "input_audio_buffer.cleared")
            codes = [e["error"]["code"] for e in events if e["type"] == "error"]
            if code is not None and codes != [code]:
                bad += 1
                tally.errors.append(f"garbage {name}: {codes}")
        await ws.send(_item("still there?"))
        await ws.send('{"type":"response.create"}')
        done = (await _until(ws, "response.done"))[-1]
        _expect(tally, "garbage", not bad and done["response"]["status"] == "completed", "session did not go on")
    finally:
        await ws.close()


async def silent(url: str, tally: Tally) -> None:
    ws = await _connect(url)
    code, reason, _ = await _until_closed(ws, SOAK_LIMITS["firstEventSeconds"] + 30)
    _expect(tally, "silent", code == 1008 and "idle timeout" in reason, f"closed {code} {reason!r}")


async def slowloris(url: str, tally: Tally) -> None:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        data = await asyncio.wait_for(reader.read(-1), SOAK_LIMITS["headerTimeoutSeconds"] + 30)
        _expect(tally, "slowloris", data == b"", f"answered {data[:40]!r}")
    except TimeoutError:
        _expect(tally, "slowloris", False, "never dropped")
    finally:
        writer.close()


async def vanish(url: str, tally: Tally) -> None:
    ws = await _connect(url)
    await _until(ws, "session.created")
    await ws.send(_item("a long answer please " * 20))
    await ws.send('{"type":"response.create"}')
    await _until(ws, "response.created")
    ws.transport.abort()
    tally.completed["vanish"] += 1


def _expect(tally: Tally, kind: str, ok: bool, detail: str) -> None:
    if ok:
        tally.completed[kind] += 1
    else:
        tally.failed[kind] += 1
        tally.errors.append(f"{kind}: {detail}")


async def _slot(url: str, hostile: bool, slot: int, deadline: float, tally: Tally) -> None:
    runs = {"flood": flood, "garbage": garbage, "silent": silent, "slowloris": slowloris, "vanish": vanish}
    n = slot
    while time.monotonic() < deadline:
        kind = HOSTILE_KINDS[n % len(HOSTILE_KINDS)] if hostile else "normal"
        n += 1
        try:
            await (runs[kind](url, tally) if hostile else normal(url, tally))
            await asyncio.sleep(0.2)  # a moment between one client's sessions
        except Exception as exc:  # noqa: BLE001 - a soak reports failures, it does not stop at the first
            tally.failed[kind] += 1
            tally.errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:120]}")
            await asyncio.sleep(0.5)


def _live(srv: Any, previous: int) -> int:
    """Live sessions from ``/healthz`` (the previous figure when a loaded server does not answer in time)."""
    try:
        return int(srv.sessions())
    except Exception:  # noqa: BLE001 - httpx timeouts and connection errors alike
        return previous


async def _soak(srv: Any, sessions: int, hostile_share: float, seconds: float) -> dict[str, Any]:
    tally = Tally()
    n_hostile = round(sessions * hostile_share)
    url = srv.ws + "?model=gpt-realtime"
    with contextlib.suppress(Exception):  # warm up: the first session loads what is loaded lazily
        await asyncio.wait_for(normal(url, Tally()), 60)
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = [{"t": 0.0, "rss_mb": srv.rss_mb(), "sessions": 0}]
    deadline = t0 + seconds
    slots = [asyncio.ensure_future(_slot(url, i < n_hostile, i, deadline, tally)) for i in range(sessions)]
    last_print = t0
    while not all(s.done() for s in slots):
        await asyncio.sleep(1.0)
        now = time.monotonic()
        live = await asyncio.to_thread(_live, srv, samples[-1]["sessions"])
        samples.append({"t": round(now - t0, 1), "rss_mb": round(srv.rss_mb(), 1), "sessions": live})
        if now - last_print >= 10:
            last_print = now
            progress(f"  t={now - t0:5.0f} s  RSS {samples[-1]['rss_mb']:6.1f} MiB  live {live:3d}  "
                     f"completed {sum(tally.completed.values()):4d}  failed {sum(tally.failed.values()):3d}")
    await asyncio.gather(*slots, return_exceptions=True)
    for _ in range(120):  # let the last hostile sessions be cut
        if await asyncio.to_thread(_live, srv, 1) == 0:
            break
        await asyncio.sleep(0.5)
    after = srv.rss_mb()
    samples.append({"t": round(time.monotonic() - t0, 1), "rss_mb": round(after, 1), "sessions": 0})
    rss = [s["rss_mb"] for s in samples]
    return {"samples": samples, "rss_start_mb": rss[0], "rss_peak_mb": max(rss), "rss_end_mb": after,
            "completed": dict(tally.completed), "failed": dict(tally.failed), "errors": tally.errors[:50],
            "error_count": len(tally.errors), "normal_slots": sessions - n_hostile, "hostile_slots": n_hostile}


def run(args: argparse.Namespace) -> int:
    from voicecall.bench.sessions import ServerProcess

    sessions, minutes = int(args.sessions), float(args.minutes)
    with tempfile.TemporaryDirectory(prefix="voicecall-soak-") as tmp:
        log_path = Path(tmp) / "server.log"
        with ServerProcess(args.config or "echo", sessions, server_settings=SOAK_LIMITS, log_path=log_path) as srv:
            progress(f"soak: {sessions} slots ({args.hostile_share:.0%} hostile) for {minutes:g} min…")
            result = asyncio.run(_soak(srv, sessions, float(args.hostile_share), minutes * 60))
            result["too_slow_closes_logged"] = log_path.read_text(errors="replace").count("too slow")
    data = {"benchmark": "soak", "machine": machine_info(), "settings": {
        "sessions": sessions, "minutes": minutes, "hostile_share": float(args.hostile_share),
        "config": args.config or "echo", "server": SOAK_LIMITS}, **result}
    report(data, Path(args.out), print_table, plot)
    normal_failed = data["failed"].get("normal", 0)
    return 0 if not normal_failed and data["completed"].get("normal", 0) > 0 else 1


def print_table(data: dict[str, Any]) -> None:
    s = data["settings"]
    print(f"\nsoak: {s['sessions']} slots ({data['normal_slots']} normal, {data['hostile_slots']} hostile) for "
          f"{s['minutes']:g} min, config {s['config']}")
    print(f"RSS: start {data['rss_start_mb']:.1f} MiB, peak {data['rss_peak_mb']:.1f} MiB, after "
          f"{data['rss_end_mb']:.1f} MiB ({data['rss_end_mb'] - data['rss_start_mb']:+.1f})")
    print(f"{'kind':>10} {'completed':>10} {'failed':>7}")
    for kind in ("normal", *HOSTILE_KINDS):
        print(f"{kind:>10} {data['completed'].get(kind, 0):>10} {data['failed'].get(kind, 0):>7}")
    print(f"unexpected outcomes: {data['error_count']}" + (f" (first: {data['errors'][0]})" if data["errors"] else ""))
    step = max(1, len(data["samples"]) // 12)
    print("RSS over time: " + ", ".join(f"{x['t']:.0f}s {x['rss_mb']:.0f}" for x in data["samples"][::step]))


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [x["t"] for x in data["samples"]]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(t, [x["rss_mb"] for x in data["samples"]], color="tab:blue", label="server RSS (MiB)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS, MiB")
    ax2 = ax.twinx()
    ax2.plot(t, [x["sessions"] for x in data["samples"]], color="tab:orange", alpha=0.6, label="live sessions")
    ax2.set_ylabel("live sessions")
    s = data["settings"]
    fig.suptitle(f"soak: {s['sessions']} slots, {s['hostile_share']:.0%} hostile, {s['minutes']:g} min")
    fig.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
