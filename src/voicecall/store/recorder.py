"""Turn a realtime session's GA event stream into history records, without ever slowing the session down.

Every path produces the same GA events, so one recorder serves them all:

* the local engine (WebSocket and WebRTC): feed every server event it emits, and the engine's per-response
  latency with :meth:`ConversationRecorder.on_response_metrics`;
* a relay to OpenAI: feed server events (OpenAI -> client) and client events (client -> OpenAI);
* a sideband socket on an OpenAI WebRTC call: feed server events only.

The ``on_*`` methods are synchronous and cheap (a few dictionary updates; a record snapshot when an item is
finished): they must be called from the event loop's thread and never raise. Database work goes through a
bounded :class:`asyncio.Queue` to one background task per recorder; failures are logged (without secrets) and
dropped.

Durability: an item is written when it is *done* (``conversation.item.done`` / ``response.output_item.done``),
each write its own committed transaction, so a SIGKILL loses at most the item being spoken (plus anything
queued in the few milliseconds before the write; the queue is normally empty). Later facts about a done item
(the user's transcript, a truncation, function-call arguments) rewrite it."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from voicecall.store.base import (
    ConversationRecord,
    ItemRecord,
    ResponseRecord,
    Store,
    make_title,
    redact,
    utcnow,
)
from voicecall.store.pricing import PriceTable

log = logging.getLogger("voicecall.store")

_ALPHABET = string.ascii_letters + string.digits
_STOP = object()
_APPEND = object()  # "no previous_item_id given": append at the end
_ERROR_LOG_EVERY = 100
_DROP_LOG_EVERY = 1000
ASSISTANT_AUDIO_MS_PER_TOKEN = 50  # "audio tokens in assistant messages are 1 token per 50 ms of audio"


def new_conversation_id() -> str:
    """A fresh conversation id shaped like OpenAI's ids: ``conv_`` and 21 base62 characters."""
    return "conv_" + "".join(secrets.choice(_ALPHABET) for _ in range(21))


