"""Conversation history: every realtime session kept in SQLite (default) or PostgreSQL.

Usage (server start-up / shutdown)::

    store = open_store(config.store.url)      # ValueError for a bad URL
    await store.open()                        # connects, runs migrations
    await store.close_dangling()              # conversations a crash left open get ended_at = last activity
    ...
    recorder = ConversationRecorder(store, conversation_id=..., provider=..., model=..., voice=...,
                                    transport="websocket", client="127.0.0.1", prices=config.store.prices)
    recorder.on_server_event(event)           # for every server event sent / received
    await recorder.close()                    # when the session ends
    ...
    await store.close()

See ``docs/history.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from voicecall.store.base import (
    ConversationDetail,
    ConversationRecord,
    InvalidCursor,
    ItemRecord,
    NullStore,
    ResponseRecord,
    Store,
    StoreError,
    redact,
)
from voicecall.store.pricing import PriceTable, cost_usd
from voicecall.store.recorder import ConversationRecorder, new_conversation_id

__all__ = [
    "ConversationDetail",
    "ConversationRecord",
    "ConversationRecorder",
    "InvalidCursor",
    "ItemRecord",
    "NullStore",
    "PriceTable",
    "ResponseRecord",
    "Store",
    "StoreError",
    "StoreURL",
    "cost_usd",
    "new_conversation_id",
    "open_store",
    "parse_store_url",
]

_FORMS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, postgresql://user:password@host:5432/dbname "
    "(or postgres://...), or none"
)


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed ``store.url``: ``kind`` is ``sqlite``, ``postgresql`` or ``none``."""

    kind: str
    path: str | None = None
    """SQLite: the file path as written (relative paths are relative to the working directory) or
    ``:memory:``."""
    dsn: str | None = None
    """PostgreSQL: the URL to hand to psycopg."""
    synchronous: str = "normal"
    """SQLite: ``normal`` (default) or ``full`` (``?synchronous=full``)."""


def parse_store_url(url: str) -> StoreURL:
    """Validate and split a ``store.url``; :class:`ValueError` with the accepted forms when it is wrong."""
    if not isinstance(url, str):
        raise ValueError(f"store.url must be a string; use one of: {_FORMS}")  # noqa: TRY004 - callers catch ValueError
    text = url.strip()
    if text.lower() == "none":
        return StoreURL("none")
    shown = redact(text) or "(empty)"
    scheme, sep, _ = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"invalid store.url {shown!r}: use one of: {_FORMS}")
    if scheme == "sqlite":
        rest = text[len("sqlite://") :]
        rest, _, query = rest.partition("?")
        if not rest.startswith("/"):
            raise ValueError(
                f"invalid store.url {shown!r}: SQLite URLs have three slashes before a relative path "
                "(sqlite:///voicecall.db) and four before an absolute one (sqlite:////var/lib/voicecall/calls.db)"
            )
        path = rest[1:]
        if not path or path.endswith("/"):
            raise ValueError(
                f"invalid store.url {shown!r}: the SQLite URL names no file (e.g. sqlite:///voicecall.db)"
            )
        options = parse_qs(query, keep_blank_values=True) if query else {}
        unknown = sorted(set(options) - {"synchronous"})
        if unknown:
            raise ValueError(
                f"invalid store.url {shown!r}: unknown SQLite option(s) {', '.join(unknown)} "
                "(only ?synchronous=normal|full)"
            )
        synchronous = (options.get("synchronous") or ["normal"])[-1].lower()
        if synchronous not in ("normal", "full"):
            raise ValueError(f"invalid store.url {shown!r}: synchronous must be normal or full")
        return StoreURL("sqlite", path=path, synchronous=synchronous)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        dsn = "postgresql://" + text.split("://", 1)[1]
        try:
            if "," not in urlsplit(dsn).netloc:  # libpq multi-host URLs are left to libpq
                urlsplit(dsn).port  # noqa: B018 - validates the port
        except ValueError:
            raise ValueError(
                f"invalid store.url {shown!r}: the port must be a number "
                "(postgresql://user:password@host:5432/dbname)"
            ) from None
        return StoreURL("postgresql", dsn=dsn)
    raise ValueError(f"invalid store.url {shown!r}: unsupported scheme {scheme!r}; use one of: {_FORMS}")


def open_store(url: str, *, migrate_to: int | None = None) -> Store:
    """The store for ``url`` (not yet opened: ``await store.open()`` or ``async with open_store(url) as
    store``).

    Accepts ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (``?synchronous=full`` optional),
    ``postgresql://...`` / ``postgres://...`` and ``none`` (a :class:`NullStore`). Raises :class:`ValueError`
    for anything else. ``migrate_to`` limits the migrations applied (tests and tools only)."""
    parsed = parse_store_url(url)
    if parsed.kind == "none":
        return NullStore()
    if parsed.kind == "sqlite":
        from voicecall.store.sqlite import SQLiteStore

        assert parsed.path is not None
        path = parsed.path if parsed.path == ":memory:" else str(Path(parsed.path))
        return SQLiteStore(path, synchronous=parsed.synchronous, migrate_to=migrate_to)
    from voicecall.store.postgres import PostgresStore

    assert parsed.dsn is not None
    return PostgresStore(parsed.dsn, migrate_to=migrate_to)
