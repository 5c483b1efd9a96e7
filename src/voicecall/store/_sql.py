"""What the SQLite and PostgreSQL stores share: the queries, row mapping and the migration files.

Queries are written once, with ``?`` placeholders, in SQL both databases accept (``INSERT ... ON CONFLICT ...
DO UPDATE``, scalar sub-queries, ``COALESCE``). The PostgreSQL backend rewrites ``?`` to ``%s``. A backend
only implements two primitives: :meth:`SQLStore._execute` (statements in one transaction, returning row
counts) and :meth:`SQLStore._query` (rows of one ``SELECT``), plus its own connection handling and migration
locking."""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, cast

from voicecall.store.base import (
    ConversationDetail,
    ConversationRecord,
    ItemRecord,
    ResponseRecord,
    Store,
    StoreError,
    decode_cursor,
    encode_cursor,
    from_iso,
    to_iso,
    utcnow,
)

Statement = tuple[str, Sequence[Any]]
Row = Sequence[Any]


# ---------------------------------------------------------------------------------------- migrations
@dataclass(frozen=True, slots=True)
class Migration:
    """One ``NNNN_name.sql`` file of ``voicecall/store/migrations``."""

    version: int
    name: str
    statements: tuple[str, ...]


SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def split_sql(script: str) -> list[str]:
    """Split a migration script into statements: ``--`` comments dropped, ``;`` at a line end separates."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements: list[str] = []
    current: list[str] = []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            text = "\n".join(current).strip().rstrip(";").strip()
            if text:
                statements.append(text)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def load_migrations() -> list[Migration]:
    """All migrations shipped with the package, in version order."""
    folder = resources.files("voicecall.store").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), tuple(split_sql(entry.read_text("utf-8")))))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"store migrations must be numbered 0001, 0002, ... without gaps; found {versions}")
    return found


def pending_migrations(current: int, upto: int | None = None) -> list[Migration]:
    """Migrations after ``current`` (up to ``upto`` if given). A database newer than the code is an error."""
    all_migrations = load_migrations()
    latest = all_migrations[-1].version if all_migrations else 0
    if current > latest:
        raise StoreError(
            f"the history database has schema version {current}, newer than this voicecall knows ({latest}); "
            "upgrade voicecall or point store.url at another database"
        )
    return [m for m in all_migrations if current < m.version <= (upto if upto is not None else latest)]


def record_migration_statement(m: Migration) -> Statement:
    return (
        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
        (m.version, m.name, to_iso(utcnow())),
    )


# ---------------------------------------------------------------------------------------- row mapping
CONV_COLUMNS = (
    "id, provider, model, voice, transport, client, started_at, ended_at, title, cost_usd, "
    "item_count, last_activity_at, metadata"
)
ITEM_COLUMNS = (
    "id, conversation_id, position, role, type, text, audio_ms, truncated, created_at, done_at, extra"
)
RESP_COLUMNS = (
    "id, conversation_id, status, status_details, usage, latency, cost_usd, model, created_at, done_at"
)


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str], update: Sequence[str]) -> str:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET ...``, which SQLite >= 3.24 and PostgreSQL accept."""
    marks = ", ".join("?" for _ in columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in update)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    )


