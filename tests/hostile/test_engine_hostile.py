"""Hostile clients against the local engine over WebSocket: every malformed, deep, huge or out-of-order event gets
an ``error`` and the session goes on; clients that do not read, send nothing or go quiet are closed with a reason;
buffered input audio and the conversation are bounded."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np

from tests.conftest import ServerThread
from tests.hostile.conftest import MAX_MESSAGE
from tests.hostile.wsraw import closed_with, connect, events_until, next_event
from voicecall.bench.hostile import hostile_messages
from voicecall.transports.outbound import OutboundQueue


def _text_item(text: str, item_id: str | None = None) -> str:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id:
        item["id"] = item_id
    return json.dumps({"type": "conversation.item.create", "item": item})


async def test_hostile_messages_each_get_an_error_and_the_session_goes_on(hostile_server: ServerThread) -> None:
    ws = await connect(hostile_server.ws)
    try:
        assert (await next_event(ws))["type"] == "session.created"
        for n, (name, message, code) in enumerate(hostile_messages(MAX_MESSAGE)):
            await ws.send(message)
            await ws.send(json.dumps({"type": "input_audio_buffer.clear", "event_id": f"mark-{n}"}))
            events = await events_until(ws, "input_audio_buffer.cleared")
            errors = [e["error"] for e in events if e["type"] == "error"]
            for err in errors:
                assert err["message"] and err["type"], (name, err)
                assert len(json.dumps(err)) < 4000, (name, "an error echoed too much", len(json.dumps(err)))
            if code is not None:
                assert [e["code"] for e in errors] == [code], (name, errors)
        # ... and the session still answers.
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                         "output_modalities": ["text"]}}))
        await ws.send(_text_item("still here"))
        await ws.send(json.dumps({"type": "response.create"}))
        done = (await events_until(ws, "response.done"))[-1]
        assert done["response"]["status"] == "completed"
    finally:
        await ws.close()


def test_outbound_queue_drops_audio_then_overflows() -> None:
    q = OutboundQueue(1000)
    assert q.put("x" * 2000)  # an empty queue takes one message of any size
    assert not q.put("d" * 10, droppable=True) and q.dropped == 1
    assert not q.overflowed
    q2 = OutboundQueue(1000)
    assert q2.put("e" * 400) and q2.put("d" * 50, droppable=True)
    assert not q2.put("d" * 100, droppable=True)  # past half: audio is dropped, events are not
    assert q2.put("e" * 500)
    assert not q2.put("e" * 100) and q2.overflowed and q2.bytes == 0


async def _sessions(srv: ServerThread) -> int:
    async with httpx.AsyncClient() as http:
        return int((await http.get(srv.http + "/healthz")).json()["sessions"])


async def test_client_that_does_not_read_is_closed_and_its_slot_freed(hostile_server: ServerThread) -> None:
    ws = await connect(hostile_server.ws, max_queue=1)
    audio = base64.b64encode(np.zeros(24000 * 2, np.int16).tobytes()).decode()
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "id": "item_audio", "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}}))
    for _ in range(400):  # each answer carries the 2 s of audio (128 kB): 50 MB the client never reads
        await ws.send('{"type":"conversation.item.retrieve","item_id":"item_audio"}')
    await asyncio.sleep(3)  # not reading: what the socket buffers cannot hold piles up on the server
    code, reason, _ = await closed_with(ws)
    assert code == 1008 and reason.startswith("client too slow"), (code, reason)
    for _ in range(100):
        if await _sessions(hostile_server) == 0:
            break
        await asyncio.sleep(0.1)
    assert await _sessions(hostile_server) == 0


async def test_silent_and_idle_websockets_are_closed(hostile_server: ServerThread) -> None:
    silent = await connect(hostile_server.ws)
    code, reason, events = await closed_with(silent)
    assert code == 1008 and "idle timeout" in reason
    assert events[0]["type"] == "session.created" and events[-1]["error"]["code"] == "idle_timeout"
    quiet = await connect(hostile_server.ws)
    await next_event(quiet)
    await quiet.send('{"type":"input_audio_buffer.clear"}')
    code, reason, events = await closed_with(quiet)
    assert code == 1008 and "idle timeout" in reason and events[-1]["error"]["code"] == "idle_timeout"


async def test_input_audio_and_conversation_are_bounded(hostile_server: ServerThread) -> None:
    ws = await connect(hostile_server.ws)
    try:
        await next_event(ws)
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": None}}}}))
        await events_until(ws, "session.updated")
        second = base64.b64encode(np.zeros(24000, np.int16).tobytes()).decode()
        for _ in range(8):  # 8 s into a 5 s buffer: one error, not one per append
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": second}))
        await ws.send('{"type":"input_audio_buffer.clear"}')
        events = await events_until(ws, "input_audio_buffer.cleared")
        assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["input_audio_buffer_full"]
        for i in range(20):
            await ws.send(_text_item(f"item {i}", f"item_{i}"))
        await ws.send(_text_item("one too many", "item_x"))
        await ws.send('{"type":"input_audio_buffer.clear"}')
        events = await events_until(ws, "input_audio_buffer.cleared")
        errors = [e["error"] for e in events if e["type"] == "error"]
        assert [e["code"] for e in errors] == ["conversation_full"], errors
        await ws.send('{"type":"conversation.item.delete","item_id":"item_0"}')  # room again
        await ws.send(_text_item("fits again", "item_y"))
        events = await events_until(ws, "conversation.item.done")
        assert events[-1]["item"]["id"] == "item_y"
    finally:
        await ws.close()
