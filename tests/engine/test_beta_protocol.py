"""The beta protocol on the local engine: a raw-WebSocket beta client (header and subprotocol variants) does a
spoken turn and a text turn and sees only beta field and event names; ``server.betaProtocol: refuse`` behaves as
OpenAI does since 2026."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from tests.beta_client import beta_append, beta_audio, beta_recv_until, beta_send
from tests.conftest import ServerThread, speech_pcm
from tests.gateway.gwtools import ECHO_STACK
from tests.stock_payloads import BETA_SESSION

BETA_MODEL = "gpt-4o-realtime-preview-2024-12-17"


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.mark.conformance  # the beta-protocol client of the conformance suite (docs/protocol.md)
async def test_beta_header_client_spoken_turn(local_server: ServerThread) -> None:
    events: list[dict[str, Any]] = []
    async with websockets.connect(f"{local_server.ws}?model={BETA_MODEL}",
                                  additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
        created = await beta_recv_until(ws, {"session.created"}, events)
        session = created["session"]
        assert session["model"] == BETA_MODEL and "audio" not in session and "output_modalities" not in session
        assert session["modalities"] == ["text", "audio"] and session["input_audio_format"] == "pcm16"
        assert (await beta_recv_until(ws, {"conversation.created"}, events))["conversation"]["id"].startswith("conv_")
        await beta_send(ws, {"type": "session.update", "event_id": "ev_beta_1", "session": BETA_SESSION})
        session = (await beta_recv_until(ws, {"session.updated", "error"}, events))["session"]
        assert session["voice"] == "sage" and session["temperature"] == 0.8
        assert session["turn_detection"]["type"] == "server_vad"
        assert session["turn_detection"]["silence_duration_ms"] == 500
        assert session["input_audio_transcription"]["model"] == "whisper-1"
        assert [t["name"] for t in session["tools"]] == ["get_weather"]
        assert session["max_response_output_tokens"] == "inf" and session["output_audio_format"] == "pcm16"
        await beta_append(ws, speech_pcm("What is the capital of France?", lead_s=0.5, tail_s=1.2))
        done = await beta_recv_until(ws, {"response.done"}, events)
    types = _types(events)
    assert "error" not in types, [e for e in events if e["type"] == "error"]
    for name in ("input_audio_buffer.speech_started", "input_audio_buffer.committed", "conversation.item.created",
                 "response.created", "response.output_item.added", "response.content_part.added",
                 "response.audio_transcript.delta", "response.audio.delta", "response.audio.done",
                 "response.audio_transcript.done", "response.output_item.done"):
        assert name in types, (name, types)
    response = done["response"]
    assert response["status"] == "completed" and response["modalities"] == ["text", "audio"]
    assert response["voice"] == "sage" and response["output_audio_format"] == "pcm16" and "audio" not in response
    assert [c["type"] for c in response["output"][0]["content"]] == ["audio"]
    assert len(beta_audio(events)) > 2400  # audible answer, beta audio deltas
    transcript = next(e for e in events if e["type"] == "response.audio_transcript.done")["transcript"]
    assert transcript.strip()


async def test_beta_subprotocol_client_text_turn_and_errors(local_server: ServerThread) -> None:
    events: list[dict[str, Any]] = []
    async with websockets.connect(local_server.ws.replace("/v1/realtime", "/api/realtime") + f"?model={BETA_MODEL}",
                                  subprotocols=["realtime", "openai-beta.realtime-v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        await beta_recv_until(ws, {"conversation.created"}, events)
        # a G.711 session with text output, as a telephony bridge of the beta era configured it
        await beta_send(ws, {"type": "session.update", "session": {
            "modalities": ["text"], "input_audio_format": "g711_ulaw", "output_audio_format": "g711_alaw",
            "turn_detection": None, "temperature": 0.7}})
        session = (await beta_recv_until(ws, {"session.updated", "error"}, events))["session"]
        assert (session["modalities"], session["input_audio_format"], session["output_audio_format"]) == (
            ["text"], "g711_ulaw", "g711_alaw")
        assert session["turn_detection"] is None and session["temperature"] == 0.7
        # beta items: an assistant message with beta content type "text", then the user's question
        await beta_send(ws, {"type": "conversation.item.create", "item": {
            "type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hello, I am here."}]}})
        added = await beta_recv_until(ws, {"conversation.item.created", "error"}, events)
        assert added["type"] == "conversation.item.created" and added["item"]["content"][0]["type"] == "text"
        await beta_send(ws, {"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}})
        await beta_send(ws, {"type": "response.create", "response": {"modalities": ["text"], "temperature": 0.9,
                                                                     "max_response_output_tokens": 60}})
        done = await beta_recv_until(ws, {"response.done"}, events)
        assert done["response"]["status"] == "completed" and done["response"]["modalities"] == ["text"]
        assert "response.text.delta" in _types(events) and "response.text.done" in _types(events)
        assert not [e for e in events if e["type"] == "error"]
        # mistakes get an error naming the beta field; the session goes on
        for patch, param in (({"input_audio_format": "pcm8"}, "session.input_audio_format"),
                             ({"voice": "nobody"}, "session.voice"),
                             ({"temperature": 3}, "session.temperature"),
                             ({"turn_detection": {"type": "server_vad", "threshold": 7}},
                              "session.turn_detection.threshold")):
            await beta_send(ws, {"type": "session.update", "event_id": "ev_bad", "session": patch})
            err = await beta_recv_until(ws, {"error", "session.updated"}, events)
            assert err["type"] == "error" and err["error"]["param"] == param, err
            assert err["error"]["event_id"] == "ev_bad"
        await beta_send(ws, {"type": "input_audio_buffer.clear"})
        assert (await beta_recv_until(ws, {"input_audio_buffer.cleared"}, events))["type"] == "input_audio_buffer.cleared"


async def test_beta_refused_when_configured(make_server: Any) -> None:
    srv = make_server(**ECHO_STACK, **{"server.betaProtocol": "refuse", "plugins.voice-call.local.preload": False})
    for kwargs in ({"additional_headers": {"OpenAI-Beta": "realtime=v1"}},
                   {"subprotocols": ["realtime", "openai-beta.realtime-v1"]}):
        async with websockets.connect(f"{srv.ws}?model={BETA_MODEL}", **kwargs) as ws:  # type: ignore[arg-type]
            ev = json.loads(await ws.recv())
            assert ev["type"] == "error" and ev["error"]["code"] == "beta_api_shape_disabled"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4000


async def test_beta_sessions_endpoint_mints_a_key_for_a_beta_client(local_server: ServerThread) -> None:
    """``POST /v1/realtime/sessions`` as the beta-era console's backend called it; its ``client_secret`` opens a
    beta WebSocket from a page (subprotocols) with that session."""
    async with httpx.AsyncClient(base_url=local_server.http, timeout=30) as http:
        r = await http.post("/v1/realtime/sessions", json={"model": "gpt-4o-realtime-preview-2025-06-03",
                                                           "voice": "verse", "modalities": ["audio", "text"],
                                                           "client_secret": {"expires_after": {"anchor": "created_at",
                                                                                               "seconds": 120}}})
        assert r.status_code == 200, r.text
        minted = r.json()
        assert minted["client_secret"]["value"].startswith("ek_") and "audio" not in minted
        assert (minted["voice"], minted["modalities"], minted["input_audio_format"]) == (
            "verse", ["text", "audio"], "pcm16")
        bad = await http.post("/v1/realtime/sessions", json={"input_audio_format": "pcm8"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "session.input_audio_format"
    key = minted["client_secret"]["value"]
    async with websockets.connect(f"{local_server.ws}?model={BETA_MODEL}", origin=local_server.http,  # type: ignore[arg-type]
                                  subprotocols=["realtime", f"openai-insecure-api-key.{key}",  # type: ignore[list-item]
                                                "openai-beta.realtime-v1"]) as ws:
        created = await beta_recv_until(ws, {"session.created"}, [])
        assert created["session"]["voice"] == "verse"
