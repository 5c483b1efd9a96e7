"""Several sessions at once in one process: each gets its own, correct answer."""

from __future__ import annotations

import asyncio

from tests.conftest import ServerThread, speech_pcm
from tests.engine.sdk_helpers import append_pcm, client_for, collect_until, of_type, recv_json, words

QUESTIONS = ["What is the capital of France?", "How are you today?", "Tell me a fun fact about the ocean."]
EXPECT = [{"capital", "france"}, {"today"}, {"ocean"}]


async def _turn(http: str, question: str) -> tuple[str, int]:
    client = client_for(http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "transcription": {"model": "whisper-1"}, "turn_detection": None}}})
        await append_pcm(conn, speech_pcm(question, tail_s=0.3), pace=0.02)
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done", timeout=120)
        if not of_type(events, "conversation.item.input_audio_transcription.completed"):
            await collect_until(conn, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed",
                                into=events, timeout=30)
        heard = of_type(events, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
        n_audio = len(of_type(events, "response.output_audio.delta"))
        assert events[-1]["type"] == "response.done" or of_type(events, "response.done")
        return heard, n_audio


async def test_three_sessions_at_once(local_server: ServerThread) -> None:
    results = await asyncio.gather(*(_turn(local_server.http, q) for q in QUESTIONS))
    for (heard, n_audio), expected in zip(results, EXPECT, strict=True):
        assert expected <= words(heard), heard  # no cross-talk between sessions
        assert n_audio > 0
