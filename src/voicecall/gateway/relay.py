"""``GET /v1/realtime`` on the gateway: one upstream WebSocket to OpenAI per client WebSocket, frames relayed
verbatim both ways.

What the relay does, in order:

1. accepts the client, echoing only the ``realtime`` subprotocol (never a key-bearing one);
2. takes a session slot (``server.maxSessions``; full: ``error`` ``session_limit_reached`` + close 1013);
3. opens ``{ws base}/realtime?model=<openaiRealtime.model>`` (the configured model, whatever ``?model=`` the
   client asked for) or ``?call_id=rtc_…`` (joining a WebRTC call), with only ``Authorization: Bearer <server key>``:
   no client header, no subprotocol, no ``OpenAI-Beta``. Client frames that arrive meanwhile are queued (at most
   :data:`PREOPEN_FRAMES`; then reading the client pauses);
4. sends a first ``session.update`` with the server's session (instructions, voice; or the session of the client
   secret the client authenticated with) and folds its answer into the ``session.created`` the client sees, so the
   client gets one ``session.created`` that already shows the effective configuration;
5. relays: the original bytes of every message are forwarded (no re-serialisation);
6. ends on either side's close, propagating code and reason (upstream 4000 -> client 4000), after
   ``server.maxSessionSeconds`` (``error`` ``session_expired``, close 1000), or when ``openaiRealtime.maxSpendUsd``
   is passed (``error`` ``spend_limit_reached``, close 1008).

The hot path (:meth:`Relay.client_message`, :meth:`Relay.upstream_message`) runs inside the sockets' I/O callbacks
(:mod:`voicecall.transports.frames`): a message is handled and written to the other socket within the
``data_received`` call that parsed it, with no task, future or queue per message. Each direction:

* **size** first (``len(data)``, before anything looks inside);
* **peek** (:mod:`voicecall.protocol.peek`): ``input_audio_buffer.append`` / ``response.output_audio.delta`` in the
  usual shapes are recognised from their first bytes and forwarded as they are; history gets their audio byte
  count (and the delta's ids, read with a bounded pattern) without a JSON parse;
* anything else takes the **slow path** (``_inspect_up`` / ``_inspect_down``): parsed when the history recorder,
  the spend limit or the browser policy needs it;
* **back-pressure**: a write goes to the destination's transport buffer at once; when that buffer passes its
  high-water mark the relay stops reading the source until it drains (``pause_reading`` / ``on_writable``), so
  per session at most a buffer's worth of bytes waits, and a slow reader slows only its own sender.

Upstream refusals (HTTP 401/403/429/5xx on the handshake, unreachable, timeout) reach the client as an ``error``
event (``upstream_unauthorized``, ``upstream_rate_limited``, ``upstream_unavailable``, ``upstream_unreachable``,
``upstream_timeout``) and a close (1011, 1013, 1014). Clients that authenticated with a client secret are browsers:
their ``session.update`` loses the locked fields (:mod:`voicecall.gateway.policy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from starlette.websockets import WebSocket, WebSocketState
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from voicecall.gateway import policy
from voicecall.gateway.upstream import (
    USER_AGENT,
    UpstreamError,
    auth_headers,
    from_status,
    from_transport,
    gateway_state,
    price_table,
    redact,
    upstream_host,
    ws_logger,
    ws_url,
)
from voicecall.gateway.upstream_ws import PING_INTERVAL, PONG_TIMEOUT, UpstreamConnection, open_upstream
from voicecall.protocol.beta import BetaRefusal, BetaSession
from voicecall.protocol.errors import error_event
from voicecall.protocol.events import json_limits_problem
from voicecall.protocol.ids import new_id
from voicecall.protocol.peek import (
    ERROR_PREFIXES,
    DeltaIds,
    b64_bytes,
    peek_append,
    peek_audio_delta,
    unique_keys,
)
from voicecall.redaction import REDACTOR, safe_code, withheld
from voicecall.server.limits import Lease, Refused, closing_event, refuse_websocket
from voicecall.transports.frames import FrameSocket, frame_socket, whole_second

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal
    from voicecall.store.recorder import ConversationRecorder

log = logging.getLogger("voicecall.gateway")

PREOPEN_FRAMES = 256
"""Client frames kept while the upstream socket opens (5 s of 20 ms appends); past that the relay stops reading
the client until upstream is open."""
INIT_WAIT_SECONDS = 5.0
"""How long ``session.created`` is held back waiting for the answer to the relay's first ``session.update``."""
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


async def _abandon(connecting: asyncio.Future[UpstreamConnection]) -> None:
    """Stop an upstream connection attempt; close the connection if it got through anyway."""
    connecting.cancel()
    with contextlib.suppress(BaseException):
        conn = await connecting
        await conn.close()


def _close_code(code: int | None) -> int:
    """A close code this side may send (1005/1006/1015 are reserved for 'none given' / 'abnormal')."""
    if code is not None and (code in _SENDABLE or 3000 <= code <= 4999):
        return code
    return 1000


