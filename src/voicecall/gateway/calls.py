"""WebRTC through the gateway: the SDP proxy (``POST /v1/realtime/calls``), the sideband, and hangup.

A browser (or any WebRTC client) sends its SDP offer to *this* server, with the ``ek_`` client secret it got from
``POST /session`` (``Content-Type: application/sdp``), or a trusted client sends ``multipart/form-data`` with parts
``sdp`` and ``session`` and a server API key. The gateway posts upstream, with the server key::

    POST {baseUrl}/realtime/calls                       multipart/form-data
      part "sdp"      application/sdp     the offer
      part "session"  application/json    the secret's session (or the server's), model forced

and answers ``201`` with OpenAI's SDP answer and ``Location: /v1/realtime/calls/rtc_…``. Media then flows between
the browser and OpenAI directly; this server is only in the signalling path.

Then the gateway joins the call on a **sideband** WebSocket (``{ws base}/realtime?call_id=rtc_…``, server key) to
record the conversation (transport ``sideband``), add up usage and estimated cost from ``response.done``, and hang
the call up (``POST {baseUrl}/realtime/calls/{call_id}/hangup``) when it passes ``server.maxSessionSeconds`` or
``openaiRealtime.maxSpendUsd``. A call holds one of ``server.maxSessions`` while it lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voicecall.cluster.forward import drop_call_owner, forward_http, owner_elsewhere, share_call_owner
from voicecall.gateway import policy
from voicecall.gateway.upstream import (
    USER_AGENT,
    UpstreamError,
    auth_headers,
    gateway_state,
    price_table,
    redact,
    ws_logger,
    ws_url,
)
from voicecall.gateway.upstream import request as upstream_request
from voicecall.server.limits import Lease, Refused

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.store.recorder import ConversationRecorder

log = logging.getLogger("voicecall.gateway")

_CALL_ID = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
MAX_OFFER_BYTES = 256 * 1024
"""Largest accepted request to ``POST /v1/realtime/calls`` (an SDP offer is a few kB)."""
SIDEBAND_ATTEMPTS = 3
"""Attempts to (re)join a call on the sideband before giving up (the time limit still applies)."""


def valid_call_id(call_id: str) -> bool:
    """A call id safe to put in a URL path (OpenAI's look like ``rtc_`` + 32 hex digits)."""
    return bool(_CALL_ID.match(call_id))


def call_id_from_location(location: str | None) -> str | None:
    """The call id in an upstream ``Location`` header: the last path segment starting with ``rtc_``, else the last
    segment."""
    if not location:
        return None
    path = location.split("?", 1)[0].rstrip("/")
    segments = [s for s in path.split("/") if s]
    for seg in reversed(segments):
        if seg.startswith("rtc_") and valid_call_id(seg):
            return seg
    if segments and valid_call_id(segments[-1]) and segments[-1] not in ("calls", "realtime", "v1"):
        return segments[-1]
    return None


def _error(status: int, code: str, message: str, type: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "code": code, "param": None}},
                        status_code=status)


