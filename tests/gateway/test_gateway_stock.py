"""Stock clients through the gateway, in front of voicecall's local engine as the upstream (it speaks GA as OpenAI
does) or the recording stand-in of OpenAI: the Agents SDK's session payloads (model kept, tracing passed through and
kept in the gateway's history), a foreign page refused, beta clients translated both ways."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.beta_client import beta_append, beta_audio, beta_recv_until, beta_send
from tests.conftest import speech_pcm
from tests.gateway.gwtools import GATEWAY_KEY, MODEL, conversations, sdk_client, wait_until
from tests.stock_payloads import AGENTS_INITIAL, AGENTS_MODEL, AGENTS_TRACING, BETA_SESSION


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


async def test_beta_client_spoken_turn_through_the_gateway(make_gateway, local_upstream) -> None:
    """A beta client (OpenAI-Beta header) through the gateway: GA upstream (voicecall's engine, echo stack),
    beta names back; the history records the turn."""
    gw = make_gateway(f"{local_upstream.http}/v1")
    events: list[dict[str, Any]] = []
    async with websockets.connect(f"ws://127.0.0.1:{gw.port}/v1/realtime?model=gpt-4o-realtime-preview",
                                  additional_headers={"OpenAI-Beta": "realtime=v1",
                                                      "Authorization": f"Bearer {GATEWAY_KEY}"}) as ws:
        created = await beta_recv_until(ws, {"session.created"}, events, timeout=30)
        assert created["session"]["model"] == MODEL and created["session"]["voice"] == "marin"
        assert created["session"]["instructions"] == "You are the gateway's assistant."
        await beta_send(ws, {"type": "session.update", "session": {**BETA_SESSION, "model": "gpt-4o-realtime-preview",
                                                                   "turn_detection": None}})
        session = (await beta_recv_until(ws, {"session.updated", "error"}, events, timeout=30))["session"]
        assert session["model"] == MODEL and session["input_audio_format"] == "pcm16"
        assert session["temperature"] == 0.8 and session["turn_detection"] is None
        await beta_append(ws, speech_pcm("What is the capital of France?", lead_s=0.3, tail_s=0.5))
        await beta_send(ws, {"type": "input_audio_buffer.commit"})
        await beta_send(ws, {"type": "response.create"})
        done = await beta_recv_until(ws, {"response.done"}, events, timeout=90)
    types = [e["type"] for e in events]
    assert "error" not in types, [e for e in events if e["type"] == "error"]
    assert {"conversation.item.created", "response.audio.delta", "response.audio_transcript.done"} <= set(types)
    assert done["response"]["status"] == "completed" and done["response"]["modalities"] == ["text", "audio"]
    answer = next(e for e in events if e["type"] == "response.audio_transcript.done")["transcript"]
    assert answer.lower().startswith("you said") and "capital" in answer.lower(), answer
    assert len(beta_audio(events)) > 2400
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    convs = await conversations(gw)
    assert any(i["role"] == "assistant" and "capital" in (i["text"] or "").lower() for i in convs[0]["items"]), convs


async def test_beta_subprotocol_client_speaks_ga_upstream(make_gateway, upstream) -> None:
    """Through the gateway to the recording stand-in of OpenAI: what goes upstream is GA (no OpenAI-Beta header,
    nested session fields, no temperature), what comes back to the beta client is beta."""
    gw = make_gateway(upstream.base_url)
    events: list[dict[str, Any]] = []
    async with websockets.connect(f"ws://127.0.0.1:{gw.port}/api/realtime?model=gpt-4o-realtime-preview",
                                  subprotocols=["realtime", f"openai-insecure-api-key.{GATEWAY_KEY}",  # type: ignore[list-item]
                                                "openai-beta.realtime-v1"]) as ws:
        assert ws.subprotocol == "realtime"
        await beta_recv_until(ws, {"conversation.created"}, events, timeout=30)
        await beta_send(ws, {"type": "session.update", "event_id": "ev_s", "session": {
            "voice": "coral", "input_audio_format": "pcm16", "output_audio_format": "pcm16", "temperature": 1.0,
            "modalities": ["text", "audio"], "turn_detection": None}})
        session = (await beta_recv_until(ws, {"session.updated", "error"}, events, timeout=30))["session"]
        assert session["voice"] == "coral" and session["temperature"] == 1.0
        await beta_append(ws, speech_pcm("Hello there.", lead_s=0.1, tail_s=0.1))
        await beta_send(ws, {"type": "input_audio_buffer.commit"})
        await beta_send(ws, {"type": "response.create", "response": {"modalities": ["text", "audio"], "voice": "coral"}})
        done = await beta_recv_until(ws, {"response.done"}, events, timeout=30)
    assert done["response"]["output"][0]["content"][0]["type"] == "audio"
    assert "response.audio.delta" in [e["type"] for e in events]
    assert not [e for e in events if e["type"] == "error"]
    sent = [json.loads(text) for _, text in upstream.frames]
    update = next(e for e in sent if e["type"] == "session.update" and e.get("event_id") == "ev_s")
    assert update["session"] == {"type": "realtime", "output_modalities": ["audio"],
                                 "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                                     "turn_detection": None},
                                           "output": {"voice": "coral", "format": {"type": "audio/pcm", "rate": 24000}}}}
    create = next(e for e in sent if e["type"] == "response.create")
    assert create["response"] == {"output_modalities": ["audio"], "audio": {"output": {"voice": "coral"}}}


async def test_beta_sessions_endpoint_on_the_gateway(make_gateway, local_upstream) -> None:
    """The beta-era ``POST /v1/realtime/sessions``: minted upstream in GA, answered in the beta shape."""
    gw = make_gateway(f"{local_upstream.http}/v1")
    async with httpx.AsyncClient(base_url=gw.http, timeout=30) as http:
        r = await http.post("/v1/realtime/sessions", headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                            json={"model": "gpt-4o-realtime-preview-2025-06-03", "voice": "verse",
                                  "input_audio_format": "g711_ulaw"})
    assert r.status_code == 200, r.text
    minted = r.json()
    assert minted["model"] == MODEL and minted["voice"] == "verse" and minted["input_audio_format"] == "g711_ulaw"
    assert minted["client_secret"]["value"].startswith("ek_")