def _reason(text: str) -> str:
    """A close reason within the 123-byte limit."""
    data = text.encode()[:123]
    return data.decode(errors="ignore")


def _ws_status_error(state: AppState, exc: InvalidStatus) -> UpstreamError:
    """An HTTP answer instead of a WebSocket upgrade, as a client error."""
    resp = exc.response
    status = int(resp.status_code)
    message, code = "", None
    if status != 401 and resp.body:
        try:
            body = json.loads(resp.body)
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                message = str(err.get("message") or "")
                code = safe_code(err.get("code"))
        except (ValueError, RecursionError):
            message = resp.body[:300].decode(errors="replace")
    message = redact(withheld(" ".join(message.split())[:500]), state)
    return from_status(state, status, "WebSocket", message=message, code=code,
                       retry_after=resp.headers.get("Retry-After"))


# ------------------------------------------------------------------------------------------ the relay
async def relay_websocket(ws: WebSocket, state: AppState, principal: Principal, subprotocol: str | None,
                          beta: bool = False) -> None:
    """Serve one client WebSocket (not yet accepted; already authenticated) by relaying it to OpenAI. ``beta``: the
    client speaks the beta protocol; upstream hears GA and the client beta (:mod:`voicecall.protocol.beta`)."""
    await ws.accept(subprotocol="realtime" if subprotocol == "realtime" else None)
    try:
        lease = await state.sessions.admit(principal.client, "relay")
    except Refused as exc:
        log.warning("gateway: relay refused for %s: %s", principal.label, exc.code)
        await refuse_websocket(ws, exc)
        return
    relay = Relay(ws, state, principal)
    relay.lease = lease
    relay.beta = BetaSession() if beta else None
    lease.closer = relay.end_for_drain
    try:
        await relay.run()
    finally:
        lease.release()
        state.metrics.relayed("client_to_upstream", relay.up_messages, relay.up_bytes)
        state.metrics.relayed("upstream_to_client", relay.down_messages, relay.down_bytes)


class _FromClient:
    """The client socket's :class:`~voicecall.transports.frames.FrameSink` (``on_message`` is the relay's bound
    method itself: no extra call per message)."""

    __slots__ = ("on_message", "relay")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.on_message: Callable[[bytes, bool], None] = relay.client_message

    def on_writable(self) -> None:
        up = self.relay.upstream
        if up is not None:
            up.resume_reading()

    def on_closed(self, code: int | None, reason: str) -> None:
        self.relay.client_closed(code, reason)


class _FromUpstream:
    """The upstream socket's :class:`~voicecall.transports.frames.FrameSink` (``on_message``: see
    :class:`_FromClient`)."""

    __slots__ = ("on_message", "on_text_frame", "relay")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.on_message: Callable[[bytes, bool], None] = relay.upstream_message
        self.on_text_frame: Callable[[bytes, bytes | None], None] = relay.upstream_text

    def on_writable(self) -> None:
        if self.relay.client is not None and len(self.relay.pending) < PREOPEN_FRAMES:
            self.relay.client.resume_reading()

    def on_closed(self, code: int | None, reason: str) -> None:
        self.relay.upstream_closed(code, reason)


class _Ticker:
    """Every relay watchdog of one event loop, checked once a second by one timer: one wake-up a second however many
    sessions are open (on an idle server the wake-ups are most of the CPU: ~0.2 ms each on this machine, the checks
    a few microseconds). Past :attr:`CHUNK` relays the checks run :attr:`CHUNK` at a time, each chunk in a loop
    iteration of its own (``call_soon``), so the sockets' I/O callbacks run between chunks and no moment carries
    thousands of checks. (A tenth of the relays every 100 ms cost ten wake-ups a second; a timer per relay re-armed on
    the loop's whole seconds ran every relay's check and re-arm back to back.)"""

    CHUNK = 200
    _by_loop: ClassVar[dict[asyncio.AbstractEventLoop, _Ticker]] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dogs: dict[_Watchdog, None] = {}  # (insertion-ordered: checked in the order they came)
        self.due = 0.0
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Ticker:
        ticker = cls._by_loop.get(loop)
        if ticker is None:
            ticker = cls._by_loop[loop] = cls(loop)
        return ticker

    def add(self, dog: _Watchdog) -> None:
        """Check ``dog`` once a second from now on (on the loop's whole seconds, with the client sockets' keepalive
        pings: :func:`~voicecall.transports.frames.whole_second`)."""
        self.dogs[dog] = None
        if self.handle is None:
            self.due = whole_second(self.loop, 0.0)
            self._schedule()

    def discard(self, dog: _Watchdog) -> None:
        self.dogs.pop(dog, None)
        if not self.dogs:
            if self.handle is not None:
                self.handle.cancel()
                self.handle = None
            self._by_loop.pop(self.loop, None)

    def _schedule(self) -> None:
        self.due = max(self.due + 1.0, whole_second(self.loop, 0.0))
        self.handle = self.loop.call_at(self.due, self._tick)

    def _tick(self) -> None:
        self._schedule()
        self._check(list(self.dogs), 0)

    def _check(self, dogs: list[_Watchdog], start: int) -> None:
        end = start + self.CHUNK
        for dog in dogs[start:end]:
            dog.tick()  # (a relay that ended meanwhile returns at once)
        if end < len(dogs):
            self.loop.call_soon(self._check, dogs, end)


