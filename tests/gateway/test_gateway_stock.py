"""Stock clients through the gateway, in front of voicecall's local engine as the upstream (it speaks GA as OpenAI
does): the Agents SDK's session payloads (model kept, tracing passed through and kept in the gateway's history)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.gateway.gwtools import MODEL, conversations, sdk_client, wait_until
from tests.stock_payloads import AGENTS_INITIAL, AGENTS_MODEL, AGENTS_TRACING


async def _recv(conn: Any, until: set[str], events: list[dict[str, Any]], timeout: float = 30) -> dict[str, Any]:
    while True:
        ev = json.loads(await asyncio.wait_for(conn.recv_bytes(), timeout))
        events.append(ev)
        if ev["type"] in until:
            return ev


async def test_agents_sdk_session_through_the_gateway(make_gateway, local_upstream) -> None:
    gw = make_gateway(f"{local_upstream.http}/v1")
    events: list[dict[str, Any]] = []
    async with sdk_client(gw).realtime.connect(model=AGENTS_MODEL) as conn:
        created = await _recv(conn, {"session.created"}, events)
        assert created["session"]["model"] == MODEL
        await conn.session.update(session=AGENTS_INITIAL)
        updated = await _recv(conn, {"session.updated", "error"}, events)
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["model"] == MODEL  # the gateway keeps its configured model, and says so
        assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        await conn.session.update(session=AGENTS_TRACING)
        updated = await _recv(conn, {"session.updated", "error"}, events)
        assert updated["type"] == "session.updated" and updated["session"]["tracing"] == "auto", updated
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hello there"}]})
        await conn.response.create()
        done = await _recv(conn, {"response.done"}, events, timeout=60)
        assert done["response"]["status"] == "completed", done
    assert not [e for e in events if e["type"] == "error"], events
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    convs = await conversations(gw)
    assert convs and convs[0]["metadata"] == {"tracing": "auto"}, convs[0]
    assert convs[0]["model"] == MODEL


async def test_foreign_page_cannot_use_a_keyless_gateway(make_gateway, upstream) -> None:
    """A key-less gateway (loopback development) would spend the operator's OpenAI key for any page that opens a
    WebSocket to it: a foreign Origin is refused at the handshake and nothing reaches upstream."""
    gw = make_gateway(upstream.base_url, **{"server.apiKeys": []})
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"ws://127.0.0.1:{gw.port}/v1/realtime?model=gpt-realtime",
                                      origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(base_url=gw.http, timeout=10) as http:
        r = await http.post("/session", json={}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
    assert not upstream.requests
    # the same socket without an Origin (a backend) is relayed, through the /api/realtime alias too
    async with websockets.connect(f"ws://127.0.0.1:{gw.port}/api/realtime?model=gpt-4o-realtime-preview") as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert created["type"] == "session.created" and created["session"]["model"] == MODEL
