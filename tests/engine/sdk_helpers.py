"""Helpers for driving a server with the official openai SDK (client.realtime.connect)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from openai import AsyncOpenAI

APPEND_SAMPLES = 2400  # 100 ms at 24 kHz


def client_for(http_base: str, api_key: str = "local-test-key") -> AsyncOpenAI:
    return AsyncOpenAI(api_key=api_key, base_url=f"{http_base}/v1", websocket_base_url=http_base.replace("http", "ws", 1) + "/v1")


async def recv_json(conn: Any, timeout: float = 60.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(conn.recv_bytes(), timeout)
    return json.loads(raw)


async def collect_until(conn: Any, stop: Callable[[dict[str, Any]], bool], timeout: float = 90.0,
                        into: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    events = into if into is not None else []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; last events: {[e['type'] for e in events[-15:]]}")
        ev = await recv_json(conn, remaining)
        events.append(ev)
        if stop(ev):
            return events


def of_type(events: list[dict[str, Any]], etype: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == etype]


def index_of(events: list[dict[str, Any]], etype: str, start: int = 0) -> int:
    for i in range(start, len(events)):
        if events[i]["type"] == etype:
            return i
    raise AssertionError(f"{etype} not found in {[e['type'] for e in events]}")


async def append_pcm(conn: Any, pcm: np.ndarray, pace: float = 0.0) -> None:
    for i in range(0, len(pcm), APPEND_SAMPLES):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + APPEND_SAMPLES].tobytes()).decode())
        if pace:
            await asyncio.sleep(pace)


def audio_of(events: list[dict[str, Any]]) -> np.ndarray:
    data = b"".join(base64.b64decode(e["delta"]) for e in of_type(events, "response.output_audio.delta"))
    return np.frombuffer(data, dtype="<i2")


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()}