def b64_decoded_len(data: str) -> int:
    """Bytes a base64 string decodes to, without decoding it (O(1))."""
    n = len(data)
    if n == 0:
        return 0
    pad = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return max(0, (n * 3) // 4 - pad)


def bytes_per_ms(fmt: Any) -> float | None:
    """Audio bytes per millisecond for a GA (``{"type":"audio/pcm","rate":24000}``) or beta (``"pcm16"``)
    format."""
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if kind == "audio/pcm":
            rate = fmt.get("rate") or 24000
            return 2 * float(rate) / 1000 if isinstance(rate, (int, float)) and rate > 0 else None
        if kind in ("audio/pcmu", "audio/pcma"):
            return 8.0
        return None
    if fmt == "pcm16":
        return 48.0
    if fmt in ("g711_ulaw", "g711_alaw"):
        return 8.0
    return None


def cut_to_heard(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text`` by characters, cut at a word boundary (a word is kept if its middle
    was reached). Used when a truncated item's heard transcript is not given."""
    if fraction >= 1.0:
        return text
    if fraction <= 0.0:
        return ""
    target = len(text) * fraction
    end = 0
    for m in re.finditer(r"\S+", text):
        if (m.start() + m.end()) / 2 <= target:
            end = m.end()
        else:
            break
    return text[:end]


def _price_table(prices: Mapping[str, Mapping[str, Any]] | None) -> PriceTable:
    """A price table that never fails a session: bad overrides are logged and the built-in prices used.

    The server should build ``PriceTable(config.store.prices)`` once at start-up, where a ValueError can
    stop it.
    """
    try:
        return PriceTable(prices)
    except ValueError as exc:
        log.error("history: ignoring store.prices: %s", exc)
        return PriceTable()


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# ------------------------------------------------------------------------------------------ state
@dataclass(slots=True, eq=False)
class _Item:
    id: str
    created_at: datetime
    position: float = 0.0
    prev: str | None = None
    next: str | None = None
    type: str = "message"
    role: str | None = None
    status: str | None = None
    parts: dict[int, str] = field(default_factory=dict)
    deltas: dict[int, list[str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    response_id: str | None = None
    has_audio: bool = False
    images: int = 0
    input_audio_ms: int | None = None
    output_audio_bytes: int = 0
    output_audio_ms_estimate: int | None = None
    truncated: bool = False
    truncate_end_ms: int | None = None
    heard_transcript: str | None = None
    done_at: datetime | None = None
    last_written: ItemRecord | None = None


@dataclass(slots=True, eq=False)
class _Response:
    id: str
    created_at: datetime
    created_mono: float
    speech_stopped_mono: float | None = None
    first_audio_mono: float | None = None
    first_text_mono: float | None = None
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    engine_latency: dict[str, float] = field(default_factory=dict)
    out_of_band: bool = False
    model: str | None = None
    cost_usd: float = 0.0
    done_at: datetime | None = None
    done_mono: float | None = None
    written: bool = False


@dataclass(slots=True)
class _Op:
    name: str
    run: Callable[[Store], Awaitable[Any]]


class ConversationRecorder:
    """Records one conversation from its GA event stream into a :class:`~voicecall.store.base.Store`.

    ``transport`` is ``websocket``, ``webrtc``, ``relay`` or ``sideband``; ``client`` an address and/or
    API-key label (never a secret); ``prices`` the ``store.prices`` overrides (or a ready
    :class:`PriceTable`). ``model``/``voice`` are the initial values; ``session.created``/``session.updated``
    refresh them."""

    def __init__(
        self,
        store: Store,
        *,
        conversation_id: str,
        provider: str,
        model: str | None = None,
        voice: str | None = None,
        transport: str,
        client: str | None = None,
        prices: PriceTable | Mapping[str, Mapping[str, Any]] | None = None,
        started_at: datetime | None = None,
        queue_size: int = 10_000,
        close_timeout: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Any = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        """A :class:`voicecall.cluster.metrics.Metrics` (turns, per-stage latency, errors), or None."""
        self._observed: set[str] = set()
        self.conversation_id = conversation_id
        self.enabled = bool(getattr(store, "enabled", True))
        self._prices = prices if isinstance(prices, PriceTable) else _price_table(prices)
        self._clock = clock
        self._mono = monotonic
        self._close_timeout = close_timeout
        self._conversation = ConversationRecord(
            id=conversation_id,
            provider=provider,
            model=model,
            voice=voice,
            transport=transport,
            client=client,
            started_at=started_at or clock(),
        )
        self._title_item: str | None = None
        self._items: dict[str, _Item] = {}
        self._deleted: set[str] = set()
        self._head: str | None = None
        self._tail: str | None = None
        self._responses: dict[str, _Response] = {}
        self._speech_start_ms: dict[str, int] = {}
        self._pending_input_ms: dict[str, int] = {}
        self._appended_bytes = 0
        self._in_bytes_per_ms = 48.0
        self._out_bytes_per_ms = 48.0
        self._speech_stopped_mono: float | None = None
        self._last_audio_item: tuple[str | None, str | None, _Item] | None = None
        self._queue: asyncio.Queue[_Op | object] = asyncio.Queue(maxsize=max(1, queue_size))
        self._task: asyncio.Task[None] | None = None
        self._conversation_saved = False
        self._closed = False
        self._dropped = 0
        self._failed = 0
        self._event_errors = 0
        if self.enabled:
            record = self._conversation
            self._enqueue("start_conversation", lambda s: s.start_conversation(record))

    # ------------------------------------------------------------------------------ public API
    @property
    def model(self) -> str | None:
        return self._conversation.model

    @property
    def voice(self) -> str | None:
        return self._conversation.voice

    @property
    def stats(self) -> dict[str, int]:
        """Counters for monitoring: queued ops, dropped ops (queue full), failed writes."""
        return {"queued": self._queue.qsize(), "dropped": self._dropped, "failed": self._failed}

    def on_server_event(self, event: Mapping[str, Any]) -> None:
        """Feed one server event (as sent to the client). Never raises, never blocks."""
        if not self.enabled or self._closed:
            return
        try:
            etype = str(event.get("type"))
            handler = _SERVER_HANDLERS.get(etype)
            if handler is not None:
                handler(self, event)
            if etype == "error" and self.metrics is not None:
                err = event.get("error")
                self.metrics.observe_error(err.get("code") if isinstance(err, Mapping) else None)
        except Exception as exc:  # noqa: BLE001 - a malformed event must not reach the audio path
            self._event_error(event, exc)

    def on_client_event(self, event: Mapping[str, Any]) -> None:
        """Feed one client event (relay only: what the client sent to OpenAI). Never raises, never blocks."""
        if not self.enabled or self._closed:
            return
        try:
            etype = event.get("type")
            if etype == "input_audio_buffer.append":
                audio = event.get("audio")
                if isinstance(audio, str):
                    self._appended_bytes += b64_decoded_len(audio)
            elif etype == "input_audio_buffer.clear":
                self._appended_bytes = 0
        except Exception as exc:  # noqa: BLE001
            self._event_error(event, exc)

    def on_audio_appended(self, nbytes: int) -> None:
        """An ``input_audio_buffer.append`` of ``nbytes`` audio bytes (relay fast path: the append was recognised
        without parsing it; same effect as :meth:`on_client_event` with the event)."""
        if self.enabled and not self._closed:
            self._appended_bytes += nbytes

    def on_output_audio(self, response_id: str | None, item_id: str | None, nbytes: int) -> None:
        """A ``response.output_audio.delta`` of ``nbytes`` audio bytes (relay fast path: the delta was recognised
        without parsing it; same effect as :meth:`on_server_event` with the event)."""
        if not self.enabled or self._closed:
            return
        last = self._last_audio_item
        if last is not None and last[0] == response_id and last[1] == item_id and last[2].id in self._items:
            last[2].output_audio_bytes += nbytes  # the same item as the previous delta: one addition
            return
        try:
            self._audio_out(response_id, item_id, nbytes)
            it = self._items.get(item_id) if item_id is not None else None
            r = self._responses.get(response_id) if response_id is not None else None
            self._last_audio_item = (response_id, item_id, it) if it is not None and r is not None \
                and r.first_audio_mono is not None else None
        except Exception as exc:  # noqa: BLE001 - never into the audio path
            self._event_error({"type": "response.output_audio.delta"}, exc)

    def on_response_metrics(self, response_id: str, latency: Mapping[str, float]) -> None:
        """Per-stage latency of a response in ms (from the local engine), before or after its
        ``response.done``."""
        if not self.enabled or self._closed:
            return
        try:
            r = self._responses.get(response_id)
            if r is None:
                r = self._responses[response_id] = _Response(response_id, self._clock(), self._mono())
            r.engine_latency.update(
                {
                    str(k): float(v)
                    for k, v in latency.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
            )
            if r.written:
                self._write_response(r)
        except Exception as exc:  # noqa: BLE001
            self._event_error({"type": "response_metrics"}, exc)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write has been attempted (True), or ``timeout`` seconds (False)."""
        if not self.enabled or not self._ensure_writer():
            return self._queue.empty()
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """End the conversation: save unfinished items and responses, mark it ended, wait for the writes (at
        most ``close_timeout`` seconds). Never raises (except a cancellation of the caller). Idempotent."""
        if self._closed:
            return
        if not self.enabled:
            self._closed = True
            return
        try:
            for it in self._ordered():
                if it.done_at is None and (self._text(it) or it.type != "message"):
                    self._write_item(it, force=True)
            for r in self._responses.values():
                if not r.written:
                    self._write_response(r)
            ended = self._clock()
            self._enqueue("end_conversation", lambda s: s.end_conversation(self.conversation_id, ended))
        except Exception as exc:  # noqa: BLE001
            self._event_error({"type": "close"}, exc)
        self._closed = True
        self._ensure_writer()
        task = self._task
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout
        try:
            await asyncio.wait_for(self._queue.put(_STOP), timeout=self._close_timeout)
            await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - loop.time()))
        except TimeoutError:
            task.cancel()
            log.error(
                "history: conversation %s: the database did not keep up within %.0f s; %d write(s) not saved",
                self.conversation_id,
                self._close_timeout,
                self._queue.qsize(),
            )
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:  # noqa: BLE001
            log.error(
                "history: conversation %s: closing the recorder failed: %s",
                self.conversation_id,
                redact(repr(exc)),
            )
        if self._dropped or self._failed:
            log.warning(
                "history: conversation %s: %d write(s) dropped (queue full), %d failed",
                self.conversation_id,
                self._dropped,
                self._failed,
            )

    # ------------------------------------------------------------------------------ queue / writer
    def _ensure_writer(self) -> bool:
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # built outside the loop: the writer starts with the first event
                return False
            self._task = loop.create_task(self._writer(), name=f"history-{self.conversation_id}")
        return True

    def _enqueue(self, name: str, run: Callable[[Store], Awaitable[Any]]) -> None:
        self._ensure_writer()
        try:
            self._queue.put_nowait(_Op(name, run))
        except asyncio.QueueFull:
            self._drop(name, f"write queue full ({self._queue.maxsize} pending)")

    def _drop(self, name: str, why: str) -> None:
        self._dropped += 1
        if self._dropped == 1 or self._dropped % _DROP_LOG_EVERY == 0:
            log.warning(
                "history: conversation %s: dropping %s: %s (%d dropped so far; is the database stuck?)",
                self.conversation_id,
                name,
                why,
                self._dropped,
            )

    async def _writer(self) -> None:
        while True:
            op = await self._queue.get()
            try:
                if op is _STOP:
                    return
                assert isinstance(op, _Op)
                if not self._conversation_saved and op.name != "start_conversation":
                    # The first insert failed (database down?): items need their conversation row; retry it.
                    await self._apply(
                        _Op("start_conversation", lambda s: s.start_conversation(self._conversation))
                    )
                await self._apply(op)
            finally:
                self._queue.task_done()

    async def _apply(self, op: _Op) -> None:
        try:
            await op.run(self.store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - logged, never raised into the session
            self._failed += 1
            if self._failed == 1 or self._failed % _ERROR_LOG_EVERY == 0:
                log.error(
                    "history: conversation %s: %s failed on %s: %s: %s (%d failure(s) so far)",
                    self.conversation_id,
                    op.name,
                    self.store.description,
                    type(exc).__name__,
                    redact(str(exc)).strip()[:500],
                    self._failed,
                )
            return
        if op.name == "start_conversation":
            self._conversation_saved = True

    def _event_error(self, event: Mapping[str, Any], exc: Exception) -> None:
        self._event_errors += 1
        if self._event_errors <= 3:
            log.warning(
                "history: conversation %s: could not record %r: %s: %s",
                self.conversation_id,
                event.get("type") if isinstance(event, Mapping) else "?",
                type(exc).__name__,
                exc,
            )

    # ------------------------------------------------------------------------------ item order
    def _ordered(self) -> list[_Item]:
        out: list[_Item] = []
        cur = self._head
        while cur is not None:
            it = self._items[cur]
            out.append(it)
            cur = it.next
        return out

    def _unlink(self, it: _Item) -> None:
        if it.prev is not None:
            self._items[it.prev].next = it.next
        else:
            self._head = it.next
        if it.next is not None:
            self._items[it.next].prev = it.prev
        else:
            self._tail = it.prev
        it.prev = it.next = None

    def _link(self, it: _Item, previous: Any) -> None:
        """Place ``it`` after ``previous`` (an item id), at the start (``None``/``"root"``), or at the end."""
        if previous is _APPEND or (
            isinstance(previous, str) and previous != "root" and previous not in self._items
        ):
            after: str | None = self._tail
        elif previous is None or previous == "root":
            after = None
        else:
            after = previous
        before = self._items[after].next if after is not None else self._head
        it.prev, it.next = after, before
        if after is not None:
            self._items[after].next = it.id
        else:
            self._head = it.id
        if before is not None:
            self._items[before].prev = it.id
        else:
            self._tail = it.id
        lo = self._items[after].position if after is not None else None
        hi = self._items[before].position if before is not None else None
        if lo is None and hi is None:
            pos = 1.0
        elif hi is None:
            pos = float(lo) + 1.0  # type: ignore[arg-type]
        elif lo is None:
            pos = hi - 1.0
        else:
            pos = (lo + hi) / 2
            if not lo < pos < hi:
                it.position = pos
                self._renumber()
                return
        it.position = pos

    def _renumber(self) -> None:
        """Float keys ran out between two neighbours (after ~50 inserts at one spot): 1.0, 2.0, ... again."""
        changed: dict[str, float] = {}
        for n, it in enumerate(self._ordered(), start=1):
            if it.position != float(n):
                it.position = float(n)
                if it.last_written is not None:
                    it.last_written.position = float(n)
                    changed[it.id] = float(n)
        if changed:
            cid = self.conversation_id
            self._enqueue("set_item_positions", lambda s: s.set_item_positions(cid, changed))

    def _item(self, item_id: str, previous: Any = _APPEND) -> _Item | None:
        """The state of ``item_id`` (created and placed if new; moved if ``previous`` says so)."""
        if item_id in self._deleted:
            return None
        it = self._items.get(item_id)
        if it is None:
            it = self._items[item_id] = _Item(item_id, self._clock())
            pending = self._pending_input_ms.pop(item_id, None)
            if pending is not None:
                it.input_audio_ms = pending
            self._link(it, previous)
        elif previous is not _APPEND:
            target = None if previous == "root" else previous
            if target != it.prev and target != item_id and (target is None or target in self._items):
                self._unlink(it)
                self._link(it, target)
        return it

    # ------------------------------------------------------------------------------ item content
    def _absorb(self, it: _Item, item: Mapping[str, Any]) -> None:
        typ = item.get("type")
        if isinstance(typ, str) and typ:
            it.type = typ
        role = item.get("role")
        if isinstance(role, str) and role:
            it.role = role
        status = item.get("status")
        if isinstance(status, str) and status:
            it.status = status
        content = item.get("content")
        if isinstance(content, list):
            images = 0
            for index, part in enumerate(content):
                if not isinstance(part, Mapping):
                    continue
                ptype = part.get("type")
                if ptype in ("input_text", "output_text", "text"):
                    value = part.get("text")
                elif ptype in ("input_audio", "output_audio", "audio"):
                    it.has_audio = True
                    value = part.get("transcript")
                else:
                    if ptype == "input_image":
                        images += 1
                    continue
                if isinstance(value, str) and value:
                    it.parts[index] = value
                    it.deltas.pop(index, None)
            it.images = max(it.images, images)
        if it.type == "function_call":
            for key in ("name", "call_id", "arguments"):
                value = item.get(key)
                if isinstance(value, str) and (value or key not in it.extra):
                    it.extra[key] = value
        elif it.type == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if isinstance(call_id, str):
                it.extra["call_id"] = call_id
            if isinstance(output, str):
                it.parts[0] = output

    def _full_text(self, it: _Item) -> str | None:
        indexes = sorted(set(it.parts) | set(it.deltas))
        pieces = [it.parts[i] if i in it.parts else "".join(it.deltas[i]) for i in indexes]
        text = " ".join(p.strip() for p in pieces if p and p.strip())
        return text or None

    def _output_audio_ms(self, it: _Item) -> int | None:
        if it.output_audio_bytes:
            return round(it.output_audio_bytes / self._out_bytes_per_ms)
        return it.output_audio_ms_estimate

    def _text(self, it: _Item) -> str | None:
        full = self._full_text(it)
        if not it.truncated:
            return full
        if it.heard_transcript is not None:
            return it.heard_transcript
        total = self._output_audio_ms(it)
        if full and total and it.truncate_end_ms is not None:
            return cut_to_heard(full, it.truncate_end_ms / total) or None
        return full

    def _record(self, it: _Item) -> ItemRecord:
        if it.role == "assistant":
            audio_ms = self._output_audio_ms(it) if (it.has_audio or it.output_audio_bytes) else None
            if it.truncated and it.truncate_end_ms is not None:
                audio_ms = it.truncate_end_ms if audio_ms is None else min(audio_ms, it.truncate_end_ms)
        else:
            audio_ms = it.input_audio_ms
        extra = dict(it.extra)
        if it.response_id:
            extra["response_id"] = it.response_id
        if it.images:
            extra["images"] = it.images
        if it.status and it.status not in ("completed", "in_progress"):
            extra["status"] = it.status
        if it.truncated:
            if it.truncate_end_ms is not None:
                extra["audio_end_ms"] = it.truncate_end_ms
            total = self._output_audio_ms(it)
            if total is not None:
                extra["generated_audio_ms"] = total
        return ItemRecord(
            id=it.id,
            conversation_id=self.conversation_id,
            position=it.position,
            role=it.role,
            type=it.type,
            text=self._text(it),
            audio_ms=audio_ms,
            truncated=it.truncated,
            created_at=it.created_at,
            done_at=it.done_at,
            extra=extra,
        )

    def _write_item(self, it: _Item, *, force: bool = False) -> None:
        """Queue an upsert of ``it`` if it is done (or ``force``) and changed since its last write."""
        if (it.done_at is None and not force) or it.id in self._deleted:
            return
        record = self._record(it)
        if record == it.last_written:
            return
        it.last_written = record
        self._enqueue("upsert_item", lambda s: s.upsert_item(record))
        if it.role == "user" and it.type == "message" and record.text:
            self._maybe_title(it, record.text)

    def _maybe_title(self, it: _Item, text: str) -> None:
        current = self._items.get(self._title_item) if self._title_item else None
        if current is not None and current is not it and current.position <= it.position:
            return
        self._title_item = it.id
        title = make_title(text)
        if title and title != self._conversation.title:
            self._conversation.title = title
            cid = self.conversation_id
            self._enqueue("update_conversation", lambda s: s.update_conversation(cid, title=title))

    def _done(self, it: _Item) -> None:
        if it.done_at is None:
            it.done_at = self._clock()
        self._write_item(it)

    # ------------------------------------------------------------------------------ responses
    def _write_response(self, r: _Response) -> None:
        latency: dict[str, float] = {}
        if r.first_audio_mono is not None:
            latency["first_audio_ms"] = round((r.first_audio_mono - r.created_mono) * 1000, 1)
            if r.speech_stopped_mono is not None:
                latency["speech_stopped_to_first_audio_ms"] = round(
                    (r.first_audio_mono - r.speech_stopped_mono) * 1000, 1
                )
        if r.first_text_mono is not None:
            latency["first_text_ms"] = round((r.first_text_mono - r.created_mono) * 1000, 1)
        if r.done_mono is not None:
            latency["total_ms"] = round((r.done_mono - r.created_mono) * 1000, 1)
        latency.update(r.engine_latency)
        record = ResponseRecord(
            id=r.id,
            conversation_id=self.conversation_id,
            status=r.status,
            status_details=r.status_details,
            usage=r.usage,
            latency=latency,
            cost_usd=r.cost_usd,
            model=r.model or self._conversation.model,
            created_at=r.created_at,
            done_at=r.done_at,
        )
        r.written = True
        if self.metrics is not None and r.done_mono is not None and r.id not in self._observed:
            self._observed.add(r.id)
            self.metrics.observe_response(self._conversation.provider, r.status, latency)
        self._enqueue("put_response", lambda s: s.put_response(record))

    # ------------------------------------------------------------------------------ event handlers
    def _session(self, event: Mapping[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, Mapping):
            return
        model = session.get("model")
        audio = _mapping(session.get("audio"))
        out, inp = _mapping(audio.get("output")), _mapping(audio.get("input"))
        voice: Any = out.get("voice", session.get("voice"))
        if isinstance(voice, Mapping):
            voice = voice.get("id")
        rate = bytes_per_ms(out.get("format", session.get("output_audio_format")))
        if rate:
            self._out_bytes_per_ms = rate
        rate = bytes_per_ms(inp.get("format", session.get("input_audio_format")))
        if rate:
            self._in_bytes_per_ms = rate
        changes: dict[str, str] = {}
        if isinstance(model, str) and model and model != self._conversation.model:
            self._conversation.model = changes["model"] = model
        if isinstance(voice, str) and voice and voice != self._conversation.voice:
            self._conversation.voice = changes["voice"] = voice
        metadata: dict[str, Any] | None = None
        if "tracing" in session and session["tracing"] != self._conversation.metadata.get("tracing"):
            metadata = self._conversation.metadata = {**self._conversation.metadata, "tracing": session["tracing"]}
        if changes or metadata is not None:
            cid = self.conversation_id
            model_, voice_ = changes.get("model"), changes.get("voice")
            self._enqueue("update_conversation",
                          lambda s: s.update_conversation(cid, model=model_, voice=voice_, metadata=metadata))

    def _item_event(self, event: Mapping[str, Any], *, done: bool) -> None:
        item = event.get("item")
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            return
        previous = event.get("previous_item_id", _APPEND)  # absent: append; null: at the start
        it = self._item(item["id"], previous)
        if it is None:
            return
        self._absorb(it, item)
        if isinstance(event.get("response_id"), str):
            self._attach(it, event["response_id"])
        if done:
            self._done(it)
        elif it.done_at is not None:
            self._write_item(it)

    def _attach(self, it: _Item, response_id: str) -> None:
        it.response_id = response_id
        r = self._responses.get(response_id)
        if r is not None and r.out_of_band:
            it.extra["out_of_band"] = (
                True  # output of a conversation:"none" response, not part of the context
            )

    def _on_item_added(self, event: Mapping[str, Any]) -> None:
        self._item_event(event, done=False)

    def _on_item_done(self, event: Mapping[str, Any]) -> None:
        self._item_event(event, done=True)

    def _existing(self, event: Mapping[str, Any]) -> _Item | None:
        item_id = event.get("item_id")
        return self._item(item_id) if isinstance(item_id, str) else None

    def _on_transcription_delta(self, event: Mapping[str, Any]) -> None:
        it = self._existing(event)
        delta = event.get("delta")
        if it is not None and isinstance(delta, str):
            index = int(event.get("content_index") or 0)
            if index not in it.parts:
                it.deltas.setdefault(index, []).append(delta)

    def _on_transcription_completed(self, event: Mapping[str, Any]) -> None:
        it = self._existing(event)
        transcript = event.get("transcript")
        if it is None or not isinstance(transcript, str):
            return
        if it.role is None:
            it.role = "user"
        index = int(event.get("content_index") or 0)
        it.parts[index] = transcript.strip()
        it.deltas.pop(index, None)
        it.extra.pop("transcription_error", None)
        self._write_item(it)

    def _on_transcription_failed(self, event: Mapping[str, Any]) -> None:
        it = self._existing(event)
        if it is None:
            return
        err = event.get("error")
        message = err.get("message") if isinstance(err, Mapping) else None
        it.extra["transcription_error"] = message if isinstance(message, str) else "transcription failed"
        self._write_item(it)

    def _on_speech_started(self, event: Mapping[str, Any]) -> None:
        item_id, start = event.get("item_id"), event.get("audio_start_ms")
        if isinstance(item_id, str) and isinstance(start, (int, float)):
            self._speech_start_ms[item_id] = int(start)

    def _on_speech_stopped(self, event: Mapping[str, Any]) -> None:
        self._speech_stopped_mono = self._mono()
        item_id, end = event.get("item_id"), event.get("audio_end_ms")
        start = self._speech_start_ms.pop(item_id, None) if isinstance(item_id, str) else None
        if isinstance(item_id, str) and isinstance(end, (int, float)) and start is not None:
            self._set_input_ms(item_id, max(0, int(end) - start))

    def _set_input_ms(self, item_id: str, ms: int) -> None:
        it = self._items.get(item_id)
        if it is None:
            if item_id not in self._deleted:
                self._pending_input_ms[item_id] = ms
            return
        it.input_audio_ms = ms
        self._write_item(it)

    def _on_committed(self, event: Mapping[str, Any]) -> None:
        item_id = event.get("item_id")
        appended, self._appended_bytes = self._appended_bytes, 0
        if not isinstance(item_id, str) or not appended:
            return
        it = self._items.get(item_id)
        known = it.input_audio_ms if it is not None else self._pending_input_ms.get(item_id)
        if known is None:
            self._set_input_ms(item_id, round(appended / self._in_bytes_per_ms))

    def _on_cleared(self, event: Mapping[str, Any]) -> None:
        self._appended_bytes = 0

    def _response(self, response_id: Any) -> _Response | None:
        if not isinstance(response_id, str):
            return None
        r = self._responses.get(response_id)
        if r is None:
            r = self._responses[response_id] = _Response(response_id, self._clock(), self._mono())
        return r

    def _response_of(self, event: Mapping[str, Any]) -> tuple[Mapping[str, Any], _Response] | None:
        """The ``response`` object of a ``response.created``/``.done`` event and its record."""
        resp = event.get("response")
        if not isinstance(resp, Mapping):
            return None
        r = self._response(resp.get("id"))
        return None if r is None else (resp, r)

    def _on_response_created(self, event: Mapping[str, Any]) -> None:
        found = self._response_of(event)
        if found is None:
            return
        resp, r = found
        r.created_at, r.created_mono = self._clock(), self._mono()
        r.out_of_band = (
            "conversation_id" in resp and resp.get("conversation_id") is None
        )  # conversation: "none"
        if not r.out_of_band:
            r.speech_stopped_mono, self._speech_stopped_mono = self._speech_stopped_mono, None
        r.model = self._conversation.model

    def _on_text_delta(self, event: Mapping[str, Any]) -> None:
        r = self._response(event.get("response_id"))
        if r is not None and r.first_text_mono is None:
            r.first_text_mono = self._mono()
        it = self._existing(event)
        delta = event.get("delta")
        if it is not None and isinstance(delta, str):
            if it.role is None:
                it.role = "assistant"
            index = int(event.get("content_index") or 0)
            if index not in it.parts:
                it.deltas.setdefault(index, []).append(delta)

    def _on_text_done(self, event: Mapping[str, Any]) -> None:
        it = self._existing(event)
        value = event.get("transcript", event.get("text"))
        if it is None or not isinstance(value, str):
            return
        if it.role is None:
            it.role = "assistant"
        if "transcript" in event:
            it.has_audio = True
        index = int(event.get("content_index") or 0)
        it.parts[index] = value
        it.deltas.pop(index, None)
        self._write_item(it)

    def _on_content_part_done(self, event: Mapping[str, Any]) -> None:
        part = event.get("part")
        if not isinstance(part, Mapping):
            return
        if part.get("type") == "audio" and isinstance(part.get("transcript"), str):
            self._on_text_done({**event, "transcript": part["transcript"]})
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            self._on_text_done({**event, "text": part["text"]})

    def _on_audio_delta(self, event: Mapping[str, Any]) -> None:
        delta = event.get("delta")
        item_id = event.get("item_id")
        self._audio_out(event.get("response_id"), item_id if isinstance(item_id, str) else None,
                        b64_decoded_len(delta) if isinstance(delta, str) else None)

    def _audio_out(self, response_id: Any, item_id: str | None, nbytes: int | None) -> None:
        r = self._response(response_id)
        if r is not None and r.first_audio_mono is None:
            r.first_audio_mono = self._mono()
        it = self._item(item_id) if item_id is not None else None
        if it is not None and nbytes is not None:
            it.has_audio = True
            it.output_audio_bytes += nbytes

    def _on_output_buffer_started(self, event: Mapping[str, Any]) -> None:
        r = self._response(event.get("response_id"))
        if r is not None and r.first_audio_mono is None:
            r.first_audio_mono = self._mono()

    def _on_function_arguments_done(self, event: Mapping[str, Any]) -> None:
        it = self._existing(event)
        if it is None:
            return
        it.type = "function_call"
        for key in ("name", "call_id", "arguments"):
            value = event.get(key)
            if isinstance(value, str):
                it.extra[key] = value
        if isinstance(event.get("response_id"), str):
            self._attach(it, event["response_id"])
        self._write_item(it)

    def _on_truncated(self, event: Mapping[str, Any]) -> None:
        it = self._existing(event)
        if it is None:
            return
        it.truncated = True
        end = event.get("audio_end_ms")
        if isinstance(end, (int, float)) and not isinstance(end, bool):
            it.truncate_end_ms = max(0, int(end))
        transcript = event.get("transcript")
        if isinstance(transcript, str):
            it.heard_transcript = transcript
        self._write_item(it)

    def _on_deleted(self, event: Mapping[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or item_id in self._deleted:
            return
        self._deleted.add(item_id)
        self._pending_input_ms.pop(item_id, None)
        it = self._items.pop(item_id, None)
        if it is None:
            return
        self._unlink(it)
        if it.last_written is not None:
            cid = self.conversation_id
            self._enqueue("delete_item", lambda s: s.delete_item(cid, item_id))
        if self._title_item == item_id:
            self._title_item = None
            for other in self._ordered():
                text = other.last_written.text if other.last_written is not None else None
                if other.role == "user" and other.type == "message" and text:
                    self._maybe_title(other, text)
                    break

    def _on_response_done(self, event: Mapping[str, Any]) -> None:
        found = self._response_of(event)
        if found is None:
            return
        resp, r = found
        r.status = str(resp.get("status") or "completed")
        details = resp.get("status_details")
        r.status_details = dict(details) if isinstance(details, Mapping) else None
        usage = resp.get("usage")
        r.usage = dict(usage) if isinstance(usage, Mapping) else None
        r.model = r.model or self._conversation.model
        xv = _mapping(resp.get("x_voicecall"))
        stage_cost = _mapping(xv.get("cost"))
        total = stage_cost.get("total_usd")
        if isinstance(total, (int, float)) and not isinstance(total, bool):
            # The local engine's pipeline prices itself (speech/prices.py): keep its split by stage with the usage.
            r.cost_usd = max(0.0, float(total))
            r.usage = {**(r.usage or {}), "x_voicecall": {"cost": dict(stage_cost),
                                                          "providers": dict(_mapping(xv.get("providers")))}}
        else:
            r.cost_usd = self._prices.cost_usd(r.model, r.usage)
        r.done_at, r.done_mono = self._clock(), self._mono()
        output = resp.get("output")
        audio_items: list[_Item] = []
        if isinstance(output, list):
            for item in output:
                if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
                    continue
                it = self._item(item["id"])
                if it is None:
                    continue
                self._absorb(it, item)
                if it.response_id is None:
                    self._attach(it, r.id)
                if it.has_audio:
                    audio_items.append(it)
        # WebRTC carries audio outside the events: estimate its length from the output audio tokens.
        if len(audio_items) == 1 and not audio_items[0].output_audio_bytes and r.usage:
            details_out = r.usage.get("output_token_details")
            tokens = details_out.get("audio_tokens") if isinstance(details_out, Mapping) else None
            if isinstance(tokens, (int, float)) and tokens > 0:
                audio_items[0].output_audio_ms_estimate = int(tokens * ASSISTANT_AUDIO_MS_PER_TOKEN)
        if isinstance(output, list):
            for item in output:
                if (
                    isinstance(item, Mapping)
                    and isinstance(item.get("id"), str)
                    and item["id"] in self._items
                ):
                    self._done(self._items[item["id"]])
        self._write_response(r)


_Handler = Callable[[ConversationRecorder, Mapping[str, Any]], None]
_SERVER_HANDLERS: dict[str, _Handler] = {
    "session.created": ConversationRecorder._session,
    "session.updated": ConversationRecorder._session,
    "conversation.item.added": ConversationRecorder._on_item_added,
    "conversation.item.created": ConversationRecorder._on_item_added,  # beta name
    "conversation.item.done": ConversationRecorder._on_item_done,
    "response.output_item.added": ConversationRecorder._on_item_added,
    "response.output_item.done": ConversationRecorder._on_item_done,
    "conversation.item.input_audio_transcription.delta": ConversationRecorder._on_transcription_delta,
    "conversation.item.input_audio_transcription.completed": ConversationRecorder._on_transcription_completed,
    "conversation.item.input_audio_transcription.failed": ConversationRecorder._on_transcription_failed,
    "input_audio_buffer.speech_started": ConversationRecorder._on_speech_started,
    "input_audio_buffer.speech_stopped": ConversationRecorder._on_speech_stopped,
    "input_audio_buffer.committed": ConversationRecorder._on_committed,
    "input_audio_buffer.cleared": ConversationRecorder._on_cleared,
    "response.created": ConversationRecorder._on_response_created,
    "response.output_text.delta": ConversationRecorder._on_text_delta,
    "response.output_audio_transcript.delta": ConversationRecorder._on_text_delta,
    "response.text.delta": ConversationRecorder._on_text_delta,  # beta names
    "response.audio_transcript.delta": ConversationRecorder._on_text_delta,
    "response.output_text.done": ConversationRecorder._on_text_done,
    "response.output_audio_transcript.done": ConversationRecorder._on_text_done,
    "response.text.done": ConversationRecorder._on_text_done,
    "response.audio_transcript.done": ConversationRecorder._on_text_done,
    "response.content_part.done": ConversationRecorder._on_content_part_done,
    "response.output_audio.delta": ConversationRecorder._on_audio_delta,
    "response.audio.delta": ConversationRecorder._on_audio_delta,
    "output_audio_buffer.started": ConversationRecorder._on_output_buffer_started,
    "response.function_call_arguments.done": ConversationRecorder._on_function_arguments_done,
    "conversation.item.truncated": ConversationRecorder._on_truncated,
    "conversation.item.deleted": ConversationRecorder._on_deleted,
    "response.done": ConversationRecorder._on_response_done,
}
