"""Long conversations, truncation and function calling, driven by the official openai SDK against a real server.

* 10,000 user items (``conversation.item.create``), then a normal turn is answered: the oldest items are dropped
  (``truncation`` with a ``retention_ratio``); ``truncation: "disabled"`` fails that one response with
  ``context_length_exceeded`` and the session goes on.
* A function-call round trip with ``tool_choice: "auto"`` on the embedded model: the question calls the declared
  function, and after ``function_call_output`` the answer is words, with no tool markup.
* Tool markup written by a model never reaches the text, the transcript or the audio (echo LLM repeating markup).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from tests.conftest import ServerThread
from tests.engine.sdk_helpers import client_for, collect_until, of_type, recv_json

MARKUP = re.compile(r"<\/?\|?[A-Za-z_]|[{}]")
N_ITEMS = 10_000


async def _update(conn: Any, **session: Any) -> dict[str, Any]:
    await conn.session.update(session={"type": "realtime", **session})
    ev = await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"))
    assert ev[-1]["type"] == "session.updated", ev[-1]
    return ev[-1]["session"]


async def _user_text(conn: Any, text: str) -> None:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})


async def _respond(conn: Any, **response: Any) -> list[dict[str, Any]]:
    if response:
        await conn.response.create(response=response)
    else:
        await conn.response.create()
    return await collect_until(conn, lambda e: e["type"] == "response.done", timeout=180)


async def test_ten_thousand_items_then_a_turn_and_disabled_truncation(make_server: Any) -> None:
    # the embedded stack (its models are shared with the other tests); server.maxConversationItems (2000 by default)
    # raised so that the conversation really holds 10,000 items
    srv = make_server(**{"store.url": "none", "server.maxConversationItems": 20_000})
    client = client_for(srv.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        truncation = {"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"post_instructions": 400}}
        sess = await _update(conn, output_modalities=["text"], truncation=truncation,
                             audio={"input": {"turn_detection": None}})
        assert sess["truncation"] == truncation

        done: list[str] = []

        async def drain() -> None:
            while len(done) < N_ITEMS:
                ev = await recv_json(conn, 120)
                assert ev["type"] != "error", ev
                if ev["type"] == "conversation.item.done":
                    done.append(ev["item"]["id"])

        reader = asyncio.create_task(drain())
        for i in range(N_ITEMS):
            # conversation.item.create on the SDK's own connection, serialized once (the SDK's per-event model
            # building costs ~5 ms, which 10,000 times is most of a minute)
            await conn._connection.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"Note {i}: my locker number is {i}."}]}}))
            if i % 200 == 199:  # let the events come back as a reading client does
                while len(done) < i - 200 and not reader.done():
                    await asyncio.sleep(0.005)
        await asyncio.wait_for(reader, 300)
        assert len(set(done)) == N_ITEMS

        await _user_text(conn, "What is the capital of France?")
        events = await _respond(conn)
        r = of_type(events, "response.done")[0]["response"]
        assert r["status"] == "completed", r
        text = of_type(events, "response.output_text.done")[0]["text"]
        assert text.strip() and not MARKUP.search(text), text
        prompt_tokens = r["usage"]["input_token_details"]["text_tokens"]
        assert 0 < prompt_tokens < 400 + 200  # the post_instructions limit, plus instructions and the prompt frame

        # truncation disabled: this response fails clearly, the session lives on
        await _update(conn, truncation="disabled")
        events = await _respond(conn)
        errors = of_type(events, "error")
        assert errors and errors[0]["error"]["code"] == "context_length_exceeded", errors
        r = of_type(events, "response.done")[0]["response"]
        assert r["status"] == "failed"
        assert r["status_details"]["error"]["code"] == "context_length_exceeded"

        sess = await _update(conn, truncation="auto")
        events = await _respond(conn)
        assert of_type(events, "response.done")[0]["response"]["status"] == "completed"
        assert not of_type(events, "error")


WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


async def test_auto_tool_call_round_trip_speaks_the_result(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _update(conn, output_modalities=["text"], tools=[WEATHER], tool_choice="auto",
                      audio={"input": {"turn_detection": None}})
        await _user_text(conn, "What's the weather like in Paris?")
        events = await _respond(conn)
        calls = [e["item"] for e in of_type(events, "response.output_item.done") if e["item"]["type"] == "function_call"]
        assert len(calls) == 1 and calls[0]["name"] == "get_weather", [e["type"] for e in events]
        args = json.loads(calls[0]["arguments"])
        assert isinstance(args.get("city"), str)
        assert not of_type(events, "response.output_text.delta")  # a call, not words

        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": calls[0]["call_id"],
                                                  "output": json.dumps({"temperature_c": 21, "conditions": "sunny"})})
        events = await _respond(conn)
        r = of_type(events, "response.done")[0]["response"]
        assert r["status"] == "completed"
        assert not [i for i in r["output"] if i["type"] == "function_call"]  # no second call: it answers
        text = of_type(events, "response.output_text.done")[0]["text"]
        assert text.strip() and not MARKUP.search(text), text
        deltas = "".join(e["delta"] for e in of_type(events, "response.output_text.delta"))
        assert deltas == text


async def test_model_markup_never_reaches_text_transcript_or_audio(make_server: Any) -> None:
    srv = make_server(**{"plugins.voice-call.local.vad": {"type": "energy"},
                         "plugins.voice-call.local.llm": {"type": "echo"},
                         "plugins.voice-call.local.tts": {"type": "tone"}})
    client = client_for(srv.http)
    markup = ('<tool_response>{"name": "get_weather", "content": {"t": 21}}</tool_response> it is '
              'sunny {"name": "x", "arguments": {}} today')
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _update(conn, audio={"input": {"turn_detection": None}})
        await _user_text(conn, markup)
        events = await _respond(conn)  # audio: transcript deltas go with the spoken chunks
        transcript = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
        assert "sunny" in transcript and not MARKUP.search(transcript), transcript
        assert not any(MARKUP.search(e["delta"]) for e in of_type(events, "response.output_audio_transcript.delta"))
        await _update(conn, output_modalities=["text"])
        events = await _respond(conn)
        text = of_type(events, "response.output_text.done")[0]["text"]
        assert "sunny" in text and not MARKUP.search(text), text
