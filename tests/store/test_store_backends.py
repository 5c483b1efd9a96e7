"""The Store contract, run identically on SQLite and PostgreSQL (see conftest.store_url)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import pg
from voicecall.store import (
    ConversationRecord,
    InvalidCursor,
    ItemRecord,
    NullStore,
    ResponseRecord,
    Store,
    StoreError,
    open_store,
    parse_store_url,
)
from voicecall.store._sql import load_migrations
from voicecall.store.base import decode_cursor, encode_cursor, make_title, redact, to_iso
from voicecall.store.postgres import PostgresStore
from voicecall.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def conv(cid: str, started: datetime, **kw: Any) -> ConversationRecord:
    fields: dict[str, object] = {
        "provider": "local", "model": "voicecall-local", "voice": "marin", "transport": "websocket", "client": "127.0.0.1"
    }
    fields.update(kw)
    return ConversationRecord(id=cid, started_at=started, **fields)  # type: ignore[arg-type]


def item(
    cid: str, iid: str, pos: float, text: str | None, *, role: str = "user", at: datetime = T0, **kw: Any
) -> ItemRecord:
    return ItemRecord(
        id=iid,
        conversation_id=cid,
        position=pos,
        role=role,
        type="message",
        text=text,
        created_at=at,
        done_at=at + timedelta(seconds=1),
        **kw,
    )


# ------------------------------------------------------------------------------------------ basics
async def test_conversation_items_responses_roundtrip(store: Store) -> None:
    await store.start_conversation(conv("c1", T0, client="10.0.0.7 key:team-a"))
    await store.upsert_item(item("c1", "i1", 1.0, "Hello there, how are you?", audio_ms=1800))
    await store.upsert_item(
        item(
            "c1",
            "i2",
            2.0,
            "Fine, thanks.",
            role="assistant",
            truncated=True,
            extra={"response_id": "r1", "note": "ünïcode ✓"},
        )
    )
    await store.upsert_item(item("c1", "i1", 1.0, "Hello there, how are you doing?", audio_ms=1800))  # update
    await store.put_response(
        ResponseRecord(
            id="r1",
            conversation_id="c1",
            status="completed",
            usage={"input_tokens": 10, "output_tokens": 5},
            latency={"voice_to_voice_ms": 812.5},
            cost_usd=0.0125,
            model="gpt-realtime",
            created_at=T0,
            done_at=T0 + timedelta(seconds=2),
        )
    )
    await store.put_response(
        ResponseRecord(
            id="r2",
            conversation_id="c1",
            status="cancelled",
            status_details={"type": "cancelled", "reason": "turn_detected"},
            cost_usd=0.0075,
            created_at=T0 + timedelta(seconds=3),
        )
    )
    await store.update_conversation("c1", title="Hello there", voice="cedar",
                                    metadata={"tracing": {"workflow_name": "w", "metadata": {"k": "v"}}})
    await store.end_conversation("c1", T0 + timedelta(minutes=2))

    d = await store.get_conversation("c1")
    assert d is not None
    c = d.conversation
    assert c.metadata == {"tracing": {"workflow_name": "w", "metadata": {"k": "v"}}}
    assert (c.title, c.voice, c.model, c.item_count, c.client) == (
        "Hello there",
        "cedar",
        "voicecall-local",
        2,
        "10.0.0.7 key:team-a",
    )
    assert c.cost_usd == pytest.approx(0.02)
    assert c.started_at == T0 and c.ended_at == T0 + timedelta(minutes=2)
    assert [i.id for i in d.items] == ["i1", "i2"]
    assert d.items[0].text == "Hello there, how are you doing?" and d.items[0].audio_ms == 1800
    assert d.items[1].truncated is True and d.items[0].truncated is False
    assert d.items[1].extra == {"response_id": "r1", "note": "ünïcode ✓"}
    assert d.items[0].created_at == T0 and d.items[0].done_at == T0 + timedelta(seconds=1)
    assert [r.id for r in d.responses] == ["r1", "r2"]
    assert d.responses[0].latency == {"voice_to_voice_ms": 812.5}
    assert d.responses[0].usage == {"input_tokens": 10, "output_tokens": 5}
    assert d.responses[1].status_details == {"type": "cancelled", "reason": "turn_detected"}
    assert d.responses[1].done_at is None

    # put_response is an upsert: the conversation cost is the sum, never double counted
    await store.put_response(
        ResponseRecord(
            id="r2",
            conversation_id="c1",
            status="cancelled",
            cost_usd=0.0025,
            created_at=T0 + timedelta(seconds=3),
        )
    )
    d = await store.get_conversation("c1")
    assert d is not None and d.conversation.cost_usd == pytest.approx(0.015)


async def test_positions_order_inserts_and_deletes(store: Store) -> None:
    await store.start_conversation(conv("c1", T0))
    for iid, pos in (("a", 1.0), ("c", 2.0), ("b", 1.5), ("z", 0.0)):
        await store.upsert_item(item("c1", iid, pos, iid))
    assert await store.delete_item("c1", "c") is True
    assert await store.delete_item("c1", "c") is False
    d = await store.get_conversation("c1")
    assert d is not None
    assert [i.id for i in d.items] == ["z", "a", "b"]
    assert d.conversation.item_count == 3
    await store.set_item_positions("c1", {"z": 3.0, "a": 1.0, "b": 2.0})
    d = await store.get_conversation("c1")
    assert d is not None and [i.id for i in d.items] == ["a", "b", "z"]


async def test_item_ids_are_per_conversation(store: Store) -> None:
    await store.start_conversation(conv("c1", T0))
    await store.start_conversation(conv("c2", T0 + timedelta(seconds=1)))
    await store.upsert_item(item("c1", "same", 1.0, "one"))
    await store.upsert_item(item("c2", "same", 1.0, "two"))
    d1, d2 = await store.get_conversation("c1"), await store.get_conversation("c2")
    assert d1 is not None and d2 is not None
    assert [i.text for i in d1.items] == ["one"] and [i.text for i in d2.items] == ["two"]


# ------------------------------------------------------------------------------------------ paging
async def test_list_newest_first_with_cursor(store: Store) -> None:
    # c3 and c4 start at the same instant: the id breaks the tie, and no row is skipped or repeated.
    starts = {
        "c1": T0,
        "c2": T0 + timedelta(minutes=1),
        "c3": T0 + timedelta(minutes=2),
        "c4": T0 + timedelta(minutes=2),
        "c5": T0 + timedelta(minutes=3),
    }
    for cid, started in starts.items():
        await store.start_conversation(conv(cid, started))
    page1, cur = await store.list_conversations(limit=2)
    assert [c.id for c in page1] == ["c5", "c4"] and cur
    page2, cur2 = await store.list_conversations(limit=2, cursor=cur)
    assert [c.id for c in page2] == ["c3", "c2"] and cur2
    page3, cur3 = await store.list_conversations(limit=2, cursor=cur2)
    assert [c.id for c in page3] == ["c1"] and cur3 is None
    everything, end = await store.list_conversations(limit=200)
    assert [c.id for c in everything] == ["c5", "c4", "c3", "c2", "c1"] and end is None
    exact, end = await store.list_conversations(limit=5)
    assert len(exact) == 5 and end is None
    with pytest.raises(InvalidCursor):
        await store.list_conversations(limit=2, cursor="garbage!")
    with pytest.raises(InvalidCursor):
        await store.list_conversations(limit=2, cursor="bm90IGpzb24")  # base64 of "not json"


async def test_empty_store(store: Store) -> None:
    assert await store.list_conversations() == ([], None)
    assert await store.get_conversation("nope") is None
    assert await store.delete_conversation("nope") is False
    assert await store.close_dangling() == 0


# ------------------------------------------------------------------------------------------ delete / dangling
async def test_delete_conversation_removes_everything(store: Store) -> None:
    await store.start_conversation(conv("c1", T0))
    await store.start_conversation(conv("c2", T0 + timedelta(seconds=5)))
    await store.upsert_item(item("c1", "i1", 1.0, "bye"))
    await store.put_response(ResponseRecord(id="r1", conversation_id="c1", status="completed", created_at=T0))
    assert await store.delete_conversation("c1") is True
    assert await store.get_conversation("c1") is None
    assert await store.delete_conversation("c1") is False
    rows, _ = await store.list_conversations()
    assert [c.id for c in rows] == ["c2"]
    # a new conversation may reuse the item id: the old rows are really gone
    await store.start_conversation(conv("c1", T0))
    d = await store.get_conversation("c1")
    assert d is not None and d.items == [] and d.responses == [] and d.conversation.cost_usd == 0


async def test_close_dangling_uses_last_activity(store: Store) -> None:
    await store.start_conversation(conv("crashed", T0))
    await store.upsert_item(
        item("crashed", "i1", 1.0, "hello", at=T0 + timedelta(seconds=10))
    )  # done at +11 s
    await store.put_response(
        ResponseRecord(
            id="r1",
            conversation_id="crashed",
            status="completed",
            created_at=T0 + timedelta(seconds=12),
            done_at=T0 + timedelta(seconds=15),
        )
    )
    await store.start_conversation(conv("silent", T0 + timedelta(minutes=1)))
    await store.start_conversation(conv("ended", T0 + timedelta(minutes=2)))
    await store.end_conversation("ended", T0 + timedelta(minutes=3))
    await store.start_conversation(conv("live", T0 + timedelta(hours=1)))  # started after "now": untouched

    assert await store.close_dangling(T0 + timedelta(minutes=30)) == 2
    got = {c.id: c for c in (await store.list_conversations())[0]}
    assert got["crashed"].ended_at == T0 + timedelta(seconds=15)
    assert got["silent"].ended_at == T0 + timedelta(minutes=1)
    assert got["ended"].ended_at == T0 + timedelta(minutes=3)
    assert got["live"].ended_at is None
    assert await store.close_dangling(T0 + timedelta(minutes=30)) == 0


# ------------------------------------------------------------------------------------------ migrations
async def test_upgrade_from_0001_keeps_data(store_url: str) -> None:
    old = open_store(store_url, migrate_to=1)
    await old.open()
    assert isinstance(old, (SQLiteStore, PostgresStore))
    assert await old.schema_version() == 1
    # Rows as the 0001 schema knows them (written with plain SQL: the current code expects 0002's columns).
    await old._execute(
        [
            (
                ("INSERT INTO conversations (id, provider, model, voice, transport, client, started_at, "
                 "title, cost_usd, item_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                ("old1", "local", "m", "marin", "websocket", "1.2.3.4", to_iso(T0), "Old call", 0.5, 2),
            ),
            (
                ("INSERT INTO items (conversation_id, id, position, role, type, text, created_at, done_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                (
                    "old1",
                    "i1",
                    1.0,
                    "user",
                    "message",
                    "first",
                    to_iso(T0),
                    to_iso(T0 + timedelta(seconds=4)),
                ),
            ),
            (
                ("INSERT INTO items (conversation_id, id, position, role, type, text, created_at, done_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                (
                    "old1",
                    "i2",
                    2.0,
                    "assistant",
                    "message",
                    "second",
                    to_iso(T0 + timedelta(seconds=5)),
                    to_iso(T0 + timedelta(seconds=9)),
                ),
            ),
        ]
    )
    await old.close()

    new = open_store(store_url)
    await new.open()
    try:
        assert isinstance(new, (SQLiteStore, PostgresStore))
        assert await new.schema_version() == load_migrations()[-1].version
        d = await new.get_conversation("old1")
        assert d is not None
        assert d.conversation.title == "Old call" and d.conversation.cost_usd == 0.5
        assert d.conversation.metadata == {}  # 0003
        assert [i.text for i in d.items] == ["first", "second"]
        assert d.conversation.last_activity_at == T0 + timedelta(seconds=9)  # backfilled by 0002
        assert await new.close_dangling(T0 + timedelta(days=1)) == 1
        d = await new.get_conversation("old1")
        assert d is not None and d.conversation.ended_at == T0 + timedelta(seconds=9)
        # and the upgraded database takes new writes
        await new.upsert_item(item("old1", "i3", 3.0, "third"))
        d = await new.get_conversation("old1")
        assert d is not None and d.conversation.item_count == 3
    finally:
        await new.close()
    again = open_store(store_url)  # opening an up-to-date database changes nothing
    await again.open()
    assert await again.schema_version() == load_migrations()[-1].version  # type: ignore[attr-defined]
    await again.close()


async def test_newer_schema_is_refused(store_url: str) -> None:
    s = open_store(store_url)
    await s.open()
    assert isinstance(s, (SQLiteStore, PostgresStore))
    await s._execute(
        [
            (
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (99, "future", to_iso(T0)),
            )
        ]
    )
    await s.close()
    with pytest.raises(StoreError, match="newer"):
        await open_store(store_url).open()


@pytest.mark.postgres
async def test_postgres_reconnects_after_the_connection_dies(pg_server: str) -> None:
    import psycopg

    with pg.fresh_schema(pg_server) as url:
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        async with store:
            await _reconnect_scenario(store, psycopg)


async def _reconnect_scenario(store: PostgresStore, psycopg: Any) -> None:
    await store.start_conversation(conv("c1", T0))
    pid = (await store._query("SELECT pg_backend_pid()"))[0][0]
    async with await psycopg.AsyncConnection.connect(store.url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    await store.upsert_item(item("c1", "i1", 1.0, "after the restart"))  # retried on a new connection
    d = await store.get_conversation("c1")
    assert d is not None and [i.text for i in d.items] == ["after the restart"]
    # a query that hangs is abandoned after op_timeout, and the store keeps working
    store.op_timeout = 0.3
    with pytest.raises(StoreError, match="took more than"):
        await store._query("SELECT pg_sleep(5)")
    store.op_timeout = 30.0
    d = await store.get_conversation("c1")
    assert d is not None and len(d.items) == 1


# ------------------------------------------------------------------------------------------ URLs
@pytest.mark.parametrize(
    "url, kind, path",
    [
        ("sqlite:///voicecall.db", "sqlite", "voicecall.db"),
        ("sqlite:///data/calls.db", "sqlite", "data/calls.db"),
        ("sqlite:////var/lib/voicecall/calls.db", "sqlite", "/var/lib/voicecall/calls.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("none", "none", None),
        ("NONE", "none", None),
    ],
)
def test_parse_store_url(url: str, kind: str, path: str | None) -> None:
    parsed = parse_store_url(url)
    assert parsed.kind == kind and parsed.path == path


def test_parse_postgres_urls() -> None:
    assert parse_store_url("postgres://u:p@db:5432/vc").dsn == "postgresql://u:p@db:5432/vc"
    assert parse_store_url("postgresql://u@localhost/vc").kind == "postgresql"
    assert parse_store_url("postgresql+psycopg://u@h/vc").dsn == "postgresql://u@h/vc"
    assert parse_store_url("sqlite:///x.db?synchronous=full").synchronous == "full"
    assert isinstance(open_store("postgresql://u:p@h/db"), PostgresStore)
    assert isinstance(open_store("sqlite:///x.db"), SQLiteStore)
    assert isinstance(open_store("none"), NullStore)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("", "invalid store.url"),
        ("voicecall.db", "invalid store.url"),
        ("sqlite://voicecall.db", "three slashes"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?journal=off", "unknown SQLite option"),
        ("sqlite:///x.db?synchronous=off", "normal or full"),
        ("mysql://u:hunter2@h/db", "unsupported scheme"),
        ("postgresql://u:hunter2@h:port/db", "port must be a number"),
    ],
)
def test_bad_urls_are_clear_value_errors(url: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)
    assert "sqlite:///" in str(info.value) or "SQLite" in str(info.value) or "postgresql" in str(info.value)


async def test_sqlite_relative_path_and_pragmas(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    s = open_store("sqlite:///sub/dir/history.db")
    await s.open()
    assert isinstance(s, SQLiteStore)
    mode = await s._query("PRAGMA journal_mode")
    sync = await s._query("PRAGMA synchronous")
    await s.close()
    assert str(mode[0][0]).lower() == "wal" and int(sync[0][0]) == 1  # 1 = NORMAL
    db = tmp_path / "sub" / "dir" / "history.db"  # type: ignore[operator]
    assert db.exists() and (db.stat().st_mode & 0o777) == 0o600


async def test_null_store_keeps_nothing() -> None:
    s = open_store("none")
    async with s:
        await s.start_conversation(conv("c1", T0))
        assert await s.list_conversations() == ([], None)
        assert await s.get_conversation("c1") is None
        assert s.enabled is False


def test_cursor_roundtrip_and_helpers() -> None:
    cur = encode_cursor(T0, "conv_x")
    assert decode_cursor(cur) == (to_iso(T0), "conv_x")
    for bad in ("", "!!!", "a" * 2000, "WyJhIl0"):  # WyJhIl0 = ["a"]
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)
    assert redact("postgresql://me:s3cret@db/x failed") == "postgresql://me:***@db/x failed"
    assert redact("host=db password=s3cret user=me") == "host=db password=*** user=me"
    assert (
        make_title("  What's   the weather\nlike in Paris today?  ")
        == "What's the weather like in Paris today?"
    )
    long = make_title("word " * 40)
    assert long is not None and long.endswith("…") and len(long) <= 61
