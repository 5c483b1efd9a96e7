"""A spoken turn through each cloud stack, end to end, with the official openai SDK as the client.

The cloud services are local stand-ins written from each vendor's public API reference (voicecall/bench/standins/: the
Anthropic Messages API, Deepgram's live listen WebSocket, ElevenLabs' stream-input WebSocket, OpenAI's
transcription / speech / chat endpoints), on 127.0.0.1. Their recognisers are the embedded pocketsphinx, so the
question's words went audio → recognition → Claude's stand-in → synthesis. Checked for each stack: the transcript,
the answer, audio, which provider served each stage, the cost by stage in ``response.done`` and in the history,
and that the API keys appear nowhere (logs, events, the history database).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ServerThread, fixed_piper
from tests.engine.sdk_helpers import append_pcm, audio_of, client_for, collect_until, of_type, recv_json, words
from voicecall.audio import ENGINE_RATE, resample
from voicecall.bench.standins.anthropic import AnthropicStandIn
from voicecall.bench.standins.deepgram import DeepgramStandIn
from voicecall.bench.standins.elevenlabs import ElevenLabsStandIn
from voicecall.bench.standins.openai_audio import OpenAIAudioStandIn
from voicecall.speech.prices import DEFAULT_STAGE_PRICES
from voicecall.store import open_store

KEYS = {"anthropic": "sk-ant-SECRET-e2e-1", "deepgram": "dg-SECRET-e2e-2", "eleven": "xi-SECRET-e2e-3",
        "openai": "sk-oai-SECRET-e2e-4"}
QUESTION = "What is the capital of France?"
VAD = {"type": "silero"}


@pytest.fixture(scope="module")
def question24k() -> np.ndarray:
    piper = fixed_piper()  # deterministic: the Deepgram stand-in's pocketsphinx misheard ~1 in 8 sampled renditions
    pcm = resample(np.concatenate(list(piper.synthesize(QUESTION))), piper.sample_rate, ENGINE_RATE)
    x = np.concatenate([np.zeros(int(0.4 * ENGINE_RATE)), pcm, np.zeros(int(1.5 * ENGINE_RATE))]).astype(np.float64)
    x += np.random.default_rng(3).normal(0, 60, x.shape)
    return np.clip(x, -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def standins() -> Iterator[dict[str, Any]]:
    with AnthropicStandIn(KEYS["anthropic"]) as a, DeepgramStandIn(KEYS["deepgram"]) as d, \
            ElevenLabsStandIn(KEYS["eleven"]) as e, OpenAIAudioStandIn(KEYS["openai"]) as o:
        yield {"anthropic": a, "deepgram": d, "eleven": e, "openai": o}


@pytest.fixture(autouse=True)
def keys_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for key in KEYS.values():
        assert key not in caplog.text


def claude_deepgram_elevenlabs(s: dict[str, Any]) -> dict[str, Any]:
    return {"vad": VAD,
            "stt": {"type": "deepgram", "baseUrl": s["deepgram"].ws, "apiKey": KEYS["deepgram"], "timeout": 15},
            "llm": {"type": "anthropic", "baseUrl": s["anthropic"].http, "apiKey": KEYS["anthropic"]},
            "tts": {"type": "elevenlabs", "baseUrl": s["eleven"].ws, "apiKey": KEYS["eleven"],
                    "voices": {"marin": "voice-for-marin"}}}


def openai_pipeline(s: dict[str, Any]) -> dict[str, Any]:
    base = s["openai"].http + "/v1"
    return {"vad": VAD,
            "stt": {"type": "openai-compatible", "baseUrl": base, "apiKey": KEYS["openai"],
                    "model": "gpt-4o-mini-transcribe"},
            "llm": {"type": "openai-compatible", "baseUrl": base, "apiKey": KEYS["openai"], "model": "gpt-4o-mini"},
            "tts": {"type": "openai-compatible", "baseUrl": base, "apiKey": KEYS["openai"], "model": "gpt-4o-mini-tts"}}


def serve(make_server: Callable[..., ServerThread], stack: dict[str, Any], **extra: Any) -> ServerThread:
    local = {f"plugins.voice-call.local.{k}": v for k, v in stack.items()}
    return make_server(**local, **{f"plugins.voice-call.local.{k}": v for k, v in extra.items()})


async def spoken_turn(srv: ServerThread, pcm: np.ndarray) -> list[dict[str, Any]]:
    client = client_for(srv.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await recv_json(conn))["type"] == "session.created"
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        await append_pcm(conn, pcm)
        events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=60)
        if not of_type(events, "conversation.item.input_audio_transcription.completed"):
            await collect_until(conn, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed",
                                timeout=20, into=events)
    return events


async def history_of(srv: ServerThread, tmp_path: Path) -> Any:
    store = open_store(srv.config.store.url)
    await store.open()
    try:
        for _ in range(50):  # the recorder writes in the background
            convs, _ = await store.list_conversations(limit=5)
            if convs and convs[0].cost_usd > 0:
                return await store.get_conversation(convs[0].id)
            await asyncio.sleep(0.1)
        raise AssertionError("no priced conversation in the history")
    finally:
        await store.close()


def no_keys_in(srv: ServerThread, events: list[dict[str, Any]]) -> None:
    db = Path(srv.config.store.url.removeprefix("sqlite:///"))
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    dumped = json.dumps(events)
    for key in KEYS.values():
        assert key.encode() not in raw and key not in dumped


async def test_claude_deepgram_elevenlabs_spoken_turn(make_server: Callable[..., ServerThread], standins: dict[str, Any],
                                                     question24k: np.ndarray, tmp_path: Path) -> None:
    """The seed's LiveKit-style stack: stand-ins of Deepgram, Claude and ElevenLabs."""
    srv = serve(make_server, claude_deepgram_elevenlabs(standins))
    events = await spoken_turn(srv, question24k)
    heard = of_type(events, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert {"capital", "france"} <= words(heard), heard
    answer = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
    assert answer == "The capital of France is Paris."
    assert len(audio_of(events)) >= ENGINE_RATE * 0.4  # 6 words of the stand-in voice: 80 ms each
    assert not of_type(events, "error")
    done = of_type(events, "response.done")[-1]["response"]
    xv = done["x_voicecall"]
    assert xv["providers"] == {"stt": "deepgram", "llm": "anthropic", "tts": "elevenlabs"}
    stages = xv["cost"]["stages"]
    stt, llm, tts = (stages[k]["providers"][0] for k in ("stt", "llm", "tts"))
    assert stt["billing"] == "deepgram/nova-3" and stt["audio_seconds"] > 1.0
    assert stt["usd"] == pytest.approx(stt["audio_seconds"] / 60 * DEFAULT_STAGE_PRICES["deepgram/nova-3"].per_minute,
                                       rel=1e-3)
    haiku = DEFAULT_STAGE_PRICES["anthropic/claude-haiku-4-5"]
    assert llm["input_tokens"] > 0 and llm["output_tokens"] == 6
    assert llm["usd"] == pytest.approx(llm["input_tokens"] / 1e6 * haiku.input_per_mtok
                                       + llm["output_tokens"] / 1e6 * haiku.output_per_mtok, rel=1e-3)
    assert abs(tts["characters"] - len(answer)) <= 2  # the chunks' text (the spaces between chunks are not sent)
    assert tts["usd"] == pytest.approx(tts["characters"] / 1000 * 0.05, rel=1e-3)
    assert xv["cost"]["total_usd"] == pytest.approx(stt["usd"] + llm["usd"] + tts["usd"], rel=1e-6)
    assert standins["eleven"].voices_seen[-1] == "voice-for-marin"  # the session's voice, mapped by config
    detail = await history_of(srv, tmp_path)
    assert detail.conversation.cost_usd == pytest.approx(xv["cost"]["total_usd"], rel=1e-6)
    from voicecall.store.export import cost_by_stage, detail_markdown

    split = cost_by_stage(detail.responses)
    assert split["stt"]["providers"] == ["deepgram"] and split["tts"]["usd"] == pytest.approx(tts["usd"])
    assert "| Cost by stage | STT $" in detail_markdown(detail)
    no_keys_in(srv, events)


async def test_openai_pipeline_spoken_turn(make_server: Callable[..., ServerThread], standins: dict[str, Any],
                                           question24k: np.ndarray) -> None:
    """STT, LLM and TTS through stand-ins of OpenAI's transcription, chat and speech endpoints. They are not
    api.openai.com, so the default prices do not apply: local.prices prices them."""
    prices = {"openai-compatible/gpt-4o-mini-transcribe": {"perMinute": 0.003},
              "openai-compatible/gpt-4o-mini": {"inputPerMTok": 0.15, "outputPerMTok": 0.6},
              "openai-compatible/gpt-4o-mini-tts": {"perMinute": 0.015}}
    srv = serve(make_server, openai_pipeline(standins), prices=prices)
    events = await spoken_turn(srv, question24k)
    heard = of_type(events, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert {"capital", "france"} <= words(heard), heard
    assert of_type(events, "response.output_audio_transcript.done")[0]["transcript"] == "The capital of France is Paris."
    done = of_type(events, "response.done")[-1]["response"]
    assert done["x_voicecall"]["providers"] == {"stt": "openai-compatible", "llm": "openai-compatible",
                                                "tts": "openai-compatible"}
    tts = done["x_voicecall"]["cost"]["stages"]["tts"]["providers"][0]
    assert tts["usd"] == pytest.approx(tts["audio_seconds"] / 60 * 0.015, rel=1e-3) and tts["usd"] > 0
    assert standins["openai"].speech_bodies[-1]["voice"] == "marin"
    no_keys_in(srv, events)


async def test_fallback_chain_answers_when_the_first_providers_fail(
        make_server: Callable[..., ServerThread], standins: dict[str, Any], question24k: np.ndarray,
        caplog: pytest.LogCaptureFixture) -> None:
    """Claude answers 500 and ElevenLabs never sends a first byte: within the same turn the chains move on to the
    OpenAI-compatible LLM and the embedded tone TTS; the user hears an answer; response.done says who served."""
    stack = claude_deepgram_elevenlabs(standins)
    stack["llm"] = {"type": "fallback", "firstByteTimeout": 2, "chain": [
        stack["llm"], {"type": "openai-compatible", "baseUrl": standins["openai"].http + "/v1",
                       "apiKey": KEYS["openai"], "model": "gpt-4o-mini"}]}
    stack["tts"] = {"type": "fallback", "firstByteTimeout": 1, "chain": [stack["tts"], {"type": "tone"}]}
    srv = serve(make_server, stack)
    standins["anthropic"].fail("500")
    standins["eleven"].fail("stall")
    try:
        events = await spoken_turn(srv, question24k)
    finally:
        standins["anthropic"].fail(None)
        standins["eleven"].fail(None)
    assert not of_type(events, "error")
    assert of_type(events, "response.output_audio_transcript.done")[0]["transcript"] == "The capital of France is Paris."
    assert len(audio_of(events)) >= ENGINE_RATE * 0.4  # 6 words of the stand-in voice: 80 ms each
    done = of_type(events, "response.done")[-1]["response"]
    assert done["status"] == "completed"
    assert done["x_voicecall"]["providers"] == {"stt": "deepgram", "llm": "openai-compatible", "tts": "tone"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "voicecall.speech.fallback"]
    assert any("llm fallback: entry 1 (anthropic" in w for w in warnings)
    assert any("tts fallback: entry 1 (elevenlabs" in w and "first-byte timeout" in w for w in warnings)


async def test_a_failing_stack_reports_an_error_not_a_hang(make_server: Callable[..., ServerThread],
                                                          standins: dict[str, Any]) -> None:
    """No fallback: Claude never sends a first byte. The client gets an llm_error within 2 s of the timeout."""
    stack = claude_deepgram_elevenlabs(standins)
    stack["llm"] = {**stack["llm"], "timeout": 1}
    srv = serve(make_server, stack)
    standins["anthropic"].fail("stall")
    try:
        client = client_for(srv.http)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await recv_json(conn)
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": QUESTION}]})
            t0 = time.monotonic()
            await conn.response.create()
            events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=30)
            elapsed = time.monotonic() - t0
    finally:
        standins["anthropic"].fail(None)
    err = of_type(events, "error")[0]["error"]
    assert err["code"] == "llm_error" and "Anthropic timed out" in err["message"]
    assert events[-1]["response"]["status"] == "failed"
    assert elapsed < 1 + 2.0  # the bound: within 2 s of the timeout


async def test_claude_tool_use_maps_to_realtime_function_calls(make_server: Callable[..., ServerThread],
                                                               standins: dict[str, Any]) -> None:
    """Realtime tools → Anthropic ``tools``; Claude's ``tool_use`` → ``response.function_call_arguments.*`` and a
    ``function_call`` item; the client's ``function_call_output`` → a ``tool_result`` block in the next request."""
    srv = serve(make_server, claude_deepgram_elevenlabs(standins))
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    client = client_for(srv.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [tool],
                                           "tool_choice": "required"})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Paris"}]})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=30)
        done = of_type(events, "response.function_call_arguments.done")[0]
        assert done["name"] == "get_weather" and json.loads(done["arguments"]) == {"city": "Paris"}
        assert done["call_id"].startswith("toolu_")
        assert len(of_type(events, "response.function_call_arguments.delta")) == 2
        sent = standins["anthropic"].requests[-1]
        assert sent["tool_choice"] == {"type": "any"} and sent["tools"][0]["name"] == "get_weather"
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": done["call_id"],
                                                  "output": '{"sky": "sunny"}'})
        await conn.session.update(session={"type": "realtime", "tool_choice": "auto"})
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=30)
    # the stand-in answers with the raw result; the engine's tool-markup filter keeps raw JSON out of the answer
    assert of_type(events, "response.output_text.done")[0]["text"] == "The tool answered ."
    blocks = [b for m in standins["anthropic"].requests[-1]["messages"] for b in m["content"]]
    assert {"type": "tool_result", "tool_use_id": done["call_id"], "content": '{"sky": "sunny"}'} in blocks


