"""The conversation store: records, the :class:`Store` interface and the :class:`NullStore`.

A *conversation* is one realtime session (WebSocket, WebRTC, a relay to OpenAI or a sideband socket). It holds
*items* (messages, function calls and their outputs, in conversation order) and *responses* (one per
``response.done``, with status, token usage, per-stage latency and cost).

Timestamps are timezone-aware UTC :class:`~datetime.datetime` objects in Python; the SQL backends keep them as
fixed-width ISO-8601 text (``2026-11-21T05:42:51.123456Z``), which sorts chronologically in both SQLite and
PostgreSQL and lets one set of migrations serve both.

Every method of a store is a coroutine. The backends serialise their own I/O, so a store may be shared by all
sessions of a process (the server opens one at start-up and closes it at shutdown).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

Transport = Literal["websocket", "webrtc", "relay", "sideband"]
TRANSPORTS: tuple[str, ...] = ("websocket", "webrtc", "relay", "sideband")
ItemType = str
"""``message``, ``function_call`` or ``function_call_output`` (other GA item types are kept as they come)."""


class StoreError(Exception):
    """A store could not do what was asked (bad database, newer schema, connection lost...)."""


class InvalidCursor(ValueError):
    """A paging cursor that this store did not produce."""


# ------------------------------------------------------------------------------------------- records
@dataclass(slots=True)
class ConversationRecord:
    """One realtime session as kept in the history."""

    id: str
    provider: str
    """``local`` or ``openai-realtime``."""
    model: str | None
    voice: str | None
    transport: str
    """``websocket``, ``webrtc``, ``relay`` or ``sideband``."""
    client: str | None
    """Who connected: an address and/or an API-key *label*; never a secret."""
    started_at: datetime
    ended_at: datetime | None = None
    title: str | None = None
    """The first words the user said (or typed)."""
    cost_usd: float = 0.0
    """Sum of the responses' estimated cost."""
    item_count: int = 0
    last_activity_at: datetime | None = None
    """Time of the last write for this conversation; a crash leaves ``ended_at`` empty and this is used
    instead."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Session facts worth keeping with the history, e.g. ``tracing`` (the session's tracing configuration)."""


