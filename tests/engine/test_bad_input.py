"""Every kind of bad input gets an ``error`` event (type, code, message, param, event_id) and the session goes on."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
import websockets

from tests.conftest import ServerThread
from tests.engine.sdk_helpers import client_for, collect_until, recv_json


async def _error_for(conn, raw: str) -> dict:
    await conn.send_raw(raw)
    ev = await collect_until(conn, lambda e: e["type"] == "error", timeout=20)
    return ev[-1]["error"]


CASES = [
    ("{not json", "invalid_json", None, None),
    ('{"event_id": "e1"}', "invalid_event", "type", "e1"),
    ('{"type": "no.such.event", "event_id": "e2"}', "invalid_value", "type", "e2"),
    ('{"type": "input_audio_buffer.append", "audio": "@@not-base64@@", "event_id": "e3"}', "invalid_value", "audio", "e3"),
    ('{"type": "response.cancel", "event_id": "e4"}', "response_cancel_not_active", None, "e4"),
    ('{"type": "input_audio_buffer.commit", "event_id": "e5"}', "input_audio_buffer_commit_empty", None, "e5"),
    ('{"type": "conversation.item.delete", "item_id": "item_nope", "event_id": "e6"}', "item_delete_invalid_item_id",
     "item_id", "e6"),
    ('{"type": "conversation.item.retrieve", "item_id": "item_nope", "event_id": "e7"}', "item_retrieve_invalid_item_id",
     "item_id", "e7"),
    (('{"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0, "audio_end_ms": 10, '
      '"event_id": "e8"}'), "item_truncate_invalid_item_id", "item_id", "e8"),
    (('{"type": "conversation.item.create", "previous_item_id": "item_nope", "event_id": "e9", "item": {"type": '
      '"message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}'),
     "item_create_invalid_previous_item_id", "previous_item_id", "e9"),
    ('{"type": "session.update", "event_id": "e10", "session": {"type": "realtime", "temperature": 0.8}}',
     "unknown_parameter", "session.temperature", "e10"),
    ('{"type": "session.update", "event_id": "e11", "session": {"type": "realtime", "voice": "alloy"}}',
     "unknown_parameter", "session.voice", "e11"),
    (('{"type": "session.update", "event_id": "e12", "session": {"type": "realtime", "audio": {"output": {"voice": '
      '"nobody"}}}}'), "invalid_value", "session.audio.output.voice", "e12"),
    (('{"type": "session.update", "event_id": "e13", "session": {"type": "realtime", "audio": {"input": {"format": '
      '{"type": "audio/pcm", "rate": 16000}}}}}'), "invalid_value", "session.audio.input.format.rate", "e13"),
    (('{"type": "session.update", "event_id": "e14", "session": {"type": "realtime", "tools": [{"type": "mcp", '
      '"server_label": "x"}]}}'), "unsupported_parameter", "session.tools[0].type", "e14"),
    ('{"type": "response.create", "event_id": "e15", "response": {"conversation": "other"}}', "invalid_value",
     "response.conversation", "e15"),
    ('{"type": "conversation.item.truncate", "item_id": 5, "content_index": 0, "audio_end_ms": 10, "event_id": "e16"}',
     "invalid_type", "item_id", "e16"),
    ('{"type": "output_audio_buffer.clear", "event_id": "e17"}', "unsupported_event", "type", "e17"),
]


async def test_each_bad_input_gets_an_error_and_the_session_goes_on(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        for raw, code, param, eid in CASES:
            err = await _error_for(conn, raw)
            assert err["code"] == code, (raw, err)
            assert err["param"] == param, (raw, err)
            assert err["event_id"] == eid, (raw, err)
            assert err["type"] and err["message"], err
        # ... and the session still works: a text turn completes.
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Say hello."}]})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        assert events[-1]["response"]["status"] == "completed"


async def test_second_response_while_one_is_active(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Tell me a story."}]})
        await conn.response.create()
        await conn.send_raw('{"type": "response.create", "event_id": "again"}')
        events = await collect_until(conn, lambda e: e["type"] == "error")
        assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
        assert events[-1]["error"]["event_id"] == "again"
        await conn.response.cancel(event_id="stop")
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        assert events[-1]["response"]["status_details"]["reason"] == "client_cancelled"


async def test_oversize_message_gets_an_error(make_server) -> None:
    srv = make_server(**{"server.maxMessageBytes": 65536})
    async with websockets.connect(srv.ws, subprotocols=["realtime"], max_size=1 << 24) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        big = base64.b64encode(b"\0" * 100_000).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": big, "event_id": "big"}))
        ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ev["type"] == "error" and ev["error"]["code"] == "message_too_large"
        assert "65536" in ev["error"]["message"]
        await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": "after"}))
        ev = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ev["type"] == "input_audio_buffer.cleared"


async def test_subprotocol_auth_and_echo(make_server) -> None:
    srv = make_server(**{"server.apiKeys": ["secret-key-123"]})
    with pytest.raises(websockets.InvalidStatus) as exc_info:
        async with websockets.connect(srv.ws, subprotocols=["realtime"]):
            pass
    assert exc_info.value.response.status_code in (401, 403)
    async with websockets.connect(srv.ws, subprotocols=["realtime", "openai-insecure-api-key.secret-key-123"]) as ws:
        assert ws.subprotocol == "realtime"  # never the key-bearing one
        assert json.loads(await ws.recv())["type"] == "session.created"
    async with websockets.connect(srv.ws, additional_headers={"Authorization": "Bearer secret-key-123"}) as ws:
        assert ws.subprotocol is None
        assert json.loads(await ws.recv())["type"] == "session.created"
