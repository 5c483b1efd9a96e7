"""A raw-WebSocket beta client (what seed-era code does: ``websockets``/browser ``WebSocket`` with
``OpenAI-Beta: realtime=v1`` or the ``openai-beta.realtime-v1`` subprotocol), shared by the engine and gateway
tests."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np

from tests.stock_payloads import GA_ONLY_EVENTS


async def beta_recv_until(ws: Any, types: set[str], events: list[dict[str, Any]],
                          timeout: float = 90.0) -> dict[str, Any]:
    """Receive events into ``events`` until one of ``types`` arrives (returned); no GA-only name may appear."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ev = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - loop.time())))
        events.append(ev)
        assert ev["type"] not in GA_ONLY_EVENTS, f"GA event name sent to a beta client: {ev['type']}"
        if ev["type"] in types:
            return ev


async def beta_send(ws: Any, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def beta_append(ws: Any, pcm: np.ndarray) -> None:
    for i in range(0, len(pcm), 2400):
        await beta_send(ws, {"type": "input_audio_buffer.append",
                             "audio": base64.b64encode(pcm[i:i + 2400].tobytes()).decode()})


def beta_audio(events: list[dict[str, Any]]) -> np.ndarray:
    data = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta")
    return np.frombuffer(data, dtype="<i2")
