"""Turn taking with the official openai SDK against the embedded stack: semantic_vad waits through a
mid-sentence pause that server_vad cuts, idle_timeout_ms, and false interruptions (a backchannel does not stop
the answer, a real interruption does). Speech is synthesized by Piper at test time; no wall-clock asserts."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from tests.conftest import ServerThread, speech_pcm
from tests.engine.sdk_helpers import append_pcm, client_for, collect_until, of_type, recv_json, words

FIRST, REST = "What is the weather like in", "London today?"


def _pause(ms: int, seed: int = 5) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(0, 60, 24 * ms), -32768, 32767).astype(np.int16)


async def _update(conn: Any, **session: Any) -> dict[str, Any]:
    await conn.session.update(session={"type": "realtime", **session})
    ev = await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"))
    return ev[-1]


async def _turns(conn: Any, td: dict[str, Any]) -> list[dict[str, Any]]:
    """Say FIRST, pause 0.9 s, say REST; return the events up to the last transcription."""
    ev = await _update(conn, audio={"input": {"transcription": {"model": "whisper-1"},
                                              "turn_detection": {**td, "create_response": False}}})
    assert ev["type"] == "session.updated", ev
    pcm = np.concatenate([speech_pcm(FIRST, lead_s=0.5), _pause(900), speech_pcm(REST), _pause(3000)])
    await append_pcm(conn, pcm, pace=0.1)  # real time: the end-of-turn model runs while the pause lasts
    # Events are emitted in order: once a later session.updated arrives, every VAD decision on that audio is out.
    await conn.session.update(session={"type": "realtime", "instructions": "marker"})
    events: list[dict[str, Any]] = []
    await collect_until(conn, lambda e: e["type"] == "session.updated", into=events, timeout=30)
    while len(of_type(events, "conversation.item.input_audio_transcription.completed")) < len(
            of_type(events, "input_audio_buffer.committed")):
        await collect_until(conn, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed",
                            into=events, timeout=30)
    return events


async def test_semantic_vad_waits_through_a_mid_sentence_pause(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        fast = await _turns(conn, {"type": "server_vad", "silence_duration_ms": 350})
        assert len(of_type(fast, "input_audio_buffer.committed")) == 2  # server_vad cuts the question in two
        ev = await _update(conn, audio={"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "auto"}}})
        assert ev["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        events = await _turns(conn, {"type": "semantic_vad", "eagerness": "auto"})
    assert len(of_type(events, "input_audio_buffer.speech_stopped")) == 1
    assert len(of_type(events, "input_audio_buffer.committed")) == 1
    done = of_type(events, "conversation.item.input_audio_transcription.completed")[0]
    assert "weather" in words(done["transcript"]), done["transcript"]
    both_halves = (len(speech_pcm(FIRST, lead_s=0)) + len(speech_pcm(REST, lead_s=0))) / 24000 + 0.9
    assert done["usage"]["seconds"] >= both_halves, done  # one item holds the whole question
    assert not of_type(events, "error")


async def test_idle_timeout(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        bad = await _update(conn, audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 100}}})
        assert bad["type"] == "error" and bad["error"]["param"].endswith("idle_timeout_ms")
        bad = await _update(conn, audio={"input": {"turn_detection": {"type": "semantic_vad", "idle_timeout_ms": 6000}}})
        assert bad["type"] == "error"
        ok = await _update(conn, audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}})
        assert ok["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 5000
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Say hello."}]})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        mic = asyncio.create_task(append_pcm(conn, _pause(20000), pace=0.1))  # a silent microphone, in real time
        events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=60)
        mic.cancel()
    types = [e["type"] for e in events]
    t = types.index("input_audio_buffer.timeout_triggered")
    assert types.index("input_audio_buffer.committed") > t and types.index("response.created") > t
    trig = events[t]
    committed = of_type(events, "input_audio_buffer.committed")[0]
    assert trig["item_id"] == committed["item_id"]
    assert trig["audio_end_ms"] - trig["audio_start_ms"] == 5000
    assert events[-1]["response"]["status"] == "completed"
    assert not of_type(events, "input_audio_buffer.speech_started")


async def _answer_then_say(conn: Any, text: str) -> list[dict[str, Any]]:
    """Ask for a long answer; as soon as its audio starts, the user says ``text``. Events up to response.done and
    a few seconds more (a late decision)."""
    await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "In two sentences, tell me about a dragon who bakes bread."}]})
    await conn.response.create()
    events = await collect_until(conn, lambda e: e["type"] == "response.output_audio.delta")
    await append_pcm(conn, np.concatenate([speech_pcm(text, lead_s=0.2), _pause(1500)]), pace=0.1)
    await collect_until(conn, lambda e: e["type"] == "response.done", into=events)
    return events


async def test_backchannel_does_not_interrupt_but_a_real_interruption_does(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _update(conn, audio={"input": {"transcription": {"model": "whisper-1"},
                                             "turn_detection": {"type": "server_vad"}}})
        events = await _answer_then_say(conn, "Okay.")
        assert not of_type(events, "input_audio_buffer.speech_started"), [e["type"] for e in events]
        assert not of_type(events, "input_audio_buffer.committed")  # "okay" is not a turn of the conversation
        assert events[-1]["response"]["status"] == "completed"
        assert not of_type(events, "conversation.item.truncated")

        events = await _answer_then_say(conn, "Stop, tell me about the weather in Paris instead.")
        if not of_type(events, "input_audio_buffer.speech_started"):  # confirmed after the answer was generated
            await collect_until(conn, lambda e: e["type"] == "input_audio_buffer.speech_started", into=events)
        started = of_type(events, "input_audio_buffer.speech_started")
        if not of_type(events, "input_audio_buffer.committed"):
            await collect_until(conn, lambda e: e["type"] == "input_audio_buffer.committed", into=events)
        committed = of_type(events, "input_audio_buffer.committed")[0]
        assert committed["item_id"] == started[0]["item_id"]
