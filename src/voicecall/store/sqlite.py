"""SQLite history store (the default): one connection owned by one dedicated thread.

Every call is handed to a single-thread executor, so the connection is only ever used by that thread and all
statements are serialised (no lock needed, the event loop never blocks on disk I/O).

Durability. The database runs in WAL mode with ``synchronous=NORMAL``. Each write (one finished item, one
response, ...) is its own transaction. At ``COMMIT`` SQLite has ``write()``-n the transaction to the WAL file,
so the data is in the operating system's page cache: if the voicecall process is killed (SIGKILL, OOM killer,
a crash), nothing committed is lost; the next open replays the WAL. What ``NORMAL`` gives up compared with
``FULL`` is the ``fsync`` at every commit: after a power cut or a kernel crash the last few commits may be
rolled back (the database stays consistent). That fsync costs 1-20 ms per item on ordinary disks for a
guarantee the history does not need; add ``?synchronous=full`` to the URL to have it anyway
(``sqlite:///calls.db?synchronous=full``)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from voicecall.store._sql import (
    SCHEMA_VERSION_DDL,
    Row,
    SQLStore,
    Statement,
    pending_migrations,
    record_migration_statement,
)
from voicecall.store.base import StoreError

T = TypeVar("T")
SYNCHRONOUS_MODES = ("normal", "full")


class SQLiteStore(SQLStore):
    """History in a SQLite file (``sqlite:///relative.db``, ``sqlite:////absolute/path.db``,
    ``sqlite:///:memory:``).

    ``migrate_to`` stops the migrations at that version (for tests and tools); normally everything is applied.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "normal",
        migrate_to: int | None = None,
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"sqlite synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            )
        self.path = str(path)
        self.synchronous = synchronous.upper()
        self.migrate_to = migrate_to
        self.busy_timeout_ms = busy_timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def description(self) -> str:
        return f"sqlite:{self.path}"

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    # -- plumbing
    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError(f"{self.description}: store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.description}: store is closed")
        return self._conn

    def _connect(self) -> None:
        if not self.in_memory:
            p = Path(self.path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists():
                # Transcripts are personal data: create the file (and so its -wal/-shm) readable by us only.
                os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if not self.in_memory:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                if not mode or str(mode[0]).lower() != "wal":
                    raise StoreError(f"{self.description}: could not switch the database to WAL mode")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _transaction(self, statements: Sequence[Statement]) -> list[int]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = [conn.execute(sql, tuple(params)).rowcount for sql, params in statements]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return counts

    def _select(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return list(self._connection().execute(sql, tuple(params)).fetchall())

    def _migrate(self) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock: two processes opening at once apply it once
        try:
            conn.execute(SCHEMA_VERSION_DDL)
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            for m in pending_migrations(int(current), self.migrate_to):
                for sql in m.statements:
                    conn.execute(sql)
                sql, params = record_migration_statement(m)
                conn.execute(sql, tuple(params))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- Store
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicecall-sqlite")
        try:
            await self._call(self._connect)
            await self._call(self._migrate)
        except sqlite3.Error as exc:
            await self.close()
            raise StoreError(f"{self.description}: cannot open the history database: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
        finally:
            executor.shutdown(wait=False)

    async def _execute(self, statements: Sequence[Statement]) -> list[int]:
        return await self._call(lambda: self._transaction(statements))

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._call(lambda: self._select(sql, params))
