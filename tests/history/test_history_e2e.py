"""Conversations land in the store from a real server, on SQLite and on a real PostgreSQL, and survive SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets

from tests.conftest import ServerThread, free_port, make_config, speech_pcm
from tests.engine.sdk_helpers import append_pcm, client_for, collect_until, of_type, recv_json, words


def _latest(http: str) -> dict:
    r = httpx.get(f"{http}/api/conversations?limit=1", timeout=10)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data, "no conversation stored"
    detail = httpx.get(f"{http}/api/conversations/{data[0]['id']}", timeout=10)
    assert detail.status_code == 200
    return detail.json()


async def _wait_for_items(http: str, n: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            detail = _latest(http)
            if len([i for i in detail["items"] if i.get("text")]) >= n and detail.get("ended_at"):
                return detail
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"store did not catch up: {detail if 'detail' in locals() else None}")
        await asyncio.sleep(0.2)


async def test_websocket_conversation_is_kept_with_words_order_and_truncation(tmp_path: Path, store_url: str) -> None:
    with ServerThread(make_config(tmp_path, **{"store.url": store_url})) as srv:
        client = client_for(srv.http)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await recv_json(conn)
            await conn.session.update(session={"type": "realtime", "audio": {"input": {
                "transcription": {"model": "whisper-1"}, "turn_detection": None}}})
            await append_pcm(conn, speech_pcm("What is the capital of France?", tail_s=0.3))
            await conn.input_audio_buffer.commit()
            await conn.response.create()
            events = await collect_until(conn, lambda e: e["type"] == "response.done")
            answer = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
            assistant = of_type(events, "response.output_item.done")[0]["item"]["id"]
            await conn.conversation.item.truncate(item_id=assistant, content_index=0, audio_end_ms=1000)
            await collect_until(conn, lambda e: e["type"] == "conversation.item.truncated")
        detail = await _wait_for_items(srv.http, 2)
    assert detail["transport"] == "websocket" and detail["provider"] == "local"
    user, bot = detail["items"][0], detail["items"][1]
    assert user["role"] == "user" and {"capital", "france"} <= words(user["text"])
    assert bot["role"] == "assistant" and bot["truncated"]
    assert answer.startswith(bot["text"]) and len(bot["text"]) < len(answer)  # only what was heard
    assert detail["responses"] and detail["responses"][0]["status"] == "completed"
    assert detail["responses"][0]["cost_usd"] == 0  # local models cost nothing
    assert "processing_ms" in detail["responses"][0]["latency"] or detail["responses"][0]["latency"] is not None


def _serve(config_path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "voicecall.cli", "serve", "--config", str(config_path),
                             "--port", str(port)], stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become healthy")


async def test_sigkill_mid_conversation_keeps_completed_items(tmp_path: Path, store_url: str) -> None:
    port = free_port()
    cfg = tmp_path / "voicecall.yaml"
    cfg.write_text(f"store:\n  url: {json.dumps(store_url)}\nplugins:\n  voice-call:\n    local:\n"
                   "      llm: {type: echo}\n      tts: {type: tone}\n")
    log = tmp_path / "server.log"
    proc = _serve(cfg, port, log)
    try:
        _wait_healthy(port, proc)
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                           "output_modalities": ["text"]}}))
            for text in ("first question about apples", "second question about pears"):
                await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
                await ws.send(json.dumps({"type": "response.create"}))
                while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "response.done":
                    pass
            # an item in flight: created but the conversation is never closed cleanly
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "third, cut off"}]}}))
            await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = _serve(cfg, port, log)
    try:
        _wait_healthy(port, proc)
        detail = _latest(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(15)
    texts = [i["text"] for i in detail["items"]]
    assert texts[:4] == ["first question about apples", "You said: first question about apples.",
                         "second question about pears", "You said: second question about pears."], texts
    assert detail["ended_at"] is not None  # closed on restart
    assert len(detail["responses"]) == 2