@dataclass(slots=True)
class ItemRecord:
    """One conversation item: a message, a function call or a function call's output."""

    id: str
    conversation_id: str
    position: float
    """Sort key in conversation order (items inserted after ``previous_item_id`` get a key in between)."""
    role: str | None
    """``user``, ``assistant`` or ``system`` for messages; ``None`` for function calls and outputs."""
    type: str
    text: str | None
    """Text or transcript. For an assistant item cut by ``conversation.item.truncate``: only what was
    heard."""
    audio_ms: int | None = None
    """Duration of the item's audio (for a truncated assistant item: the part that was played)."""
    truncated: bool = False
    created_at: datetime = field(default_factory=lambda: utcnow())
    done_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Type-specific details: ``name``/``arguments``/``call_id`` for function calls, ``response_id``, ..."""


@dataclass(slots=True)
class ResponseRecord:
    """One model response (``response.created`` ... ``response.done``)."""

    id: str
    conversation_id: str
    status: str
    """``completed``, ``cancelled``, ``failed``, ``incomplete`` (or ``in_progress`` if the session ended
    first)."""
    status_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    latency: dict[str, float] = field(default_factory=dict)
    """Per-stage milliseconds, e.g. ``end_of_turn_ms``, ``stt_final_ms``, ``llm_first_token_ms``,
    ``tts_first_audio_ms``, ``voice_to_voice_ms``."""
    cost_usd: float = 0.0
    model: str | None = None
    created_at: datetime = field(default_factory=lambda: utcnow())
    done_at: datetime | None = None


@dataclass(slots=True)
class ConversationDetail:
    """A conversation with its items (in conversation order) and its responses (in creation order)."""

    conversation: ConversationRecord
    items: list[ItemRecord]
    responses: list[ResponseRecord]


# ------------------------------------------------------------------------------------------- helpers
def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def to_iso(dt: datetime | None) -> str | None:
    """Fixed-width ISO-8601 UTC text (``2026-11-21T05:42:51.123456Z``), which sorts chronologically."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str | None) -> datetime | None:
    """Inverse of :func:`to_iso` (accepts any ISO-8601 form ``datetime.fromisoformat`` reads)."""
    if text is None:
        return None
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def encode_cursor(started_at: datetime, conversation_id: str) -> str:
    """An opaque paging cursor pointing just after ``(started_at, id)`` in newest-first order."""
    raw = json.dumps([to_iso(started_at), conversation_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(started_at_iso, id)`` from :func:`encode_cursor`; :class:`InvalidCursor` for anything else."""
    try:
        if not cursor or len(cursor) > 1024 or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            raise ValueError
        started, cid = value
        from_iso(started)  # validates
        return to_iso(from_iso(started)) or "", cid
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor(
            "invalid cursor: pass the next_cursor value returned by the previous page"
        ) from exc


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide passwords in database URLs / conninfo strings before they reach a log or an error message."""
    return _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def make_title(text: str | None, limit: int = 60) -> str | None:
    """The first words of ``text``, at most ``limit`` characters, cut at a word boundary."""
    if not text:
        return None
    words = " ".join(text.split())
    if not words:
        return None
    if len(words) <= limit:
        return words
    cut = words[: limit + 1].rsplit(" ", 1)[0] if " " in words[: limit + 1] else words[:limit]
    return cut.rstrip(" ,;:.-") + "…"


# ------------------------------------------------------------------------------------------- interface
class Store(ABC):
    """Where conversations are kept. Implementations: SQLite, PostgreSQL and :class:`NullStore`.

    Use ``await store.open()`` before anything else (it runs the schema migrations) and ``await
    store.close()`` at shutdown, or ``async with store:``. Writes are idempotent upserts, so a retried write
    is harmless."""

    enabled: bool = True
    """False for :class:`NullStore` (history disabled); recorders then do nothing at all."""
    replica: str | None = None
    """Set by the server to its ``server.replicaId`` when several replicas share the database: conversations are
    tagged with it, and :meth:`close_dangling` only closes this replica's."""

    @property
    @abstractmethod
    def description(self) -> str:
        """A human-readable, secret-free name of the database (for logs)."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date (applies pending migrations in order)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the connection(s). Safe to call twice."""

    @abstractmethod
    async def start_conversation(self, record: ConversationRecord) -> None:
        """Insert the conversation (or refresh its metadata if it exists)."""

    @abstractmethod
    async def update_conversation(
        self,
        conversation_id: str,
        *,
        model: str | None = None,
        voice: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Change the given (non-``None``) fields (``metadata`` replaces the whole object)."""

    @abstractmethod
    async def end_conversation(self, conversation_id: str, ended_at: datetime) -> None:
        """Mark the conversation as ended."""

    @abstractmethod
    async def upsert_item(self, item: ItemRecord) -> None:
        """Insert or replace an item (keyed by conversation and item id); keeps ``item_count`` right."""

    @abstractmethod
    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        """Remove an item (``conversation.item.deleted``); False if it was not stored."""

    @abstractmethod
    async def set_item_positions(self, conversation_id: str, positions: Mapping[str, float]) -> None:
        """Rewrite the sort keys of stored items (used when insertions exhaust the gaps between keys)."""

    @abstractmethod
    async def put_response(self, response: ResponseRecord) -> None:
        """Insert or replace a response; the conversation's ``cost_usd`` becomes the sum over its
        responses."""

    @abstractmethod
    async def close_dangling(self, now: datetime | None = None, replica: str | None = None) -> int:
        """End conversations left open by a crash: ``ended_at`` := their last activity.

        Only conversations started before ``now`` (default: the current time) are touched; call this once at
        start-up, before accepting sessions. With :attr:`replica` set, only that replica's (and untagged) ones;
        with ``replica`` given, exactly that (dead) replica's. Returns how many were closed.
        """

    async def open_replicas(self) -> list[str]:
        """Replicas that have conversations open (to find those of a replica that died)."""
        return []

    async def ping(self) -> bool:
        """True when the database answers (``/readyz``)."""
        return True

    @abstractmethod
    async def list_conversations(
        self, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[ConversationRecord], str | None]:
        """A page of conversations, newest first, and the cursor of the next page (``None`` at the end).

        Raises :class:`InvalidCursor` for a cursor this store did not produce.
        """

    @abstractmethod
    async def get_conversation(self, conversation_id: str) -> ConversationDetail | None:
        """The conversation with its items in order and its responses, or ``None``."""

    @abstractmethod
    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation with its items and responses; False if unknown."""


class NullStore(Store):
    """``store.url: none``: keeps nothing, lists nothing. Recorders given this store do no work at all."""

    enabled = False

    @property
    def description(self) -> str:
        return "none (history disabled)"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def start_conversation(self, record: ConversationRecord) -> None:
        return None

    async def update_conversation(
        self,
        conversation_id: str,
        *,
        model: str | None = None,
        voice: str | None = None,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        return None

    async def end_conversation(self, conversation_id: str, ended_at: datetime) -> None:
        return None

    async def upsert_item(self, item: ItemRecord) -> None:
        return None

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        return False

    async def set_item_positions(self, conversation_id: str, positions: Mapping[str, float]) -> None:
        return None

    async def put_response(self, response: ResponseRecord) -> None:
        return None

    async def close_dangling(self, now: datetime | None = None, replica: str | None = None) -> int:
        return 0

    async def list_conversations(
        self, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[ConversationRecord], str | None]:
        if cursor is not None:
            decode_cursor(cursor)
        return [], None

    async def get_conversation(self, conversation_id: str) -> ConversationDetail | None:
        return None

    async def delete_conversation(self, conversation_id: str) -> bool:
        return False