class _Watchdog:
    """A relay's watchdogs, checked once a second (:class:`_Ticker`; no per-message cost: they compare the message
    counters between checks): no first event / idle client, a client that takes nothing, an upstream that stalls
    while it owes an answer; and the session's length, by a timer of its own. A tripped watchdog ends the relay with
    its reason (``expired``, ``idle``, ``slow``)."""

    __slots__ = ("blocked_since", "expiry", "ping", "ping_at", "ping_sent", "relay", "seen_down", "seen_up", "ticker")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        self.seen_up, self.seen_down = (relay.up_messages, now), (relay.down_messages, now)
        self.blocked_since: float | None = None
        self.ping: bytes | None = None  # the upstream keepalive ping whose pong is awaited
        self.ping_sent = 0.0
        self.ping_at = now + PING_INTERVAL * random.uniform(0.75, 1.0)
        self.expiry = loop.call_later(max(0.0, relay.max_seconds - (now - relay.started)), relay._end, "expired")
        self.ticker = _Ticker.of(loop)
        self.ticker.add(self)

    def cancel(self) -> None:
        self.expiry.cancel()
        self.ticker.discard(self)

    def tick(self) -> None:
        try:
            self._check()
        except Exception:  # a timer callback's exception would only reach the loop's handler: end the relay
            log.exception("gateway: relay for %s: watchdog failed", self.relay.principal.label)
            self.relay._end("watchdog failed")

    def _check(self) -> None:
        relay = self.relay
        if relay.ended is None or relay.ended.done():
            return
        first, idle, send_timeout, stall = relay.limits
        now = time.monotonic()
        if relay.up_messages != self.seen_up[0]:
            self.seen_up = (relay.up_messages, now)
        if relay.down_messages != self.seen_down[0]:
            self.seen_down = (relay.down_messages, now)
        limit, what = (idle, "any event") if relay.up_messages else (first, "a first event")
        if now - self.seen_up[1] >= limit:
            from voicecall.transports.websocket import idle_timeout

            idle_timeout(relay, what, limit)
            relay._end("idle")
            return
        client = relay.client
        if client is not None and not client.writable:
            self.blocked_since = self.blocked_since or now
            if now - self.blocked_since >= send_timeout:
                relay._too_slow(f"took no data for {send_timeout:g} s")
                relay._end("slow")
                return
        else:
            self.blocked_since = None
        if (relay.awaiting_upstream or relay.open_response) and \
                now - max(self.seen_down[1], relay.waiting_since) >= stall:
            relay._stalled(stall)
        if relay.upstream is not None:
            self._keepalive(relay.upstream, now)

    def _keepalive(self, up: UpstreamConnection, now: float) -> None:
        """Upstream's keepalive: a ping every :data:`PING_INTERVAL` (x 0.75-1.0, drawn per relay); no pong within
        :data:`PONG_TIMEOUT` fails the connection (the client then gets ``upstream_disconnected``, 1011)."""
        if self.ping is not None:
            if not up.pong_awaited(self.ping):
                self.ping = None
            elif now - self.ping_sent >= PONG_TIMEOUT:
                log.warning("gateway: relay for %s: upstream answered no keepalive ping for %g s",
                            self.relay.principal.label, PONG_TIMEOUT)
                self.ping = None
                up.fail_keepalive()
        elif now >= self.ping_at:
            self.ping = up.send_keepalive_ping()
            self.ping_sent = now
            self.ping_at = now + PING_INTERVAL * random.uniform(0.75, 1.0)