async def _part_text(value: Any) -> str | None:
    """A multipart field as text (plain field or uploaded file)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    read = getattr(value, "read", None)
    if read is None:
        return None
    data = await read()
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)


# ------------------------------------------------------------------------------------------ POST /calls
async def create_call(request: Request, state: AppState) -> Response:
    """``POST /v1/realtime/calls`` for provider ``openai-realtime``: forward the offer upstream, answer with the
    SDP answer, start the sideband."""
    principal = state.auth.authenticate(request)
    secret = principal.secret
    if secret is not None and secret.provider != "openai-realtime":
        return _error(401, "invalid_api_key", "This client secret was not issued by this gateway; ask POST /session "
                      "for a new one.")
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    client_session: dict[str, Any] | None = None
    if int(request.headers.get("content-length") or 0) > MAX_OFFER_BYTES:
        return _error(413, "request_too_large", f"The offer is larger than {MAX_OFFER_BYTES} bytes.")
    if ctype == "application/sdp":
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            return _error(413, "request_too_large", f"The offer is larger than {MAX_OFFER_BYTES} bytes.")
        sdp = body.decode("utf-8", errors="replace")
    elif ctype == "multipart/form-data":
        try:
            form = await request.form(max_part_size=MAX_OFFER_BYTES)
        except Exception:  # noqa: BLE001 - malformed multipart bodies raise various errors
            return _error(400, "invalid_request", "The multipart body could not be read.")
        sdp = await _part_text(form.get("sdp")) or ""
        raw = await _part_text(form.get("session"))
        if raw:
            try:
                client_session = json.loads(raw)
            except ValueError:
                return _error(400, "invalid_json", "The 'session' part is not valid JSON.")
            if not isinstance(client_session, dict):
                return _error(400, "invalid_type", "The 'session' part must be a JSON object.")
    else:
        return _error(415, "unsupported_media_type", "Send the SDP offer as 'application/sdp', or as "
                      "'multipart/form-data' with the parts 'sdp' and 'session'.")
    if not sdp.strip():
        return _error(400, "missing_sdp", "The request has no SDP offer.")
    cfg = state.config.voice_call.openai_realtime
    session = policy.call_session(cfg, secret.session if secret is not None else None, client_session,
                                  trusted=secret is None)
    try:
        lease = await state.sessions.admit(principal.client, "webrtc")
    except Refused as exc:
        log.warning("gateway: call refused for %s: %s", principal.label, exc.code)
        return _error(exc.status, exc.code, exc.message, type="server_error")
    started = time.monotonic()
    try:
        resp = await upstream_request(
            state, "POST", "/realtime/calls", "call", headers={"Accept": "application/sdp"},
            files={"sdp": (None, sdp.encode("utf-8"), "application/sdp"),
                   "session": (None, json.dumps(session).encode("utf-8"), "application/json")})
    except UpstreamError as exc:
        lease.release()
        return exc.response()
    except BaseException:
        lease.release()
        raise
    call_id = call_id_from_location(resp.headers.get("location"))
    answer = resp.text
    if call_id is None or not answer.strip():
        lease.release()
        log.error("gateway: upstream answered the call without %s", "a call id" if call_id is None else "an SDP")
        return _error(502, "upstream_bad_response", "OpenAI's answer to the call has no call id or no SDP answer.",
                      type="server_error")
    voice = _voice(session) or cfg.voice
    call = CallSession(state, call_id, owner=secret.value if secret is not None else None, label=principal.label,
                       model=cfg.model, voice=voice, started=started, lease=lease)
    call.start()
    await share_call_owner(state, call_id)
    log.info("gateway: call %s for %s answered in %.0f ms", call_id, principal.label,
             (time.monotonic() - started) * 1000)
    return Response(content=answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call_id}"})


def _voice(session: dict[str, Any]) -> str | None:
    audio = session.get("audio")
    out = audio.get("output") if isinstance(audio, dict) else None
    voice = out.get("voice") if isinstance(out, dict) else None
    return voice if isinstance(voice, str) else None


# ------------------------------------------------------------------------------------------ hangup
async def hangup_call(request: Request, state: AppState, call_id: str) -> Response:
    """``POST /v1/realtime/calls/{call_id}/hangup``: forwarded upstream. A browser (client secret) may hang up only
    the calls it made; a trusted client any call."""
    principal = state.auth.authenticate(request)
    if not valid_call_id(call_id):
        return _error(404, "call_not_found", "No such call.")
    try:
        owner = await owner_elsewhere(state, request, "POST", call_id)
    except PermissionError as exc:
        return _error(403, "forbidden", str(exc))
    if owner is not None:  # another replica runs this call (and its sideband): let it hang up
        return await forward_http(state, request, "POST", owner, await request.body())
    call = gateway_state(state).calls.get(call_id)
    if principal.secret is not None and (call is None or call.owner != principal.secret.value):
        return _error(404, "call_not_found", "No such call.")
    try:
        if call is not None:
            await call.hangup(f"hung up by {principal.label}")
        else:
            await upstream_request(state, "POST", f"/realtime/calls/{call_id}/hangup", "hangup",
                                   headers={"Accept": "*/*"})
    except UpstreamError as exc:
        return exc.response()
    return Response(status_code=200)


# ------------------------------------------------------------------------------------------ sideband
class CallSession:
    """One live WebRTC call: its session slot, its sideband socket, its recorder, its limits."""

    def __init__(self, state: AppState, call_id: str, *, owner: str | None, label: str, model: str, voice: str,
                 lease: Lease, started: float | None = None) -> None:
        self.state = state
        self.lease = lease
        lease.closer = lambda reason: self.hangup(reason)
        self.call_id = call_id
        self.owner = owner
        """The ``ek_`` value that created the call (``None``: a trusted client)."""
        self.label = label
        self.model = model
        self.voice = voice
        self.started = started if started is not None else time.monotonic()
        self.max_seconds = state.config.server.max_session_seconds
        self.max_spend = state.config.voice_call.openai_realtime.max_spend_usd
        self.cost_usd = 0.0
        self.responses = 0
        self.usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self.joined = False
        self.ended_reason: str | None = None
        self.recorder: ConversationRecorder | None = None
        self.task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._done = asyncio.Event()
        self._hangup_started = False
        self._hangup_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._prices: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        """Register the call and start the sideband (the session slot is already held)."""
        gateway_state(self.state).calls[self.call_id] = self
        self.task = asyncio.create_task(self._run(), name=f"sideband-{self.call_id}")

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the call is over (for tests and shutdown); ``True`` if it is."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout)
        return self._done.is_set()

    # -------------------------------------------------------------------------------------- the sideband
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = max(0.0, self.max_seconds - (time.monotonic() - self.started))
        self._timer = loop.call_later(remaining, self._spawn_hangup, "maximum session length reached")
        self.recorder = self._make_recorder()
        try:
            await self._sideband()
            if not self.joined and not self._done.is_set():
                # Could not watch the call: it may still be running upstream. Keep its slot until the time limit
                # hangs it up (or a client does).
                log.error("gateway: call %s: could not join the sideband; recording and the spend limit are off "
                          "for this call, the time limit (%g s) still applies", self.call_id, self.max_seconds)
                await self._done.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a sideband failure must never take the server down
            log.error("gateway: call %s: sideband failed: %s: %s", self.call_id, type(exc).__name__,
                      redact(str(exc), self.state)[:300])
        finally:
            await self._finish()

    async def _sideband(self) -> None:
        t = gateway_state(self.state).timeouts
        failures = 0
        url = ws_url(self.state, call_id=self.call_id)
        while not self._done.is_set() and failures < SIDEBAND_ATTEMPTS:
            try:
                ws = await connect(url, additional_headers=auth_headers(self.state), user_agent_header=USER_AGENT,
                                   max_size=self.state.config.server.max_message_bytes, open_timeout=t.connect,
                                   close_timeout=2.0, compression=None, logger=ws_logger())
            except InvalidStatus as exc:
                status = exc.response.status_code
                failures += 1
                log.warning("gateway: call %s: sideband refused (HTTP %d)", self.call_id, status)
                if status in (400, 404, 410):  # upstream does not know the call (any more): it is over
                    self.ended_reason = self.ended_reason or f"call not found upstream (HTTP {status})"
                    self._done.set()
                    return
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                failures += 1
                log.warning("gateway: call %s: sideband connect failed: %s", self.call_id, type(exc).__name__)
            else:
                failures = 0
                self._ws = ws
                if not self.joined:
                    log.info("gateway: call %s: sideband joined", self.call_id)
                self.joined = True
                try:
                    async for msg in ws:
                        if isinstance(msg, str):
                            self._on_event(msg)
                except ConnectionClosed as exc:
                    if exc.rcvd is not None or self._hangup_started:
                        self.ended_reason = self.ended_reason or (
                            f"call ended (sideband closed {exc.rcvd.code})" if exc.rcvd else "call ended")
                        self._done.set()
                        return
                    log.warning("gateway: call %s: sideband connection lost; rejoining", self.call_id)
                else:
                    self.ended_reason = self.ended_reason or "call ended"
                    self._done.set()
                    return
                finally:
                    self._ws = None
            if not self._done.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._done.wait(), t.sideband_retry)

    def _make_recorder(self) -> ConversationRecorder | None:
        if self.state.store is None:
            return None
        from voicecall.store.recorder import ConversationRecorder, new_conversation_id

        rec = ConversationRecorder(self.state.store, conversation_id=new_conversation_id(),
                                   provider="openai-realtime", model=self.model, voice=self.voice,
                                   transport="sideband", client=self.label, prices=self.state.config.store.prices,
                                   metrics=self.state.metrics)
        return rec if rec.enabled else None

    def _on_event(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            return
        if type(event) is not dict:
            return
        etype = event.get("type")
        if etype in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict) and isinstance(session.get("model"), str) and session["model"]:
                self.model = session["model"]
        elif etype == "response.done":
            resp = event.get("response")
            usage = resp.get("usage") if isinstance(resp, dict) else None
            self.responses += 1
            if isinstance(usage, dict):
                for key in self.usage:
                    value = usage.get(key)
                    if isinstance(value, int) and not isinstance(value, bool):
                        self.usage[key] += value
                if self._prices is None:
                    self._prices = price_table(self.state)
                cost = self._prices.cost_usd(self.model, usage)
                self.cost_usd += cost
                if self.max_spend is not None and self.cost_usd >= self.max_spend:
                    self._spawn_hangup(f"spend limit reached (${self.cost_usd:.4f} >= ${self.max_spend:g})")
                if self.state.config.state.max_spend_per_client_per_day_usd is not None:
                    task = asyncio.ensure_future(self._add_spend(cost))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        if self.recorder is not None:
            self.recorder.on_server_event(event)

    async def _add_spend(self, cost: float) -> None:
        """Per-client daily spend across replicas (``state.maxSpendPerClientPerDayUsd``): over it, hang up."""
        conversation = self.recorder.conversation_id if self.recorder is not None else self.call_id
        reason = await self.lease.add_spend(conversation, cost)
        if reason is not None:
            self._spawn_hangup(reason)

    # -------------------------------------------------------------------------------------- hangup
    def _spawn_hangup(self, reason: str) -> None:
        if self._hangup_started or self._done.is_set():
            return
        task = asyncio.ensure_future(self._hangup_quietly(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hangup_quietly(self, reason: str) -> None:
        with contextlib.suppress(UpstreamError):
            await self.hangup(reason)

    async def hangup(self, reason: str) -> None:
        """Hang the call up upstream (once) and end the sideband. Raises :class:`UpstreamError` when upstream
        refuses; the call is considered over here either way (its slot is freed)."""
        async with self._hangup_lock:
            if self._hangup_started:
                return
            self._hangup_started = True
            self.ended_reason = self.ended_reason or reason
            log.info("gateway: call %s: hanging up: %s", self.call_id, reason)
            try:
                await upstream_request(self.state, "POST", f"/realtime/calls/{self.call_id}/hangup", "hangup",
                                       headers={"Accept": "*/*"})
            except UpstreamError as exc:
                if exc.status == 404:  # already over upstream
                    return
                raise
            finally:
                self._done.set()
                ws = self._ws
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close(1000, "call hung up")

    async def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._done.set()
        calls = gateway_state(self.state).calls
        if calls.get(self.call_id) is self:
            del calls[self.call_id]
        self.lease.release()
        await drop_call_owner(self.state, self.call_id)
        if self.recorder is not None:
            await self.recorder.close()
        log.info("gateway: call %s for %s over after %.1f s: %s; %d response(s), %d tokens, estimated $%.4f",
                 self.call_id, self.label, time.monotonic() - self.started, self.ended_reason or "ended",
                 self.responses, self.usage["total_tokens"], self.cost_usd)
