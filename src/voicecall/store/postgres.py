"""PostgreSQL history store: one psycopg 3 async connection, used under an :class:`asyncio.Lock`.

One connection is plenty: a conversation produces a handful of small writes per turn, and the server's writes
are serialised anyway. Each write is one transaction (committed with PostgreSQL's default
``synchronous_commit=on``, i.e. flushed to the server's WAL before the call returns). When the connection
breaks (server restart, network), the statement is retried once on a fresh connection; every write is an
idempotent upsert/update/delete, so a retry cannot duplicate anything."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg

from voicecall.store._sql import (
    SCHEMA_VERSION_DDL,
    Row,
    SQLStore,
    Statement,
    pending_migrations,
    record_migration_statement,
)
from voicecall.store.base import StoreError, redact

_MIGRATION_LOCK_KEY = 0x766F6963616C6C  # "voicall": serialises migrations of concurrently starting processes
_pg_sql_cache: dict[str, str] = {}
T = TypeVar("T")


def to_pg(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (the shared queries contain no other ``?`` or ``%``)."""
    converted = _pg_sql_cache.get(sql)
    if converted is None:
        if "%" in sql:
            raise ValueError("shared SQL must not contain '%'")
        converted = sql.replace("?", "%s")
        _pg_sql_cache[sql] = converted
    return converted


class PostgresStore(SQLStore):
    """History in PostgreSQL (``postgresql://user:pass@host:5432/db``; ``postgres://`` works too).

    ``migrate_to`` stops the migrations at that version (for tests and tools); normally everything is applied.
    """

    def __init__(
        self, url: str, *, connect_timeout: int = 10, op_timeout: float = 30.0, migrate_to: int | None = None
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.op_timeout = op_timeout
        self.migrate_to = migrate_to
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._opened = False

    @property
    def description(self) -> str:
        return redact(self.url)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if not self._opened:
            raise StoreError(f"{self.description}: store is not open")
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                await self._drop()
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=self.connect_timeout,
                    application_name="voicecall",
                )
            except psycopg.Error as exc:
                raise StoreError(f"{self.description}: cannot connect: {redact(str(exc)).strip()}") from exc
            self._conn = conn
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to do
                await conn.close()

    async def _run(self, statements: Sequence[Statement]) -> list[int]:
        conn = await self._connection()
        counts: list[int] = []
        async with conn.transaction():
            for sql, params in statements:
                cur = await conn.execute(to_pg(sql), tuple(params))
                counts.append(cur.rowcount)
        return counts

    async def _select(self, sql: str, params: Sequence[Any]) -> list[Row]:
        conn = await self._connection()
        cur = await conn.execute(to_pg(sql), tuple(params))
        return list(await cur.fetchall())

    async def _with_retry(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            try:
                return await self._bounded(what, fn)
            except psycopg.OperationalError:
                # Connection-level failure (server restarted, socket reset): reconnect once and retry.
                await self._drop()
                try:
                    return await self._bounded(what, fn)
                except psycopg.OperationalError as exc:
                    await self._drop()
                    raise StoreError(
                        f"{self.description}: {what} failed: {redact(str(exc)).strip()}"
                    ) from exc

    async def _bounded(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """``fn()`` within ``op_timeout``: a hung connection (a network partition) must not stall writers."""
        try:
            return await asyncio.wait_for(fn(), self.op_timeout)
        except TimeoutError:
            await self._drop()
            raise StoreError(f"{self.description}: {what} took more than {self.op_timeout:.0f} s") from None

    # -- Store
    async def open(self) -> None:
        if self._opened:
            return
        self._opened = True
        try:
            async with self._lock:
                conn = await self._connection()
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
                    await conn.execute(SCHEMA_VERSION_DDL)
                    cur = await conn.execute("SELECT MAX(version) FROM schema_version")
                    row = await cur.fetchone()
                    current = int(row[0] or 0) if row else 0
                    for m in pending_migrations(current, self.migrate_to):
                        for sql in m.statements:
                            await conn.execute(sql)  # trusted: the package's own migration files
                        sql, params = record_migration_statement(m)
                        await conn.execute(to_pg(sql), tuple(params))
        except psycopg.Error as exc:
            await self.close()
            raise StoreError(
                f"{self.description}: cannot open the history database: {redact(str(exc)).strip()}"
            ) from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._opened = False
        await self._drop()

    async def _execute(self, statements: Sequence[Statement]) -> list[int]:
        return await self._with_retry("write", lambda: self._run(statements))

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._with_retry("read", lambda: self._select(sql, params))