class Relay:
    """One relayed session. Use :func:`relay_websocket`."""

    def __init__(self, ws: WebSocket, state: AppState, principal: Principal) -> None:
        self.ws = ws
        self.state = state
        self.principal = principal
        self.oai = state.config.voice_call.openai_realtime
        self.max_bytes = state.config.server.max_message_bytes
        self.max_seconds = state.config.server.max_session_seconds
        self.call_id = ws.query_params.get("call_id") or None
        secret = principal.secret
        self.browser = secret is not None
        self.secret_session = secret.session if secret is not None and secret.provider == "openai-realtime" else None
        self.recorder: ConversationRecorder | None = None
        self.model = self.oai.model
        self.cost_usd = 0.0
        self.max_spend = self.oai.max_spend_usd
        self._prices: Any = None
        self.client: FrameSocket | None = None
        self.upstream: UpstreamConnection | None = None
        self.pending: deque[tuple[bytes, bool]] = deque()
        self.ended: asyncio.Future[str] | None = None
        self.init_event_id: str | None = None
        self.init_pending = False
        self.init_timer: asyncio.TimerHandle | None = None
        self.held_created: dict[str, Any] | None = None
        self.last_was_error = False
        self.client_close: tuple[int, str] | None = None
        self.upstream_close: tuple[int, str] | None = None
        self.upstream_abnormal = False
        self.stop: str | None = None
        self.started = time.monotonic()
        self.up_messages = self.up_bytes = self.down_messages = self.down_bytes = 0
        """Messages and bytes forwarded client -> upstream and upstream -> client (plain counters, for metrics)."""
        self.lease: Lease | None = None
        self.daily_limit = state.config.state.max_spend_per_client_per_day_usd
        self.spend_reason: str | None = None
        self._spend_tasks: set[asyncio.Task[None]] = set()
        self.beta: BetaSession | None = None
        self.delta_ids = DeltaIds()
        self.audio_in = 0
        """Audio bytes of the appends forwarded since the recorder last heard of them (:meth:`_flush_audio`)."""
        self.audio_out = 0
        """Audio bytes of the deltas forwarded since the recorder last heard of them: deltas of the item whose first
        delta it was given (``delta_ids.ids``)."""
        server = state.config.server
        self.max_outgoing = server.max_outgoing_bytes
        self.limits = (server.first_event_seconds, server.idle_session_seconds, server.send_timeout_seconds,
                       self.oai.response_stall_seconds)
        self.awaiting_upstream = False
        """The client sent ``response.create`` / ``input_audio_buffer.commit``: upstream owes an answer."""
        self.open_response: str | None = None
        """The id of the response upstream is producing (``response.created`` seen, ``response.done`` not yet)."""
        self.slow = ""
        self.idle = ""
        self.waiting_since = 0.0

    # -------------------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Connect upstream, relay until one side ends, propagate the end, record."""
        label = self.principal.label
        if self.call_id is not None and not self._may_join(self.call_id):
            await self._fail(UpstreamError(404, "call_not_found", f"No call {self.call_id[:40]!r} that this client "
                                           "may join.", type="invalid_request_error", close_code=1008))
            return
        self.recorder = self._make_recorder()
        url = ws_url(self.state, call_id=self.call_id) if self.call_id else ws_url(self.state, model=self.oai.model)
        asked = self.ws.query_params.get("model")
        if asked and asked != self.oai.model and not self.call_id:
            log.debug("gateway: client asked for model %r; using the configured %r", asked[:60], self.oai.model)
        log.info("gateway: relay for %s -> %s (%s)", label, upstream_host(self.state),
                 f"call {self.call_id}" if self.call_id else f"model {self.oai.model}")
        self.ended = asyncio.get_running_loop().create_future()
        self.client = frame_socket(self.ws)
        self.client.attach(_FromClient(self))
        why = "?"
        try:
            why = await self._relay(url)
        except (OSError, RuntimeError) as exc:  # the client socket broke under us
            why = f"client connection failed: {type(exc).__name__}"
        finally:
            if self.init_timer is not None:
                self.init_timer.cancel()
            if self.recorder is not None:
                self._flush_audio()
                await self.recorder.close()
            await self._close_upstream(1000, "")
            await self._close_client(1000, "")
            log.info("gateway: relay for %s ended after %.1f s: %s%s", label, time.monotonic() - self.started, why,
                     f" (estimated ${self.cost_usd:.4f})" if self.cost_usd else "")

    async def _relay(self, url: str) -> str:
        assert self.ended is not None and self.client is not None
        connecting = asyncio.ensure_future(self._connect(url))
        try:
            waiting: set[asyncio.Future[Any]] = {connecting, self.ended}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await _abandon(connecting)
            raise
        if not connecting.done() or self.ended.done():
            await _abandon(connecting)
            return "client left before upstream was open"
        try:
            up = connecting.result()
        except UpstreamError as exc:
            await self._fail(exc)
            return f"upstream refused: {exc.code}"
        self.upstream = up
        if self.call_id is None:
            self._send_initial_update()
        up.attach(_FromUpstream(self))  # delivers what upstream already sent (session.created) first
        while self.pending:
            data, text = self.pending.popleft()
            self.client_message(data, text)
        if up.writable:
            self.client.resume_reading()
        why = await self._watch()
        if why == "expired":
            return await self._expire()
        if why == "slow":
            await self._close_client(1008, self.slow)
            await self._close_upstream(1000, "client too slow")
            return self.slow
        if why == "idle":
            await self._close_client(1008, self.idle)
            await self._close_upstream(1000, "client idle")
            return self.idle
        if why == "spend":
            return await self._spend_exceeded()
        if why == "upstream":
            return await self._upstream_closed()
        code, reason = self.client_close or (1000, "")
        await self._close_upstream(_close_code(code), reason)
        return f"client closed ({code}{': ' + reason if reason else ''})"

    async def _watch(self) -> str:
        """Wait for the end while the watchdogs are checked once a second (:class:`_Watchdog`)."""
        assert self.ended is not None
        dog = _Watchdog(self)
        try:
            return await self.ended
        finally:
            dog.cancel()

    # the transport interface idle_timeout() uses
    kind = "relay"

    def send_event(self, event: dict[str, Any]) -> None:
        self._to_client(event)

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.idle = reason

    def _too_slow(self, why: str) -> None:
        self.slow = f"client too slow: {why}"[:120]
        log.warning("gateway: relay for %s: %s", self.principal.label, self.slow)

    def _stalled(self, seconds: float) -> None:
        """Upstream owes an answer and sent nothing for ``seconds``: tell the client, fail the response (history
        too), ask upstream to cancel it, and carry on."""
        rid = self.open_response
        log.warning("gateway: relay for %s: upstream sent nothing for %g s %s", self.principal.label, seconds,
                    f"during response {rid}" if rid else "after a response.create / commit")
        self._to_client(error_event(
            "upstream_timeout", f"OpenAI ({upstream_host(self.state)}) sent nothing for {seconds:g} s "
            + (f"while producing response {rid}; it was cancelled." if rid else "after the last request."),
            type="server_error"))
        if rid is not None:
            done = {"type": "response.done", "event_id": new_id("event_"), "response": {
                "id": rid, "object": "realtime.response", "status": "failed", "output": [],
                "status_details": {"type": "failed", "error": {"type": "server_error", "code": "upstream_timeout"}}}}
            self._emit(done)
            if self.upstream is not None:
                self.upstream.send_frame(json.dumps({"type": "response.cancel", "response_id": rid}).encode())
        self.open_response = None
        self.awaiting_upstream = False

    def _end(self, why: str) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(why)

    def client_closed(self, code: int | None, reason: str) -> None:
        """The client's socket closed (``code`` ``None``: without a close frame)."""
        self.client_close = (code if code is not None else 1006, reason)
        self._end("client")

    def upstream_closed(self, code: int | None, reason: str) -> None:
        """The upstream socket closed (``code`` ``None``: the connection was lost)."""
        if code is None:
            self.upstream_abnormal = True
        else:
            self.upstream_close = (code, reason)
        self._end("upstream")

    async def _connect(self, url: str) -> UpstreamConnection:
        t = gateway_state(self.state).timeouts
        try:
            return await open_upstream(url, additional_headers=auth_headers(self.state), user_agent_header=USER_AGENT,
                                       max_size=self.max_bytes, open_timeout=t.connect, close_timeout=2.0,
                                       compression=None, logger=ws_logger())
        except InvalidStatus as exc:
            err = _ws_status_error(self.state, exc)
        except TimeoutError as exc:
            err = from_transport(self.state, exc, "WebSocket")
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            err = from_transport(self.state, exc, "WebSocket")
        log.warning("gateway: relay for %s: upstream refused: %s", self.principal.label, err.message)
        raise err

    def _may_join(self, call_id: str) -> bool:
        from voicecall.gateway.calls import valid_call_id

        if not valid_call_id(call_id):
            return False
        if not self.browser:
            return True
        call = gateway_state(self.state).calls.get(call_id)
        return call is not None and self.principal.secret is not None and call.owner == self.principal.secret.value

    def _make_recorder(self) -> ConversationRecorder | None:
        if self.call_id is not None or self.state.store is None:
            return None  # a call is recorded by its sideband
        from voicecall.store.recorder import ConversationRecorder, new_conversation_id

        rec = ConversationRecorder(self.state.store, conversation_id=new_conversation_id(), provider="openai-realtime",
                                   model=self.oai.model, voice=self.oai.voice, transport="relay",
                                   client=self.principal.label, prices=self.state.config.store.prices,
                                   metrics=self.state.metrics)
        return rec if rec.enabled else None

    # -------------------------------------------------------------------------------------- endings
    def _to_client(self, event: dict[str, Any]) -> None:
        """An event of the relay's own (errors, refusals). A client that lets them pile up past
        ``server.maxOutgoingBytes`` unread is closed as too slow."""
        client = self.client
        if client is not None:
            for out in (event,) if self.beta is None else self.beta.server_event(event):
                client.send_frame(json.dumps(out).encode())
            if client.buffered > self.max_outgoing and not self.slow:
                self._too_slow(f"more than {self.max_outgoing} bytes of events unsent")
                self._end("slow")

    async def _close_client(self, code: int, reason: str) -> None:
        if self.client is not None:
            await self.client.flush()
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=_close_code(code), reason=_reason(reason))

    async def _close_upstream(self, code: int, reason: str) -> None:
        up = self.upstream
        if up is not None:
            with contextlib.suppress(Exception):
                await up.close(code=_close_code(code), reason=_reason(reason))

    async def _fail(self, exc: UpstreamError) -> None:
        if self.client is None:  # refused before relaying (call not found)
            with contextlib.suppress(Exception):
                await self.ws.send_text(json.dumps(exc.event()))
        else:
            self._to_client(exc.event())
        await self._close_client(exc.close_code, exc.code)

    async def _expire(self) -> str:
        self._to_client(error_event(
            "session_expired", f"The session reached its maximum length of {self.max_seconds:g} seconds.",
            type="invalid_request_error"))
        await self._close_client(1000, "session expired")
        await self._close_upstream(1000, "session expired")
        return "maximum session length reached"

    async def end_for_drain(self, reason: str) -> None:
        """The server is shutting down and the drain time is over: say so, then close both sides."""
        self._to_client(closing_event(reason))
        await self._close_client(1012, "server shutting down")
        await self._close_upstream(1001, "server shutting down")

    async def _spend_exceeded(self) -> str:
        why = self.spend_reason or (f"the session's estimated cost (${self.cost_usd:.4f}) passed this server's limit "
                                    f"of ${self.max_spend or 0:g}")
        self._to_client(error_event("spend_limit_reached", why[0].upper() + why[1:] + ".",
                                          type="invalid_request_error"))
        await self._close_client(1008, "spend limit reached")
        await self._close_upstream(1000, "spend limit reached")
        return "spend limit reached"

    async def _upstream_closed(self) -> str:
        if self.upstream_abnormal or self.upstream_close is None:
            self._to_client(error_event(
                "upstream_disconnected", f"The connection to OpenAI ({upstream_host(self.state)}) was lost.",
                type="server_error"))
            await self._close_client(1011, "upstream connection lost")
            return "upstream connection lost"
        code, reason = self.upstream_close
        reason = "" if REDACTOR.has_fragment(reason) else reason  # a reason quoting a credential goes nowhere
        if code not in (1000, 1001, 1005) and not self.last_was_error:
            self._to_client(error_event(
                "upstream_closed", f"OpenAI closed the connection (code {code}{': ' + reason if reason else ''}).",
                type="server_error"))
        await self._close_client(code, reason)
        return f"upstream closed ({code}{': ' + reason if reason else ''})"

    # -------------------------------------------------------------------------------------- client -> upstream
    def _send_initial_update(self) -> None:
        assert self.upstream is not None
        self.init_event_id = new_id("event_")
        event = {"type": "session.update", "event_id": self.init_event_id,
                 "session": policy.initial_update(self.oai, self.secret_session)}
        if not self.upstream.send_frame(json.dumps(event).encode()):
            return  # upstream is already gone: its close is reported by upstream_closed
        self.init_pending = True
        self.init_timer = asyncio.get_running_loop().call_later(INIT_WAIT_SECONDS, self._end_init)

    def client_message(self, data: bytes, text: bool) -> None:
        """One client message (hot path: called from the client socket's ``data_received``)."""
        if len(data) > self.max_bytes:  # size before anything looks inside
            self._to_client(error_event(
                "message_too_large", f"The message is {len(data)} bytes; this server accepts at most "
                f"{self.max_bytes} bytes per message. Send audio in smaller appends."))
            return
        up = self.upstream
        if up is None:  # upstream still opening
            self.pending.append((data, text))
            if len(self.pending) >= PREOPEN_FRAMES and self.client is not None:
                self.client.pause_reading()
            return
        if text:
            hit = peek_append(data)
            if hit is not None:  # the audio fast path: forwarded as it is, its audio bytes counted
                self.audio_in += b64_bytes(data, hit[0], hit[1])
            else:
                problem = json_limits_problem(data)  # before anything parses it (beta translation, policy)
                if problem is not None:
                    self._to_client(error_event("invalid_json", f"The message was not parsed: {problem}; it was "
                                                "not forwarded."))
                    return
                if self.beta is not None:
                    try:
                        data = self.beta.client_bytes(data)
                    except BetaRefusal as exc:
                        self._to_client(exc.event)
                        return
                out = self._inspect_up(data)
                if out is None:
                    return
                data = out
        if up.send_frame(data, text):
            self.up_messages += 1
            self.up_bytes += len(data)
            if not up.writable and self.client is not None:
                self.client.pause_reading()  # upstream's buffer is full: resume when it drains (_FromUpstream)

    def _inspect_up(self, data: bytes) -> bytes | None:
        """The slow path for a client text message that is not a plain append: the bytes to send upstream
        (``None``: dropped). Feeds the recorder; applies the browser policy; notes requests upstream owes an answer
        to. (The JSON limits were checked on the raw bytes before, in :meth:`client_message`.)"""
        self._flush_audio()
        if b'"response.create"' in data or b'"input_audio_buffer.commit"' in data:
            if not self.awaiting_upstream and not self.open_response:
                self.waiting_since = time.monotonic()
            self.awaiting_upstream = True
        rec = self.recorder
        if not self.browser:
            if b'"session.update"' in data:
                return self._session_update_up(data)
            if rec is None or b"input_audio_buffer." not in data:
                return data
            try:
                event = json.loads(data)
            except ValueError:
                return data
            if type(event) is dict:
                rec.on_client_event(event)
            return data
        # A browser: parse everything that is not a plain append, refuse what cannot be read unambiguously.
        try:
            event = json.loads(data, object_pairs_hook=unique_keys)
        except ValueError as exc:
            self._to_client(error_event(
                "invalid_event", f"The message is not valid JSON ({str(exc)[:100]}); it was not forwarded."))
            return None
        if type(event) is not dict:
            return data
        if event.get("type") in ("session.update", "response.create", "conversation.item.create"):
            allowed, dropped, refusal = policy.restrict_client_event(event, self.oai.browser_overrides)
            if refusal is not None or allowed is None:
                self._to_client(error_event("policy_violation", refusal or "Refused by this server's policy.",
                                            client_event_id=event.get("event_id") if isinstance(
                                                event.get("event_id"), str) else None))
                return None
            if dropped:
                log.debug("gateway: relay for %s: %s: ignored locked field(s) %s", self.principal.label,
                          event.get("type"), ", ".join(dropped))
                event = allowed
                data = json.dumps(event).encode()
        if rec is not None:
            rec.on_client_event(event)
        return data

    def _session_update_up(self, data: bytes) -> bytes:
        """A trusted client's ``session.update`` without ``model``: the gateway keeps its configured model (the
        stock SDKs always send theirs), and upstream's ``session.updated`` says which one that is."""
        try:
            event = json.loads(data)
        except ValueError:
            return data
        session = event.get("session") if type(event) is dict and event.get("type") == "session.update" else None
        if type(session) is dict and "model" in session:
            if session["model"] != self.oai.model:
                log.debug("gateway: relay for %s: session.update asked for model %r; keeping %r",
                          self.principal.label, str(session["model"])[:60], self.oai.model)
            event["session"] = {k: v for k, v in session.items() if k != "model"}
            data = json.dumps(event).encode()
        if self.recorder is not None and type(event) is dict:
            self.recorder.on_client_event(event)
        return data

    # -------------------------------------------------------------------------------------- upstream -> client
    def upstream_message(self, data: bytes, text: bool) -> None:
        """One upstream message (called from the upstream socket's ``data_received``; the usual one comes through
        :meth:`upstream_text` directly)."""
        if text:
            self.upstream_text(data, None)
            return
        client = self.client
        assert client is not None
        if client.send_frame(data, False):
            self.down_messages += 1
            self.down_bytes += len(data)
        self._check_down(client)

    def upstream_text(self, data: bytes, frame: bytes | None) -> None:
        """One upstream text message (hot path: the upstream socket's ``on_text_frame``). ``frame``: ``data`` as
        the unmasked text frame upstream sent, forwarded to the client as it is when ``data`` goes unchanged (no
        second framing, no copy)."""
        client = self.client
        assert client is not None
        if self.init_pending and not self._init_step(data):
            return
        hit = peek_audio_delta(data)
        if hit is not None:  # the audio fast path: forwarded as it is, its audio bytes counted
            self.last_was_error = False
            if self.recorder is not None:
                start = hit[0]
                nbytes = b64_bytes(data, start, hit[1])
                if self.delta_ids.same(data, start):  # the same item as the previous delta
                    self.audio_out += nbytes
                else:
                    self._first_delta(data, start, nbytes)
        else:
            out = self._inspect_down(data)
            if out is not data:
                data, frame = out, None
        if self.beta is not None:
            self._beta_down(data, hit is not None)
            return
        if client.send_frame(data) if frame is None else client.send_framed(frame, data):
            self.down_messages += 1
            self.down_bytes += len(data)
            if not client.writable and self.upstream is not None:
                self.upstream.pause_reading()  # the client's buffer is full: resume when it drains (_FromClient)
        if self.stop is not None:
            self._end(self.stop)

    def _beta_down(self, data: bytes, audio_delta: bool) -> None:
        """``upstream_message``'s sending half for a beta client: the GA message in its beta form (0-2 frames)."""
        client = self.client
        assert client is not None
        for frame in self.beta.server_frames(data, audio_delta) if self.beta is not None else ():
            if client.send_frame(frame, True):
                self.down_messages += 1
                self.down_bytes += len(frame)
        self._check_down(client)

    def _check_down(self, client: FrameSocket) -> None:
        """After writing to the client off the hot path: back-pressure, then a pending stop."""
        if not client.writable and self.upstream is not None:
            self.upstream.pause_reading()
        if self.stop is not None:
            self._end(self.stop)

    def _first_delta(self, data: bytes, start: int, nbytes: int) -> None:
        """A delta whose ids differ from the previous delta's: the recorder hears of it at once (an item's first
        audio is timed)."""
        assert self.recorder is not None
        self._flush_audio()
        response_id, item_id = self.delta_ids.of(data, start)
        self.recorder.on_output_audio(response_id, item_id, nbytes)

    def _flush_audio(self) -> None:
        """Give the recorder the audio bytes the hot path counted (:attr:`audio_in`, :attr:`audio_out`): before it
        sees any other event, and at the end. Per append or delta that is one addition, not a call."""
        rec = self.recorder
        if rec is None:
            return
        if self.audio_in:
            rec.on_audio_appended(self.audio_in)
            self.audio_in = 0
        if self.audio_out:
            response_id, item_id = self.delta_ids.ids
            rec.on_output_audio(response_id, item_id, self.audio_out)
            self.audio_out = 0

    def _inspect_down(self, data: bytes) -> bytes:
        """The slow path for an upstream message that is not an audio delta: the bytes to forward. Feeds the
        recorder and the spend meter; tracks the open response (stall watchdog); an ``error`` that quotes any part
        of a credential is forwarded without its message and code."""
        self.awaiting_upstream = False
        head = data[:48]
        if b'"response.created"' in head:
            self.open_response = _response_id(data) or "?"
            self.waiting_since = time.monotonic()
        elif b'"response.done"' in head:
            self.open_response = None
        if data.startswith(ERROR_PREFIXES):
            data = _scrubbed_error(data)
        if self.recorder is None and self.max_spend is None and self.daily_limit is None:
            self.last_was_error = data.startswith(ERROR_PREFIXES)
            return data
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            return data
        if type(event) is dict:
            self._observe(event)
        return data

    def _observe(self, event: dict[str, Any]) -> None:
        self._flush_audio()
        etype = event.get("type")
        self.last_was_error = etype == "error"
        if etype in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict) and isinstance(session.get("model"), str) and session["model"]:
                self.model = session["model"]
        elif etype == "response.done" and (self.max_spend is not None or self.daily_limit is not None):
            resp = event.get("response")
            usage = resp.get("usage") if isinstance(resp, dict) else None
            if isinstance(usage, dict):
                if self._prices is None:
                    self._prices = price_table(self.state)
                cost = self._prices.cost_usd(self.model, usage)
                self.cost_usd += cost
                if self.max_spend is not None and self.cost_usd >= self.max_spend:
                    self.stop = "spend"
                if self.lease is not None and self.daily_limit is not None:
                    task = asyncio.get_running_loop().create_task(self._add_spend(cost))
                    self._spend_tasks.add(task)
                    task.add_done_callback(self._spend_tasks.discard)
        if self.recorder is not None:
            self.recorder.on_server_event(event)

    async def _add_spend(self, cost: float) -> None:
        """Per-client daily spend across replicas (``state.maxSpendPerClientPerDayUsd``); over it, the session ends
        at the next upstream event."""
        if self.lease is None:
            return
        conversation = self.recorder.conversation_id if self.recorder is not None else f"relay-{id(self)}"
        reason = await self.lease.add_spend(conversation, cost)
        if reason is not None:
            self.spend_reason = reason
            self.stop = "spend"

    def _init_step(self, data: bytes) -> bool:
        """While the relay's first ``session.update`` is unanswered: hold ``session.created``, fold the answer
        into it. Returns ``True`` when ``data`` should go on to the normal path."""
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):
            self._end_init()
            return True
        etype = event.get("type") if isinstance(event, dict) else None
        if etype == "session.created" and self.held_created is None:
            self.held_created = event
            return False
        if etype == "session.updated":
            self._stop_init()
            held, self.held_created = self.held_created, None
            if held is not None:
                held["session"] = event.get("session", held.get("session"))
                self._emit(held)
            else:
                self._emit(event)
            return False
        err = event.get("error") if etype == "error" else None
        if isinstance(err, dict) and err.get("event_id") == self.init_event_id:
            log.warning("gateway: upstream refused the server's session configuration: %s",
                        redact(str(err.get("message"))[:300], self.state))
        self._end_init()
        return True

    def _stop_init(self) -> None:
        self.init_pending = False
        if self.init_timer is not None:
            self.init_timer.cancel()
            self.init_timer = None

    def _end_init(self) -> None:
        self._stop_init()
        held, self.held_created = self.held_created, None
        if held is not None:
            self._emit(held)

    def _emit(self, event: dict[str, Any]) -> None:
        self._observe(event)
        self._to_client(event)
        if self.stop is not None:
            self._end(self.stop)