async def test_stt_and_tts_failures_are_clear_error_events(make_server: Callable[..., ServerThread],
                                                           standins: dict[str, Any], question24k: np.ndarray) -> None:
    """Deepgram refuses the key (401): stt_error + transcription.failed. ElevenLabs answers 500: tts_error and a
    failed response. Neither message carries a key."""
    srv = serve(make_server, claude_deepgram_elevenlabs(standins))
    standins["deepgram"].fail("401")
    try:
        events = await spoken_turn_until(srv, question24k, "conversation.item.input_audio_transcription.failed")
    finally:
        standins["deepgram"].fail(None)
    err = of_type(events, "error")[0]["error"]
    assert err["code"] == "stt_error" and "Deepgram answered HTTP 401" in err["message"]
    standins["eleven"].fail("500")
    try:
        client = client_for(srv.http)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await recv_json(conn)
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": QUESTION}]})
            await conn.response.create()
            events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=30)
    finally:
        standins["eleven"].fail(None)
    err = of_type(events, "error")[0]["error"]
    assert err["code"] == "tts_error" and "ElevenLabs answered HTTP 500" in err["message"]
    assert events[-1]["response"]["status"] == "failed"
    no_keys_in(srv, events)


async def spoken_turn_until(srv: ServerThread, pcm: np.ndarray, etype: str) -> list[dict[str, Any]]:
    client = client_for(srv.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad"}}}})
        await append_pcm(conn, pcm)
        return await collect_until(conn, lambda e: e["type"] == etype, timeout=60)
