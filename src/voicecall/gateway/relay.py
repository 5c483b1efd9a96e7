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
5. relays: the original text of every frame is forwarded (no re-serialisation), with back-pressure (each direction
   awaits the send before reading the next frame). Audio frames (``input_audio_buffer.append``,
   ``response.output_audio.delta``) are recognised from their first bytes and never parsed whole; other frames are
   parsed only when the history recorder, the spend limit or the browser policy needs them;
6. ends on either side's close, propagating code and reason (upstream 4000 -> client 4000), after
   ``server.maxSessionSeconds`` (``error`` ``session_expired``, close 1000), or when ``openaiRealtime.maxSpendUsd``
   is passed (``error`` ``spend_limit_reached``, close 1008).

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
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

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
from voicecall.protocol.errors import error_event
from voicecall.protocol.ids import new_id

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal
    from voicecall.store.recorder import ConversationRecorder

log = logging.getLogger("voicecall.gateway")

APPEND = "input_audio_buffer.append"
AUDIO_DELTA = "response.output_audio.delta"
PREOPEN_FRAMES = 256
"""Client frames kept while the upstream socket opens (25 s of 100 ms appends); past that the relay stops reading
the client until upstream is open."""
INIT_WAIT_SECONDS = 5.0
"""How long ``session.created`` is held back waiting for the answer to the relay's first ``session.update``."""
SMALL = 512
"""Frames shorter than this are never audio; longer ones are checked for the audio fast paths first."""
_APPEND_PREFIXES = ('{"type":"input_audio_buffer.append","audio":"', '{"type": "input_audio_buffer.append", "audio": "')
_DELTA_PREFIXES = ('{"type":"response.output_audio.delta"', '{"type": "response.output_audio.delta"')
_DELTA_MARKERS = ('"delta":"', '"delta": "')
_ERROR_PREFIXES = ('{"type":"error"', '{"type": "error"')
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


# ------------------------------------------------------------------------------------------ frame peeking
def split_append(text: str) -> tuple[dict[str, Any], int, int] | None:
    """Recognise a plain ``input_audio_buffer.append`` without parsing its audio.

    Returns ``(event without audio, start, end)`` where ``text[start:end]`` is the base64 audio, or ``None`` when
    ``text`` is not in the usual shape (``{"type": "input_audio_buffer.append", "audio": "…"`` first, optionally an
    ``event_id`` after). Safe against smuggling: the audio string is checked to hold no escape, and everything
    around it is parsed as JSON, so what upstream will see is exactly an append.
    """
    for prefix in _APPEND_PREFIXES:
        if text.startswith(prefix):
            start = len(prefix)
            end = text.find('"', start)
            if end < 0 or text.find("\\", start, end) >= 0:
                return None
            try:
                event = json.loads(prefix + text[end:], object_pairs_hook=_unique_keys)
            except ValueError:
                return None
            if type(event) is dict and event.get("type") == APPEND:
                return event, start, end
            return None
    return None


def split_audio_delta(text: str) -> tuple[dict[str, Any], int, int] | None:
    """Recognise a ``response.output_audio.delta`` without parsing its audio: ``(event without delta, start,
    end)`` with ``text[start:end]`` the base64 audio, or ``None``."""
    if not text.startswith(_DELTA_PREFIXES):
        return None
    for marker in _DELTA_MARKERS:
        i = text.find(marker)
        if i >= 0:
            start = i + len(marker)
            break
    else:
        return None
    end = text.find('"', start)
    if end < 0 or text.find("\\", start, end) >= 0:
        return None
    try:
        event = json.loads(text[:start] + text[end:])
    except ValueError:
        return None
    return (event, start, end) if type(event) is dict else None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing duplicate keys (a parser that keeps the first and one that keeps the last
    would see different events)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out