CONVERSATION_UPSERT = upsert_sql(
    "conversations",
    (
        "id",
        "provider",
        "model",
        "voice",
        "transport",
        "client",
        "started_at",
        "ended_at",
        "title",
        "cost_usd",
        "item_count",
        "last_activity_at",
        "metadata",
    ),
    ("id",),
    ("provider", "model", "voice", "transport", "client"),  # a retried start must not reset the rest
)
_ITEM_VALUES = ("position", "role", "type", "text", "audio_ms", "truncated", "created_at", "done_at", "extra")
ITEM_UPSERT = upsert_sql(
    "items", ("conversation_id", "id", *_ITEM_VALUES), ("conversation_id", "id"), _ITEM_VALUES
)
_RESPONSE_VALUES = (
    "status",
    "status_details",
    "usage",
    "latency",
    "cost_usd",
    "model",
    "created_at",
    "done_at",
)
RESPONSE_UPSERT = upsert_sql(
    "responses", ("conversation_id", "id", *_RESPONSE_VALUES), ("conversation_id", "id"), _RESPONSE_VALUES
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _required_time(text: str | None) -> datetime:
    dt = from_iso(text)
    if dt is None:
        raise StoreError("corrupt history row: missing timestamp")
    return dt


def conversation_from_row(row: Row) -> ConversationRecord:
    return ConversationRecord(
        id=row[0],
        provider=row[1],
        model=row[2],
        voice=row[3],
        transport=row[4],
        client=row[5],
        started_at=_required_time(row[6]),
        ended_at=from_iso(row[7]),
        title=row[8],
        cost_usd=float(row[9] or 0.0),
        item_count=int(row[10] or 0),
        last_activity_at=from_iso(row[11]),
        metadata=_json_object(row[12]),
    )


def _json_object(text: str | None) -> dict[str, Any]:
    value = _loads(text)
    return value if isinstance(value, dict) else {}


def item_from_row(row: Row) -> ItemRecord:
    extra = _loads(row[10])
    return ItemRecord(
        id=row[0],
        conversation_id=row[1],
        position=float(row[2]),
        role=row[3],
        type=row[4],
        text=row[5],
        audio_ms=None if row[6] is None else int(row[6]),
        truncated=bool(row[7]),
        created_at=_required_time(row[8]),
        done_at=from_iso(row[9]),
        extra=extra if isinstance(extra, dict) else {},
    )


def response_from_row(row: Row) -> ResponseRecord:
    latency = _loads(row[5])
    details = _loads(row[3])
    usage = _loads(row[4])
    return ResponseRecord(
        id=row[0],
        conversation_id=row[1],
        status=row[2],
        status_details=details if isinstance(details, dict) else None,
        usage=usage if isinstance(usage, dict) else None,
        latency=latency if isinstance(latency, dict) else {},
        cost_usd=float(row[6] or 0.0),
        model=row[7],
        created_at=_required_time(row[8]),
        done_at=from_iso(row[9]),
    )


def _touch(conversation_id: str, when: datetime | None) -> Statement:
    """Move ``last_activity_at`` forward (never back)."""
    ts = to_iso(when or utcnow())
    return (
        ("UPDATE conversations SET last_activity_at = CASE WHEN last_activity_at IS NULL "
         "OR last_activity_at < ? THEN ? ELSE last_activity_at END WHERE id = ?"),
        (ts, ts, conversation_id),
    )


def _count_items(conversation_id: str) -> Statement:
    return (
        ("UPDATE conversations SET item_count = (SELECT COUNT(*) FROM items WHERE conversation_id = ?) "
         "WHERE id = ?"),
        (conversation_id, conversation_id),
    )


# ---------------------------------------------------------------------------------------- the store
class SQLStore(Store):
    """Store logic over two primitives a backend provides (see the module docstring)."""

    @abstractmethod
    async def _execute(self, statements: Sequence[Statement]) -> list[int]:
        """Run ``statements`` in one transaction; return each statement's row count."""

    @abstractmethod
    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one ``SELECT``."""

    # -- writes
    async def start_conversation(self, record: ConversationRecord) -> None:
        started = to_iso(record.started_at)
        await self._execute(
            [
                (
                    CONVERSATION_UPSERT,
                    (
                        record.id,
                        record.provider,
                        record.model,
                        record.voice,
                        record.transport,
                        record.client,
                        started,
                        to_iso(record.ended_at),
                        record.title,
                        float(record.cost_usd),
                        0,
                        started,
                        _dumps(record.metadata) or "{}",
                    ),
                ),
                *([("UPDATE conversations SET replica = ? WHERE id = ?", (self.replica, record.id))]
                  if self.replica else []),
            ]
        )

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        model: str | None = None,
        voice: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        sets: list[str] = []
        params: list[Any] = []
        for column, value in (("model", model), ("voice", voice), ("title", title), ("metadata", _dumps(metadata))):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if sets:
            await self._execute(
                [(f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?", (*params, conversation_id))]
            )

    async def end_conversation(self, conversation_id: str, ended_at: datetime) -> None:
        await self._execute(
            [
                ("UPDATE conversations SET ended_at = ? WHERE id = ?", (to_iso(ended_at), conversation_id)),
                _touch(conversation_id, ended_at),
            ]
        )

    async def upsert_item(self, item: ItemRecord) -> None:
        await self._execute(
            [
                (
                    ITEM_UPSERT,
                    (
                        item.conversation_id,
                        item.id,
                        float(item.position),
                        item.role,
                        item.type,
                        item.text,
                        item.audio_ms,
                        bool(item.truncated),
                        to_iso(item.created_at),
                        to_iso(item.done_at),
                        _dumps(item.extra or {}),
                    ),
                ),
                _count_items(item.conversation_id),
                _touch(item.conversation_id, item.done_at or item.created_at),
            ]
        )

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        counts = await self._execute(
            [
                ("DELETE FROM items WHERE conversation_id = ? AND id = ?", (conversation_id, item_id)),
                _count_items(conversation_id),
                _touch(conversation_id, None),
            ]
        )
        return counts[0] > 0

    async def set_item_positions(self, conversation_id: str, positions: Mapping[str, float]) -> None:
        if positions:
            await self._execute(
                [
                    (
                        "UPDATE items SET position = ? WHERE conversation_id = ? AND id = ?",
                        (float(pos), conversation_id, item_id),
                    )
                    for item_id, pos in positions.items()
                ]
            )

    async def put_response(self, response: ResponseRecord) -> None:
        cid = response.conversation_id
        await self._execute(
            [
                (
                    RESPONSE_UPSERT,
                    (
                        cid,
                        response.id,
                        response.status,
                        _dumps(response.status_details),
                        _dumps(response.usage),
                        _dumps(response.latency or {}),
                        float(response.cost_usd),
                        response.model,
                        to_iso(response.created_at),
                        to_iso(response.done_at),
                    ),
                ),
                (
                    ("UPDATE conversations SET cost_usd = COALESCE((SELECT SUM(cost_usd) FROM responses "
                     "WHERE conversation_id = ?), 0) WHERE id = ?"),
                    (cid, cid),
                ),
                _touch(cid, response.done_at or response.created_at),
            ]
        )

    async def close_dangling(self, now: datetime | None = None, replica: str | None = None) -> int:
        scope, args = "", cast(tuple[str, ...], ())
        target = replica if replica is not None else self.replica
        if target:  # several replicas share this database: only this replica's (and unattributed) conversations
            scope, args = " AND (replica = ? OR replica IS NULL)", (target,)
        if replica is not None:  # a dead replica's conversations, found by another one
            scope, args = " AND replica = ?", (replica,)
        counts = await self._execute(
            [
                (
                    ("UPDATE conversations SET ended_at = COALESCE(last_activity_at, started_at) "
                     "WHERE ended_at IS NULL AND started_at <= ?" + scope),
                    (to_iso(now or utcnow()), *args),
                )
            ]
        )
        return counts[0]

    async def open_replicas(self) -> list[str]:
        rows = await self._query("SELECT DISTINCT replica FROM conversations WHERE ended_at IS NULL AND "
                                 "replica IS NOT NULL", ())
        return [str(r[0]) for r in rows]

    async def ping(self) -> bool:
        await self._query("SELECT 1", ())
        return True

    async def delete_conversation(self, conversation_id: str) -> bool:
        counts = await self._execute(
            [
                ("DELETE FROM items WHERE conversation_id = ?", (conversation_id,)),
                ("DELETE FROM responses WHERE conversation_id = ?", (conversation_id,)),
                ("DELETE FROM conversations WHERE id = ?", (conversation_id,)),
            ]
        )
        return counts[2] > 0

    # -- reads
    async def list_conversations(
        self, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[ConversationRecord], str | None]:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        if cursor:
            started, cid = decode_cursor(cursor)
            rows = await self._query(
                f"SELECT {CONV_COLUMNS} FROM conversations "
                "WHERE started_at < ? OR (started_at = ? AND id < ?) "
                "ORDER BY started_at DESC, id DESC LIMIT ?",
                (started, started, cid, limit + 1),
            )
        else:
            rows = await self._query(
                f"SELECT {CONV_COLUMNS} FROM conversations ORDER BY started_at DESC, id DESC LIMIT ?",
                (limit + 1,),
            )
        records = [conversation_from_row(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and records:
            last = records[-1]
            next_cursor = encode_cursor(last.started_at, last.id)
        return records, next_cursor

    async def get_conversation(self, conversation_id: str) -> ConversationDetail | None:
        rows = await self._query(f"SELECT {CONV_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            return None
        items = await self._query(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE conversation_id = ? ORDER BY position, created_at, id",
            (conversation_id,),
        )
        responses = await self._query(
            f"SELECT {RESP_COLUMNS} FROM responses WHERE conversation_id = ? ORDER BY created_at, id",
            (conversation_id,),
        )
        return ConversationDetail(
            conversation=conversation_from_row(rows[0]),
            items=[item_from_row(r) for r in items],
            responses=[response_from_row(r) for r in responses],
        )

    async def schema_version(self) -> int:
        """The highest migration applied to this database (0 for an empty one)."""
        rows = await self._query("SELECT MAX(version) FROM schema_version")
        return int(rows[0][0] or 0) if rows else 0
