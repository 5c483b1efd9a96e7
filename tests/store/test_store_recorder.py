"""ConversationRecorder: GA event streams in, the right history out, and never a stall or an exception."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.store.store_events import (
    WEATHER_ANSWER,
    added_done,
    assistant_audio_answer,
    audio_b64,
    full_call,
    msg,
    response_created,
    response_done,
    session,
    usage,
)
from voicecall.store import ConversationRecorder, NullStore, Store, open_store
from voicecall.store.base import ConversationRecord, ItemRecord, ResponseRecord
from voicecall.store.pricing import cost_usd
from voicecall.store.recorder import b64_decoded_len, cut_to_heard


def recorder(store: Store, **kw: Any) -> ConversationRecorder:
    args: dict[str, Any] = {
        "conversation_id": "conv_test",
        "provider": "openai-realtime",
        "model": "gpt-realtime",
        "voice": "marin",
        "transport": "relay",
        "client": "127.0.0.1 key:ops",
    }
    args.update(kw)
    return ConversationRecorder(store, **args)


# ------------------------------------------------------------------------------------------ the story
async def test_full_call_is_recorded_in_order(store: Store) -> None:
    rec = recorder(store)
    for event in full_call():
        rec.on_server_event(event)
    rec.on_response_metrics("resp_2", {"voice_to_voice_ms": 910.0})
    await rec.close()

    d = await store.get_conversation("conv_test")
    assert d is not None
    got = [(i.id, i.role, i.type, i.text) for i in d.items]
    assert got == [
        ("item_sys", "system", "message", "Be brief."),
        ("item_u1", "user", "message", "What's the weather in Paris?"),
        ("item_fc1", None, "function_call", None),
        ("item_out1", None, "function_call_output", '{"temp_c": 21}'),
        ("item_a2", "assistant", "message", "It is sunny and twenty one degrees in Paris"),
        ("item_u3", "user", "message", "Thanks, that's enough."),
    ]
    items = {i.id: i for i in d.items}
    assert items["item_u1"].audio_ms == 2400
    assert items["item_fc1"].extra == {
        "name": "get_weather",
        "call_id": "call_1",
        "arguments": '{"city": "Paris"}',
        "response_id": "resp_1",
    }
    assert items["item_out1"].extra == {"call_id": "call_1"}
    a2 = items["item_a2"]
    assert a2.truncated is True and a2.audio_ms == 2000 and a2.text and WEATHER_ANSWER.startswith(a2.text)
    assert a2.extra["generated_audio_ms"] == 4000 and a2.extra["audio_end_ms"] == 2000
    assert a2.extra["response_id"] == "resp_2" and a2.extra["status"] == "incomplete"
    assert all(i.done_at is not None for i in d.items)

    c = d.conversation
    assert (c.model, c.voice, c.transport, c.client) == (
        "gpt-realtime-2025-08-28",
        "cedar",
        "relay",
        "127.0.0.1 key:ops",
    )
    assert c.title == "What's the weather in Paris?"
    assert c.item_count == 6 and c.ended_at is not None

    resp = {r.id: r for r in d.responses}
    assert resp["resp_1"].status == "completed" and resp["resp_2"].status == "cancelled"
    assert resp["resp_2"].status_details == {"type": "cancelled", "reason": "turn_detected"}
    assert resp["resp_2"].latency["voice_to_voice_ms"] == 910.0
    assert "first_audio_ms" in resp["resp_2"].latency
    expected_1 = cost_usd("gpt-realtime-2025-08-28", usage(200, 40, 128, 25, 0))
    expected_2 = cost_usd("gpt-realtime-2025-08-28", usage(100, 20, 64, 10, 80))
    assert resp["resp_1"].cost_usd == pytest.approx(expected_1) and expected_1 > 0
    assert resp["resp_1"].model == "gpt-realtime-2025-08-28"
    assert c.cost_usd == pytest.approx(expected_1 + expected_2)


async def test_engine_truncation_transcript_wins(store: Store) -> None:
    """The local engine says exactly what was heard: no proportional guess."""
    rec = recorder(store, provider="local", model="voicecall-local", transport="websocket")
    for e in [
        session("created", "voicecall-local", "marin"),
        *added_done(msg("u1", "user", [{"type": "input_text", "text": "Tell me a story"}]), None),
        *assistant_audio_answer("r1", "a1", "u1", "Once upon a time there was a tiny robot.", 3000),
        {
            "type": "conversation.item.truncated",
            "item_id": "a1",
            "content_index": 0,
            "audio_end_ms": 900,
            "transcript": "Once upon a",
        },
    ]:
        rec.on_server_event(e)
    rec.on_response_metrics(
        "r1",
        {
            "end_of_turn_ms": 510,
            "stt_final_ms": 40,
            "llm_first_token_ms": 180,
            "tts_first_audio_ms": 90,
            "voice_to_voice_ms": 820,
        },
    )
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None
    a1 = d.items[1]
    assert (a1.text, a1.truncated, a1.audio_ms) == ("Once upon a", True, 900)
    r = d.responses[0]
    assert r.cost_usd == 0 and d.conversation.cost_usd == 0  # local model
    assert {k: r.latency[k] for k in ("end_of_turn_ms", "voice_to_voice_ms")} == {
        "end_of_turn_ms": 510,
        "voice_to_voice_ms": 820,
    }


async def test_items_are_committed_when_done_not_before(store: Store) -> None:
    rec = recorder(store)
    rec.on_server_event(session("created", "gpt-realtime", "marin"))
    for e in added_done(msg("u1", "user", [{"type": "input_text", "text": "first"}]), None):
        rec.on_server_event(e)
    # an assistant item still being spoken
    for e in assistant_audio_answer("r1", "a1", "u1", "Half way through a sentence", 2000)[:8]:
        rec.on_server_event(e)
    assert await rec.flush(5)
    d = await store.get_conversation("conv_test")
    assert d is not None
    assert [i.id for i in d.items] == ["u1"] and d.conversation.ended_at is None
    # a clean close keeps what was said of the unfinished item (done_at stays empty)
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None and [i.id for i in d.items] == ["u1", "a1"]
    assert d.items[1].done_at is None and d.items[1].text == "Half way"
    assert d.responses[0].status == "in_progress"


async def test_webrtc_truncate_estimates_audio_from_usage(store: Store) -> None:
    """Sideband on WebRTC: no audio deltas; the cut uses 50 ms per output audio token."""
    rec = recorder(store, transport="sideband")
    text = "one two three four five six seven eight nine ten"
    final = msg("a1", "assistant", [{"type": "output_audio", "transcript": text}], status="incomplete")
    for e in [
        session("created", "gpt-realtime", "marin"),
        *added_done(msg("u1", "user", [{"type": "input_text", "text": "count"}]), None),
        response_created("r1"),
        {"type": "output_audio_buffer.started", "response_id": "r1"},
        {"type": "conversation.item.added", "previous_item_id": "u1", "item": {**final, "content": []}},
        {"type": "conversation.item.done", "previous_item_id": "u1", "item": final},
        response_done("r1", "cancelled", [final], usage(10, 0, 0, 5, 100), "turn_detected"),  # 5000 ms
        {"type": "conversation.item.truncated", "item_id": "a1", "content_index": 0, "audio_end_ms": 1500},
    ]:
        rec.on_server_event(e)
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None
    assert d.items[1].text == "one two three"  # 30 % of the characters, cut at a word
    assert d.items[1].audio_ms == 1500 and d.items[1].extra["generated_audio_ms"] == 5000
    assert "first_audio_ms" in d.responses[0].latency


async def test_relay_client_appends_give_user_audio_length(store: Store) -> None:
    rec = recorder(store)
    rec.on_server_event(session("created", "gpt-realtime", "marin"))
    for _ in range(5):
        rec.on_client_event({"type": "input_audio_buffer.append", "audio": audio_b64(200)})
    rec.on_client_event({"type": "input_audio_buffer.commit"})
    rec.on_server_event({"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": "u1"})
    for e in added_done(msg("u1", "user", [{"type": "input_audio", "transcript": None}]), None):
        rec.on_server_event(e)
    rec.on_server_event(
        {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": "u1",
            "content_index": 0,
            "error": {
                "type": "transcription_error",
                "code": "audio_unintelligible",
                "message": "The audio could not be transcribed.",
            },
        }
    )
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None
    assert d.items[0].audio_ms == 1000 and d.items[0].text is None
    assert d.items[0].extra["transcription_error"] == "The audio could not be transcribed."
    assert d.conversation.title is None


async def test_many_insertions_at_one_spot_keep_order(store: Store) -> None:
    """Float sort keys run out after ~50 halvings: the recorder renumbers and the order stays right."""
    rec = recorder(store)
    for e in added_done(msg("first", "user", [{"type": "input_text", "text": "first"}]), None):
        rec.on_server_event(e)
    for e in added_done(msg("last", "user", [{"type": "input_text", "text": "last"}]), "first"):
        rec.on_server_event(e)
    prev = "first"
    for n in range(80):  # each new item goes right after the previous new one, before "last"
        for e in added_done(msg(f"m{n:02d}", "user", [{"type": "input_text", "text": str(n)}]), prev):
            rec.on_server_event(e)
        prev = f"m{n:02d}"
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None
    assert [i.id for i in d.items] == ["first", *[f"m{n:02d}" for n in range(80)], "last"]
    assert d.conversation.title == "first"


# ------------------------------------------------------------------------------------------ robustness
class BrokenStore(NullStore):
    """Every write raises, as a database that is gone would."""

    enabled = True

    def __init__(self) -> None:
        self.calls = 0

    @property
    def description(self) -> str:
        return "postgresql://voicecall:***@db/broken"

    async def _fail(self) -> None:
        self.calls += 1
        raise ConnectionError("connection to postgresql://voicecall:hunter2@db/broken refused")

    async def start_conversation(self, record: ConversationRecord) -> None:
        await self._fail()

    async def upsert_item(self, item: ItemRecord) -> None:
        await self._fail()

    async def put_response(self, response: ResponseRecord) -> None:
        await self._fail()

    async def end_conversation(self, conversation_id: str, ended_at: datetime) -> None:
        await self._fail()

    async def update_conversation(self, conversation_id: str, **kw: Any) -> None:
        await self._fail()


async def test_recorder_never_raises_when_the_db_is_broken(caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenStore()
    rec = recorder(store)
    caplog.set_level(logging.INFO, "voicecall.store")
    for event in full_call():
        rec.on_server_event(event)
    rec.on_response_metrics("resp_2", {"voice_to_voice_ms": 1.0})
    await rec.close()
    assert store.calls > 5 and rec.stats["failed"] > 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "hunter2" not in caplog.text and "***" in caplog.text


async def test_recorder_survives_a_closed_store_and_garbage_events(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    await store.open()
    await store.close()  # every write now fails with StoreError
    rec = recorder(store)
    garbage: list[Any] = [
        {},
        {"type": None},
        {"type": "conversation.item.done", "item": "nope"},
        {"type": "conversation.item.done", "item": {"id": 5}},
        {"type": "response.done", "response": {"id": ["x"]}},
        {
            "type": "response.output_audio_transcript.delta",
            "item_id": "x",
            "content_index": "abc",
            "delta": "hi",
        },
        {"type": "conversation.item.truncated", "item_id": "ghost", "audio_end_ms": "soon"},
        {"type": "session.updated", "session": {"audio": {"output": {"voice": {"id": "voice_custom"}}}}},
        {"type": "conversation.item.deleted", "item_id": None},
    ]
    for g in garbage:
        rec.on_server_event(g)
        rec.on_client_event(g)
    rec.on_client_event({"type": "input_audio_buffer.append", "audio": 12})
    rec.on_response_metrics("r", {"x": "not a number"})  # type: ignore[dict-item]
    for event in full_call():
        rec.on_server_event(event)
    await rec.close()
    assert rec.stats["failed"] > 0
    assert rec.voice == "cedar"


class SlowStore(BrokenStore):
    """A database that hangs."""

    async def _fail(self) -> None:
        self.calls += 1
        await asyncio.sleep(3600)


async def test_on_methods_do_not_block_and_the_queue_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    store = SlowStore()
    rec = recorder(store, queue_size=5, close_timeout=0.2)
    t0 = time.perf_counter()
    for n in range(200):
        for e in added_done(msg(f"u{n}", "user", [{"type": "input_text", "text": f"hello {n}"}]), None):
            rec.on_server_event(e)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5  # 400 events; nothing waits for the database
    assert rec.stats["dropped"] > 150
    assert any("queue full" in r.getMessage() for r in caplog.records)
    t0 = time.perf_counter()
    await rec.close()  # gives up after close_timeout instead of hanging the session's shutdown
    assert time.perf_counter() - t0 < 2.0


async def test_null_store_recorder_does_nothing() -> None:
    rec = recorder(NullStore())
    for event in full_call():
        rec.on_server_event(event)
    await rec.close()
    assert rec.stats == {"queued": 0, "dropped": 0, "failed": 0}


def test_recorder_built_outside_the_loop_starts_later(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'late.db'}")
    rec = ConversationRecorder(
        store, conversation_id="c", provider="local", transport="webrtc"
    )  # no loop yet

    async def main() -> list[str]:
        await store.open()
        for e in added_done(msg("u1", "user", [{"type": "input_text", "text": "hi"}]), None):
            rec.on_server_event(e)
        await rec.close()
        d = await store.get_conversation("c")
        await store.close()
        return [i.text or "" for i in d.items] if d else []

    assert asyncio.run(main()) == ["hi"]


# ------------------------------------------------------------------------------------------ durability
CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from voicecall.store import ConversationRecorder, open_store

    async def main():
        store = open_store(sys.argv[1])
        await store.open()
        rec = ConversationRecorder(store, conversation_id="c", provider="local", transport="websocket")
        def item(iid, text):
            it = {"id": iid, "type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": text}]}
            rec.on_server_event({"type": "conversation.item.added", "item": it})
            rec.on_server_event({"type": "conversation.item.done", "item": it})
        for n in range(3):
            item(f"u{n}", f"said {n}")
        await rec.flush(5)
        rec.on_server_event({"type": "conversation.item.added",
                             "item": {"id": "a9", "type": "message", "role": "assistant", "content": []}})
        rec.on_server_event({"type": "response.output_audio_transcript.delta", "item_id": "a9",
                             "delta": "in fli"})
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
""")