async def _abandon(connecting: asyncio.Future[ClientConnection]) -> None:
    """Stop an upstream connection attempt; close the connection if it got through anyway."""
    connecting.cancel()
    with contextlib.suppress(BaseException):
        conn = await connecting
        await conn.close()


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until they are gone."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


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
                code = err.get("code") if isinstance(err.get("code"), str) else None
        except ValueError:
            message = resp.body[:300].decode(errors="replace")
    message = redact(" ".join(message.split())[:500], state)
    return from_status(state, status, "WebSocket", message=message, code=code,
                       retry_after=resp.headers.get("Retry-After"))


# ------------------------------------------------------------------------------------------ the relay
async def relay_websocket(ws: WebSocket, state: AppState, principal: Principal, subprotocol: str | None) -> None:
    """Serve one client WebSocket (not yet accepted; already authenticated) by relaying it to OpenAI."""
    await ws.accept(subprotocol="realtime" if subprotocol == "realtime" else None)
    if not state.sessions.try_acquire():
        await ws.send_text(json.dumps(error_event(
            "session_limit_reached", f"This server already runs its maximum of {state.sessions.max_sessions} "
            "sessions; try again later.", type="server_error")))
        await ws.close(code=1013, reason="session limit reached")
        log.warning("gateway: relay refused for %s: session limit (%d) reached", principal.label,
                    state.sessions.max_sessions)
        return
    try:
        await Relay(ws, state, principal).run()
    finally:
        state.sessions.release()


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
        self.upstream: ClientConnection | None = None
        self.send_lock = asyncio.Lock()
        self.init_event_id: str | None = None
        self.init_pending = False
        self.init_deadline = 0.0
        self.held_created: dict[str, Any] | None = None
        self.last_was_error = False
        self.client_close: tuple[int, str] | None = None
        self.client_gone = False
        self.upstream_close: tuple[int, str] | None = None
        self.upstream_abnormal = False
        self.stop: str | None = None
        self.refusal: dict[str, Any] | None = None
        self.started = time.monotonic()

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
        why = "?"
        try:
            why = await self._relay(url)
        finally:
            if self.recorder is not None:
                await self.recorder.close()
            await self._close_upstream(1000, "")
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(1000)
            log.info("gateway: relay for %s ended after %.1f s: %s%s", label, time.monotonic() - self.started, why,
                     f" (estimated ${self.cost_usd:.4f})" if self.cost_usd else "")

    async def _relay(self, url: str) -> str:
        connecting = asyncio.ensure_future(self._connect(url))
        pending: deque[dict[str, Any]] = deque()
        recv: asyncio.Future[Any] | None = None
        try:
            while not connecting.done():
                if recv is None and len(pending) < PREOPEN_FRAMES:
                    recv = asyncio.ensure_future(self.ws.receive())
                waiting = {connecting} if recv is None else {connecting, recv}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if recv is not None and recv.done():
                    msg = recv.result()
                    recv = None
                    if msg["type"] == "websocket.disconnect":
                        await _abandon(connecting)
                        self.client_close = (msg.get("code") or 1000, msg.get("reason") or "")
                        return "client left before upstream was open"
                    pending.append(msg)
            try:
                self.upstream = connecting.result()
            except UpstreamError as exc:
                await self._fail(exc)
                return f"upstream refused: {exc.code}"
        except BaseException:
            await _abandon(connecting)
            if recv is not None:
                recv.cancel()
            raise

        up_task: asyncio.Task[None] | None = None
        down_task: asyncio.Task[None] | None = None
        try:
            if self.call_id is None:
                await self._send_initial_update()
            for msg in pending:
                if not await self._forward_up(msg):
                    break
            pending.clear()
            up_task = asyncio.create_task(self._pump_up(recv))
            recv = None
            down_task = asyncio.create_task(self._pump_down())
            remaining = max(0.0, self.max_seconds - (time.monotonic() - self.started))
            done, _ = await asyncio.wait({up_task, down_task}, timeout=remaining,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                await _cancel(up_task, down_task)
                return await self._expire()
            if down_task in done:
                if self.stop == "spend":
                    await _cancel(up_task)
                    return await self._spend_exceeded()
                if self.client_gone:
                    # Forward what the client sent before it left (the up pump ends at its disconnect).
                    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(up_task), 2.0)
                    up_task.cancel()
                    await self._close_upstream(1001, "client went away")
                    return "client went away"
                await _cancel(up_task)
                return await self._upstream_closed()
            # the client left (or sending upstream failed: then the down pump reports the close shortly)
            if self.client_close is None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(down_task), 2.0)
                if down_task.done() and not self.client_gone:
                    return await self._upstream_closed()
            down_task.cancel()
            code, reason = self.client_close or (1000, "")
            await self._close_upstream(_close_code(code), reason)
            return f"client closed ({code}{': ' + reason if reason else ''})"
        except (OSError, RuntimeError) as exc:  # the client socket broke under us
            return f"client connection failed: {type(exc).__name__}"
        finally:
            if recv is not None:
                recv.cancel()
            await _cancel(*(t for t in (up_task, down_task) if t is not None))

    async def _connect(self, url: str) -> ClientConnection:
        t = gateway_state(self.state).timeouts
        try:
            return await connect(url, additional_headers=auth_headers(self.state), user_agent_header=USER_AGENT,
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
                                   client=self.principal.label, prices=self.state.config.store.prices)
        return rec if rec.enabled else None

    # -------------------------------------------------------------------------------------- endings
    async def _to_client(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            async with self.send_lock:
                await self.ws.send_text(json.dumps(event))

    async def _close_client(self, code: int, reason: str) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code=_close_code(code), reason=_reason(reason))

    async def _close_upstream(self, code: int, reason: str) -> None:
        up = self.upstream
        if up is not None:
            with contextlib.suppress(Exception):
                await up.close(code=_close_code(code), reason=_reason(reason))

    async def _fail(self, exc: UpstreamError) -> None:
        await self._to_client(exc.event())
        await self._close_client(exc.close_code, exc.code)

    async def _expire(self) -> str:
        await self._to_client(error_event(
            "session_expired", f"The session reached its maximum length of {self.max_seconds:g} seconds.",
            type="invalid_request_error"))
        await self._close_client(1000, "session expired")
        await self._close_upstream(1000, "session expired")
        return "maximum session length reached"

    async def _spend_exceeded(self) -> str:
        await self._to_client(error_event(
            "spend_limit_reached", f"The session's estimated cost (${self.cost_usd:.4f}) passed this server's limit "
            f"of ${self.max_spend:g}.", type="invalid_request_error"))
        await self._close_client(1008, "spend limit reached")
        await self._close_upstream(1000, "spend limit reached")
        return "spend limit reached"

    async def _upstream_closed(self) -> str:
        if self.upstream_abnormal or self.upstream_close is None:
            await self._to_client(error_event(
                "upstream_disconnected", f"The connection to OpenAI ({upstream_host(self.state)}) was lost.",
                type="server_error"))
            await self._close_client(1011, "upstream connection lost")
            return "upstream connection lost"
        code, reason = self.upstream_close
        if code not in (1000, 1001, 1005) and not self.last_was_error:
            await self._to_client(error_event(
                "upstream_closed", f"OpenAI closed the connection (code {code}{': ' + reason if reason else ''}).",
                type="server_error"))
        await self._close_client(code, reason)
        return f"upstream closed ({code}{': ' + reason if reason else ''})"

    # -------------------------------------------------------------------------------------- client -> upstream
    async def _send_initial_update(self) -> None:
        assert self.upstream is not None
        self.init_event_id = new_id("event_")
        event = {"type": "session.update", "event_id": self.init_event_id,
                 "session": policy.initial_update(self.oai, self.secret_session)}
        try:
            await self.upstream.send(json.dumps(event))
        except ConnectionClosed:
            return  # upstream is already gone: the down pump delivers what it said and its close
        self.init_pending = True
        self.init_deadline = time.monotonic() + INIT_WAIT_SECONDS

    async def _pump_up(self, first: asyncio.Future[Any] | None) -> None:
        receive = self.ws.receive
        while True:
            if first is not None:
                msg = await first
                first = None
            else:
                msg = await receive()
            if msg["type"] == "websocket.disconnect":
                self.client_close = (msg.get("code") or 1000, msg.get("reason") or "")
                return
            if not await self._forward_up(msg):
                return

    async def _forward_up(self, msg: dict[str, Any]) -> bool:
        """Forward one client message; ``False`` once upstream is closed."""
        up = self.upstream
        assert up is not None
        text: str | None = msg.get("text")
        data: str | bytes
        if text is not None:
            data = text
        else:
            raw: bytes | None = msg.get("bytes")
            if raw is None:
                return True
            data = raw
        if len(data) > self.max_bytes:
            await self._to_client(error_event(
                "message_too_large", f"The message is {len(data)} bytes; this server accepts at most "
                f"{self.max_bytes} bytes per message. Send audio in smaller appends."))
            return True
        if text is not None:
            inspected = self._inspect_up(text)
            if inspected is None:
                if self.refusal is not None:
                    refusal, self.refusal = self.refusal, None
                    await self._to_client(refusal)
                return True
            data = inspected
        try:
            await up.send(data)
        except ConnectionClosed:
            return False
        return True

    def _inspect_up(self, text: str) -> str | None:
        """The text to send upstream (``None``: dropped). Feeds the recorder; applies the browser policy."""
        rec = self.recorder
        if len(text) > SMALL:
            hit = split_append(text)
            if hit is not None:
                if rec is not None:
                    event, start, end = hit
                    event["audio"] = text[start:end]
                    rec.on_client_event(event)
                return text
        if not self.browser:
            if '"session.update"' in text:
                return self._session_update_up(text)
            if rec is None or "input_audio_buffer." not in text:
                return text
            try:
                event = json.loads(text)
            except ValueError:
                return text
            if type(event) is dict:
                rec.on_client_event(event)
            return text
        # A browser: parse everything that is not a plain append, refuse what cannot be read unambiguously.
        try:
            event = json.loads(text, object_pairs_hook=_unique_keys)
        except ValueError as exc:
            self.refusal = error_event(
                "invalid_event", f"The message is not valid JSON ({str(exc)[:100]}); it was not forwarded.")
            return None
        if type(event) is not dict:
            return text
        if event.get("type") in ("session.update", "response.create", "conversation.item.create"):
            allowed, dropped, refusal = policy.restrict_client_event(event, self.oai.browser_overrides)
            if refusal is not None or allowed is None:
                self.refusal = error_event("policy_violation", refusal or "Refused by this server's policy.",
                                           client_event_id=event.get("event_id") if isinstance(
                                               event.get("event_id"), str) else None)
                return None
            if dropped:
                log.debug("gateway: relay for %s: %s: ignored locked field(s) %s", self.principal.label,
                          event.get("type"), ", ".join(dropped))
                event = allowed
                text = json.dumps(event)
        if rec is not None:
            rec.on_client_event(event)
        return text

    def _session_update_up(self, text: str) -> str:
        """A trusted client's ``session.update`` without ``model``: the gateway keeps its configured model (the
        stock SDKs always send theirs), and upstream's ``session.updated`` says which one that is."""
        try:
            event = json.loads(text)
        except ValueError:
            return text
        session = event.get("session") if type(event) is dict and event.get("type") == "session.update" else None
        if type(session) is dict and "model" in session:
            if session["model"] != self.oai.model:
                log.debug("gateway: relay for %s: session.update asked for model %r; keeping %r",
                          self.principal.label, str(session["model"])[:60], self.oai.model)
            event["session"] = {k: v for k, v in session.items() if k != "model"}
            text = json.dumps(event)
        if self.recorder is not None and type(event) is dict:
            self.recorder.on_client_event(event)
        return text

    # -------------------------------------------------------------------------------------- upstream -> client
    async def _pump_down(self) -> None:
        up = self.upstream
        assert up is not None
        send = self.ws.send
        lock = self.send_lock
        try:
            while True:
                if self.init_pending:
                    try:
                        msg = await asyncio.wait_for(up.recv(), max(0.01, self.init_deadline - time.monotonic()))
                    except TimeoutError:
                        await self._end_init()
                        continue
                else:
                    msg = await up.recv()
                if isinstance(msg, str):
                    if self.init_pending and not await self._init_step(msg):
                        continue
                    out = self._inspect_down(msg)
                    if out is None:
                        continue
                    frame: dict[str, Any] = {"type": "websocket.send", "text": out}
                else:
                    frame = {"type": "websocket.send", "bytes": msg}
                try:
                    async with lock:
                        await send(frame)
                except (OSError, RuntimeError):
                    self.client_gone = True
                    return
                if self.stop is not None:
                    return
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                self.upstream_abnormal = True
                self.upstream_close = None
            else:
                self.upstream_close = (exc.rcvd.code, exc.rcvd.reason)

    def _inspect_down(self, text: str) -> str | None:
        """Feed the recorder and the spend meter; returns the text to forward."""
        rec = self.recorder
        if len(text) > SMALL:
            hit = split_audio_delta(text)
            if hit is not None:
                self.last_was_error = False
                if rec is not None:
                    event, start, end = hit
                    event["delta"] = text[start:end]
                    rec.on_server_event(event)
                return text
        if rec is None and self.max_spend is None:
            self.last_was_error = text.startswith(_ERROR_PREFIXES)
            return text
        try:
            event = json.loads(text)
        except ValueError:
            return text
        if type(event) is not dict:
            return text
        self._observe(event)
        return text

    def _observe(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        self.last_was_error = etype == "error"
        if etype in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict) and isinstance(session.get("model"), str) and session["model"]:
                self.model = session["model"]
        elif etype == "response.done" and self.max_spend is not None:
            resp = event.get("response")
            usage = resp.get("usage") if isinstance(resp, dict) else None
            if isinstance(usage, dict):
                if self._prices is None:
                    self._prices = price_table(self.state)
                self.cost_usd += self._prices.cost_usd(self.model, usage)
                if self.cost_usd >= self.max_spend:
                    self.stop = "spend"
        if self.recorder is not None:
            self.recorder.on_server_event(event)

    async def _init_step(self, text: str) -> bool:
        """While the relay's first ``session.update`` is unanswered: hold ``session.created``, fold the answer
        into it. Returns ``True`` when ``text`` should go on to the normal path."""
        try:
            event = json.loads(text)
        except ValueError:
            await self._end_init()
            return True
        etype = event.get("type") if isinstance(event, dict) else None
        if etype == "session.created" and self.held_created is None:
            self.held_created = event
            return False
        if etype == "session.updated":
            self.init_pending = False
            held, self.held_created = self.held_created, None
            if held is not None:
                held["session"] = event.get("session", held.get("session"))
                await self._emit(held)
            else:
                await self._emit(event)
            return False
        err = event.get("error") if etype == "error" else None
        if isinstance(err, dict) and err.get("event_id") == self.init_event_id:
            log.warning("gateway: upstream refused the server's session configuration: %s",
                        redact(str(err.get("message"))[:300], self.state))
            await self._end_init()
            return True
        await self._end_init()
        return True

    async def _end_init(self) -> None:
        self.init_pending = False
        held, self.held_created = self.held_created, None
        if held is not None:
            await self._emit(held)

    async def _emit(self, event: dict[str, Any]) -> None:
        self._observe(event)
        with contextlib.suppress(OSError, RuntimeError):
            async with self.send_lock:
                await self.ws.send_text(json.dumps(event))
