"""Memory of a real server process (``voicecall serve`` in a child process, measured by its RSS) while hostile
clients flood it without reading, and after they leave: bounded during, back to baseline after."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import numpy as np

from tests.hostile.wsraw import connect, events_until, next_event
from voicecall.bench.sessions import ServerProcess

LIMITS = {"maxOutgoingBytes": 256 * 1024, "maxMessageBytes": 1 << 20, "logLevel": "info"}


async def _normal_session(srv: ServerProcess) -> None:
    ws = await connect(srv.ws)
    await next_event(ws)
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}}))
    await ws.send('{"type":"response.create"}')
    done = (await events_until(ws, "response.done", 60))[-1]
    assert done["response"]["status"] == "completed"
    await ws.close()


async def _flooder(srv: ServerProcess, n: int) -> None:
    """Asks for a 4 s audio item 1,500 times (190 MB of answers) and reads nothing."""
    ws = await connect(srv.ws, max_queue=1)
    audio = base64.b64encode(np.zeros(24000 * 4, np.int16).tobytes()).decode()
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "id": f"item_{n}", "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}}))
    for _ in range(1500):
        await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": f"item_{n}"}))
    await asyncio.sleep(3)
    ws.transport.abort()  # and vanish without a close


def _wait_sessions_zero(srv: ServerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while srv.sessions() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert srv.sessions() == 0


async def test_rss_stays_bounded_and_returns_after_hostile_clients(tmp_path: Path) -> None:
    with ServerProcess("echo", 4, server_settings=LIMITS, log_path=tmp_path / "server.log") as srv:
        for _ in range(2):
            await _normal_session(srv)
        baseline = srv.rss_mb()
        peak = baseline
        flood = asyncio.gather(*(_flooder(srv, n) for n in range(3)))
        while not flood.done():
            peak = max(peak, srv.rss_mb())
            await asyncio.sleep(0.1)
        await flood
        await asyncio.to_thread(_wait_sessions_zero, srv)
        await _normal_session(srv)  # still serving
        after = srv.rss_mb()
        log = (tmp_path / "server.log").read_text()
        print(f"RSS baseline {baseline:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB")
        assert log.count("client that is too slow") >= 3, log[-2000:]
        # Unbounded, the three floods queue 3 x 190 MB; bounded, each holds at most 256 kB (measured: +4 MiB bounded, +52 MiB unbounded after 3 s).
        assert peak - baseline < 30, (baseline, peak)
        assert after - baseline < 30, (baseline, after)
