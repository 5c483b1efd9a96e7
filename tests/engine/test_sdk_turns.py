"""Complete turns against a running server with the embedded default stack, driven by the official openai SDK.

Speech is synthesized at test time by the embedded TTS (Piper) and recognised by the embedded STT (Whisper tiny.en),
so the words checked here went through the real pipeline end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import ServerThread, speech_pcm
from tests.engine.sdk_helpers import append_pcm, audio_of, client_for, collect_until, index_of, of_type, recv_json, words

QUESTION = "What is the capital of France?"


async def _session(conn, **session) -> dict:
    await conn.session.update(session={"type": "realtime", **session})
    ev = await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"))
    assert ev[-1]["type"] == "session.updated", ev[-1]
    return ev[-1]["session"]


@pytest.mark.conformance  # openai-python's place in the conformance suite (docs/protocol.md)
async def test_vad_spoken_turn_event_sequence(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        first = await recv_json(conn)
        assert first["type"] == "session.created"
        assert first["session"]["type"] == "realtime" and first["session"]["object"] == "realtime.session"
        await _session(conn, audio={"input": {"transcription": {"model": "whisper-1"},
                                              "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
        pcm = speech_pcm(QUESTION, lead_s=0.5, tail_s=1.2)
        await append_pcm(conn, pcm, pace=0.1)  # real time, as a microphone: partial transcripts stream
        events = await collect_until(conn, lambda e: e["type"] in ("response.done",))
        # transcription may arrive after response.done
        if not of_type(events, "conversation.item.input_audio_transcription.completed"):
            await collect_until(conn, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed",
                                timeout=20, into=events)
    types = [e["type"] for e in events]
    assert "error" not in types, of_type(events, "error")
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
             "conversation.item.added", "conversation.item.done", "response.created", "response.output_item.added",
             "response.content_part.added", "response.output_audio_transcript.delta", "response.output_audio.delta",
             "response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
             "response.output_item.done", "response.done"]
    pos = -1
    for t in order:
        nxt = index_of(events, t, pos + 1)
        assert nxt > pos, f"{t} out of order in {types}"
        pos = nxt
    started = of_type(events, "input_audio_buffer.speech_started")[0]
    committed = of_type(events, "input_audio_buffer.committed")[0]
    assert started["item_id"] == committed["item_id"]
    assert 200 <= started["audio_start_ms"] <= 700  # 0.5 s lead minus 300 ms prefix padding, VAD tolerance
    heard = of_type(events, "conversation.item.input_audio_transcription.completed")[0]
    assert heard["item_id"] == committed["item_id"]
    assert {"capital", "france"} <= words(heard["transcript"]), heard["transcript"]
    # deltas (stable words of the partials while the user spoke, then the rest) add up to the transcript
    deltas = of_type(events, "conversation.item.input_audio_transcription.delta")
    assert deltas and "".join(d["delta"] for d in deltas) == heard["transcript"]
    done = of_type(events, "response.done")[0]["response"]
    assert done["status"] == "completed"
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    assert done["usage"]["input_token_details"]["audio_tokens"] > 0
    transcript = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
    assert transcript.strip()
    audio = audio_of(events)
    assert len(audio) > 24000 * 0.3 and np.abs(audio).max() > 1000  # audible answer
    # every server event has an event_id
    assert all(e.get("event_id", "").startswith("event_") for e in events)


async def test_manual_commit_turn(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        sess = await _session(conn, audio={"input": {"turn_detection": None,
                                                     "transcription": {"model": "gpt-4o-mini-transcribe"}}})
        assert sess["audio"]["input"]["turn_detection"] is None
        await append_pcm(conn, speech_pcm(QUESTION, tail_s=0.3))
        await conn.input_audio_buffer.commit(event_id="commit-1")
        events = await collect_until(conn, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed")
        assert not of_type(events, "input_audio_buffer.speech_started")  # no VAD in manual mode
        assert {"capital", "france"} <= words(events[-1]["transcript"])
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        assert events[-1]["response"]["status"] == "completed"
        assert len(audio_of(events)) > 0


async def test_text_turn(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _session(conn, output_modalities=["text"])
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": QUESTION}]})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
    assert not of_type(events, "response.output_audio.delta")
    deltas = "".join(e["delta"] for e in of_type(events, "response.output_text.delta"))
    done = of_type(events, "response.output_text.done")[0]["text"]
    assert deltas == done and done.strip()
    assert "paris" in done.lower()  # SmolLM2 knows this one
    item = of_type(events, "conversation.item.added")
    assert item[0]["item"]["content"][0] == {"type": "input_text", "text": QUESTION}


async def test_out_of_band_response_and_overrides(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Hello there."}]})
        await collect_until(conn, lambda e: e["type"] == "conversation.item.done")
        await conn.response.create(response={"conversation": "none", "output_modalities": ["text"],
                                              "metadata": {"purpose": "summary"},
                                              "instructions": "Reply with one word.",
                                              "input": [{"type": "message", "role": "user",
                                                         "content": [{"type": "input_text", "text": "Say yes."}]}]})
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        done = events[-1]["response"]
        assert done["conversation_id"] is None and done["metadata"] == {"purpose": "summary"}
        assert not of_type(events, "conversation.item.added")  # out-of-band: nothing joins the conversation
        assert of_type(events, "response.output_text.done")


async def test_function_call_round_trip(local_server: ServerThread) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Get the current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _session(conn, tools=[tool], tool_choice="auto", output_modalities=["text"])
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is the weather in Paris?"}]})
        await conn.response.create(response={"tool_choice": {"type": "function", "name": "get_weather"}})
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        call = of_type(events, "response.function_call_arguments.done")[0]
        assert call["name"] == "get_weather" and call["call_id"]
        args = json.loads(call["arguments"])
        assert isinstance(args.get("city"), str) and args["city"]
        deltas = "".join(e["delta"] for e in of_type(events, "response.function_call_arguments.delta"))
        assert deltas == call["arguments"]
        out_item = events[-1]["response"]["output"][0]
        assert out_item["type"] == "function_call" and out_item["arguments"] == call["arguments"]
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call["call_id"],
                                                  "output": json.dumps({"temperature_c": 21, "sky": "sunny"})})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        assert events[-1]["response"]["status"] == "completed"
        text = of_type(events, "response.output_text.done")[0]["text"]
        assert text.strip()


async def test_barge_in_cancels_and_truncate_cuts_to_what_was_heard(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _session(conn, instructions="You are a storyteller. Always answer with a long story of many sentences.",
                       audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me a long story about a dragon and a knight."}]})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.output_audio.delta")
        assistant_id = events[-1]["item_id"]
        # The user talks over the answer: the server's VAD must cancel the response at once.
        await append_pcm(conn, speech_pcm("Stop, wait a moment please.", lead_s=0.2, tail_s=0.2))
        events += await collect_until(conn, lambda e: e["type"] == "response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "turn_detected"
        started = of_type(events, "input_audio_buffer.speech_started")
        assert started and events.index(started[0]) < len(events) - 1
        full = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
        # The client heard only the first 400 ms: it truncates the item, the server keeps only that.
        await conn.conversation.item.truncate(item_id=assistant_id, content_index=0, audio_end_ms=400)
        ev = await collect_until(conn, lambda e: e["type"] in ("conversation.item.truncated", "error"))
        assert ev[-1]["type"] == "conversation.item.truncated", ev[-1]
        assert ev[-1]["audio_end_ms"] == 400
        await conn.conversation.item.retrieve(item_id=assistant_id)
        ev = await collect_until(conn, lambda e: e["type"] in ("conversation.item.retrieved", "error"))
        item = ev[-1]["item"]
        heard = item["content"][0]["transcript"]
        assert len(heard) < len(full)
        assert full.startswith(heard)
        audio_b64 = item["content"][0]["audio"]
        import base64
        assert len(base64.b64decode(audio_b64)) == 400 * 48  # 400 ms of 24 kHz 16-bit audio