def _response_id(data: bytes) -> str | None:
    """The ``response.id`` of a ``response.created`` (a small event: parsed)."""
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return None
    resp = event.get("response") if type(event) is dict else None
    rid = resp.get("id") if type(resp) is dict else None
    return rid if isinstance(rid, str) else None


def _scrubbed_error(data: bytes) -> bytes:
    """An upstream ``error`` event as the client may see it: unchanged, unless it quotes any part of a credential
    (message, code, anywhere): then it is rebuilt from its redacted message (withheld if a piece survives), a code
    that quotes nothing (else ``upstream_error``), its type and event id."""
    text = data.decode("utf-8", "replace")
    if not REDACTOR.has_fragment(text):
        return data
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        event = {}
    err = event.get("error") if type(event) is dict else None
    err = err if type(err) is dict else {}
    log.warning("gateway: an upstream error quoted part of a credential; its message was withheld")
    etype = err.get("type")
    message = err.get("message")
    clean = error_event(safe_code(err.get("code")) or "upstream_error",
                        withheld(message if isinstance(message, str) else "", "error message")
                        or "OpenAI reported an error (its text quoted part of a credential).",
                        type=etype if isinstance(etype, str) and etype in ("invalid_request_error", "server_error")
                        else "server_error",
                        client_event_id=withheld(err["event_id"]) if isinstance(err.get("event_id"), str) else None)
    return json.dumps(clean).encode()
