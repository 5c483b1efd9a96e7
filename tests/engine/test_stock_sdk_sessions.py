"""The session payloads stock clients send, byte for byte, are accepted by the local engine: ``session.updated``
and no ``error`` event, then a spoken turn with the session applied; ``tracing`` is kept in the history.

The payloads (tests/stock_payloads.py) are sent through the official openai SDK.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import ServerThread, speech_pcm
from tests.engine.sdk_helpers import append_pcm, client_for, collect_until, of_type, recv_json
from tests.stock_payloads import AGENTS_INITIAL, AGENTS_MODEL, AGENTS_TRACING, DOCUMENTED


async def _updated(conn: Any, session: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    await conn.session.update(session=session)
    await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"), timeout=30, into=events)
    assert events[-1]["type"] == "session.updated", events[-1]
    return events[-1]["session"]


async def test_agents_sdk_session_is_applied_without_errors(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    events: list[dict[str, Any]] = []
    async with client.realtime.connect(model=AGENTS_MODEL) as conn:
        events.append(await recv_json(conn))
        assert events[0]["type"] == "session.created" and events[0]["session"]["tracing"] is None
        session = await _updated(conn, AGENTS_INITIAL, events)
        assert session["model"] == AGENTS_MODEL  # the local engine reports what was asked
        assert session["instructions"] == AGENTS_INITIAL["instructions"]
        assert session["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        assert session["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
        session = await _updated(conn, AGENTS_TRACING, events)
        assert session["tracing"] == "auto" and session["model"] == AGENTS_MODEL
        # A spoken turn with that session: the SDK's semantic VAD ends it, an answer comes back.
        await append_pcm(conn, speech_pcm("What is the capital of France?", lead_s=0.5, tail_s=2.0))
        await collect_until(conn, lambda e: e["type"] == "response.done", timeout=90, into=events)
    assert not of_type(events, "error"), of_type(events, "error")
    done = of_type(events, "response.done")[-1]["response"]
    assert done["status"] == "completed", done
    assert of_type(events, "response.output_audio.delta")
    # tracing is kept with the conversation's history
    async with httpx.AsyncClient(base_url=local_server.http, timeout=10) as http:
        r = await http.get("/api/conversations", params={"limit": "50"})
    assert r.status_code == 200, r.text
    mine = [c for c in r.json()["data"] if c["model"] == AGENTS_MODEL]
    assert mine and mine[0]["metadata"].get("tracing") == "auto", r.json()["data"][:3]


async def test_documented_payload_and_what_cannot_be_honoured(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    events: list[dict[str, Any]] = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        events.append(await recv_json(conn))
        session = await _updated(conn, DOCUMENTED, events)
        assert session["tracing"] == DOCUMENTED["tracing"]
        assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
        assert [t["name"] for t in session["tools"]] == ["get_weather"]
        # repeating the model and the tracing, or tracing "auto" (keeps the object), is no error
        session = await _updated(conn, {"type": "realtime", "model": "gpt-realtime", "tracing": "auto"}, events)
        assert session["tracing"] == DOCUMENTED["tracing"]
        assert not of_type(events, "error")
        # fields that truly cannot be honoured still get an error naming them; nothing of the event is applied
        for patch, code, param in (
            ({"tracing": {"workflow_name": "other"}}, "invalid_value", "session.tracing"),
            ({"prompt": {"id": "pmpt_123"}, "instructions": "x"}, "unsupported_parameter", "session.prompt"),
            ({"include": ["item.input_audio_transcription.logprobs"]}, "unsupported_parameter", "session.include"),
        ):
            await conn.send_raw(json.dumps({"type": "session.update", "event_id": f"ev_{code}",
                                            "session": {"type": "realtime", **patch}}))
            ev = await collect_until(conn, lambda e: e["type"] in ("error", "session.updated"), timeout=20)
            assert ev[-1]["type"] == "error", ev[-1]
            assert (ev[-1]["error"]["code"], ev[-1]["error"]["param"]) == (code, param), ev[-1]
        session = await _updated(conn, {"type": "realtime"}, events)
        assert session["instructions"] == DOCUMENTED["instructions"]
