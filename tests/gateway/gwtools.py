"""Shared pieces of the gateway tests (kept out of conftest.py so that test modules and fixtures share one copy of
the random keys): the leak guard, server threads, configurations, helpers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicecall.config import load_config
from voicecall.server.thread import ServerThread, free_port

LEAK_KEY = "sk-test-DO-NOT-LEAK-" + secrets.token_hex(12)
GATEWAY_KEY = "gw-client-key-" + secrets.token_hex(6)
MODEL = "gpt-realtime"

# The upstream local engine for fast tests: real recogniser (pocketsphinx), echo "LLM", tone-burst TTS.
ECHO_STACK: dict[str, Any] = {
    "plugins.voice-call.local.vad": {"type": "energy", "thresholdDbfs": -40},
    "plugins.voice-call.local.stt": {"type": "pocketsphinx"},
    "plugins.voice-call.local.llm": {"type": "echo"},
    "plugins.voice-call.local.tts": {"type": "tone"},
}


# ------------------------------------------------------------------------------------------ leak guards
class LeakGuard:
    """ASGI wrapper that records every outgoing message containing ``needle``."""

    def __init__(self, app: Any, needle: str) -> None:
        self.app = app
        self.needle = needle
        self.needle_b = needle.encode()
        self.leaks: list[str] = []
        self.messages = 0
        self.frame_messages = 0  # of which written through the voicecall.frames extension (the relay's fast path)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        frames = (scope.get("extensions") or {}).get("voicecall.frames")
        if isinstance(frames, dict) and frames.get("socket") is not None:  # the relay's frame-level writes
            sock = frames["socket"]
            send_frame = sock.send_frame

            def guarded_frame(data: bytes, text: bool = True) -> bool:
                self.messages += 1
                self.frame_messages += 1
                self._check(path, {"type": "websocket.frame", "bytes": data})
                return bool(send_frame(data, text))

            sock.send_frame = guarded_frame

        async def guarded(message: dict[str, Any]) -> None:
            self.messages += 1
            self._check(path, message)
            await send(message)

        await self.app(scope, receive, guarded)

    def _check(self, path: str, message: dict[str, Any]) -> None:
        for key in ("text", "reason", "subprotocol"):
            value = message.get(key)
            if isinstance(value, str) and self.needle in value:
                self.leaks.append(f"{path}: {message['type']}.{key}")
        for key in ("body", "bytes"):
            value = message.get(key)
            if isinstance(value, (bytes, bytearray)) and self.needle_b in value:
                self.leaks.append(f"{path}: {message['type']}.{key}")
        for name, value in message.get("headers") or []:
            if self.needle_b in bytes(name) or self.needle_b in bytes(value):
                self.leaks.append(f"{path}: {message['type']} header {bytes(name).decode()}")


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# ------------------------------------------------------------------------------------------ servers
def leaked_lines(records: list[logging.LogRecord], needle: str = LEAK_KEY) -> list[str]:
    """Log records holding ``needle``, except those of the upstream servers (threads named ``upstream…``: they play
    OpenAI, which receives the key)."""
    leaks = []
    for record in records:
        if record.threadName.startswith("upstream"):
            continue
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += repr(record.exc_info[1])
        if needle in text:
            leaks.append(f"{record.name} ({record.threadName}): {text[:200]}")
    return leaks


class AppThread(ServerThread):
    """A real uvicorn server for an ASGI app, in a named background thread."""

    def __init__(self, app: Any, name: str, port: int | None = None, ws_max_size: int = 32 * 1024 * 1024,
                 ws: Any = "auto") -> None:
        super().__init__(app, port, name=name, ws_max_size=ws_max_size, timeout_graceful_shutdown=2, ws=ws)


class Gateway(AppThread):
    """A gateway server: ``state`` is its AppState, ``guard`` the leak guard on everything it sends."""

    def __init__(self, config: Any, ws: Any = None) -> None:
        """``ws``: uvicorn's WebSocket protocol; by default the one ``voicecall serve`` runs (with the frame-level
        extension the relay uses)."""
        from voicecall.gateway.upstream import Timeouts, gateway_state
        from voicecall.server.app import create_app
        from voicecall.server.ws_protocol import FrameWebSocketProtocol

        self.config = config
        fastapi_app = create_app(config)
        self.state = fastapi_app.state.vc
        gateway_state(self.state).timeouts = Timeouts(connect=2.0, request=3.0, sideband_retry=0.2)
        self.guard = LeakGuard(fastapi_app, LEAK_KEY)
        super().__init__(self.guard, "gateway", port=config.server.port,
                         ws_max_size=config.server.max_message_bytes * 2, ws=ws or FrameWebSocketProtocol)


def gateway_config(tmp_path: Path, base_url: str, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "server.host": "127.0.0.1",
        "server.port": free_port(),
        "server.apiKeys": [GATEWAY_KEY],
        "store.url": f"sqlite:///{tmp_path / 'gateway.db'}",
        "plugins.voice-call.provider": "openai-realtime",
        "plugins.voice-call.openaiRealtime.apiKey": LEAK_KEY,
        "plugins.voice-call.openaiRealtime.baseUrl": base_url,
        "plugins.voice-call.openaiRealtime.model": MODEL,
        "plugins.voice-call.openaiRealtime.instructions": "You are the gateway's assistant.",
        "plugins.voice-call.openaiRealtime.voice": "marin",
    }
    settings.update(overrides)
    return load_config(None, env={}, overrides=settings)


def local_upstream_config(tmp_path: Path, stack: dict[str, Any] | None, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "server.host": "127.0.0.1",
        "server.port": free_port(),
        "server.apiKeys": [LEAK_KEY],  # the local engine checks the key as OpenAI would
        "store.url": f"sqlite:///{tmp_path / 'upstream.db'}",
        "webrtc.hostAddresses": ["127.0.0.1"],
        **(stack if stack is not None else ECHO_STACK),
    }
    settings.update(overrides)
    return load_config(None, env={}, overrides=settings)


def start_local_upstream(tmp_path: Path, stack: dict[str, Any] | None = None, **overrides: Any) -> AppThread:
    from voicecall.server.app import create_app

    config = local_upstream_config(tmp_path, stack, **overrides)
    app = create_app(config)
    srv = AppThread(app, "upstream-local", port=config.server.port, ws_max_size=config.server.max_message_bytes * 2)
    srv.start()
    srv.state = app.state.vc  # type: ignore[attr-defined]
    return srv


# ------------------------------------------------------------------------------------------ helpers
def sdk_client(gw: AppThread, api_key: str = GATEWAY_KEY) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=api_key, base_url=f"{gw.http}/v1", websocket_base_url=f"ws://127.0.0.1:{gw.port}/v1",
                       max_retries=0)


async def wait_until(pred: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(interval)
    return pred()


async def conversations(srv: AppThread, api_key: str = GATEWAY_KEY) -> list[dict[str, Any]]:
    """Every recorded conversation of ``srv`` with its items and responses (through the history API)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=srv.http, headers=headers, timeout=10) as http:
        r = await http.get("/api/conversations", params={"limit": "100"})
        assert r.status_code == 200, r.text
        out = []
        for conv in r.json()["data"]:
            d = await http.get(f"/api/conversations/{conv['id']}")
            assert d.status_code == 200, d.text
            out.append(d.json())
        return out