def test_sigkill_loses_at_most_the_item_in_flight(tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, f"sqlite:///{db}"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with sqlite3.connect(db) as conn:  # a plain reader: the WAL is replayed
        rows = conn.execute("SELECT id, text FROM items ORDER BY position").fetchall()
        ended = conn.execute("SELECT ended_at FROM conversations WHERE id = 'c'").fetchone()
    assert rows == [("u0", "said 0"), ("u1", "said 1"), ("u2", "said 2")]
    assert ended == (None,)  # close_dangling will end it at start-up


# ------------------------------------------------------------------------------------------ helpers
@pytest.mark.parametrize(
    "text, fraction, expected",
    [
        ("one two three four", 0.5, "one two"),
        ("one two three four", 0.0, ""),
        ("one two three four", 1.2, "one two three four"),
        ("hello", 0.3, ""),
        ("hello", 0.6, "hello"),
    ],
)
def test_cut_to_heard(text: str, fraction: float, expected: str) -> None:
    assert cut_to_heard(text, fraction) == expected


def test_b64_decoded_len() -> None:
    for n in range(10):
        assert b64_decoded_len(base64.b64encode(b"x" * n).decode()) == n


async def test_out_of_band_response_is_marked(store: Store) -> None:
    """A ``conversation: "none"`` response (e.g. a summary) is kept, flagged as not part of the
    conversation."""
    rec = recorder(store)
    for e in added_done(msg("u1", "user", [{"type": "input_text", "text": "hello"}]), None):
        rec.on_server_event(e)
    final = msg("oob1", "assistant", [{"type": "output_text", "text": "User said hello."}])
    events: list[dict[str, Any]] = [
        {
            "type": "response.created",
            "response": {"id": "r_oob", "status": "in_progress", "conversation_id": None, "output": []},
        },
        {
            "type": "response.output_item.added",
            "response_id": "r_oob",
            "output_index": 0,
            "item": {**final, "content": [], "status": "in_progress"},
        },
        {
            "type": "response.output_text.done",
            "response_id": "r_oob",
            "item_id": "oob1",
            "output_index": 0,
            "content_index": 0,
            "text": "User said hello.",
        },
        {"type": "response.output_item.done", "response_id": "r_oob", "output_index": 0, "item": final},
        response_done("r_oob", "completed", [final], usage(20, 0, 0, 6, 0)),
    ]
    for e in events:
        rec.on_server_event(e)
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None
    assert [(i.id, i.text) for i in d.items] == [("u1", "hello"), ("oob1", "User said hello.")]
    assert d.items[1].extra == {"response_id": "r_oob", "out_of_band": True}
    assert d.items[1].audio_ms is None


async def test_bad_price_overrides_do_not_break_a_session(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rec = recorder(store, prices={"gpt-realtime": {"audio_input": 1}})
    assert "ignoring store.prices" in caplog.text
    for event in full_call():
        rec.on_server_event(event)
    await rec.close()
    d = await store.get_conversation("conv_test")
    assert d is not None and d.conversation.cost_usd > 0  # built-in prices
