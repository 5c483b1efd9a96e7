"""``POST /v1/realtime/calls`` (WebRTC SDP exchange) and ``POST /v1/realtime/calls/{call_id}/hangup``.

Two request shapes, as OpenAI's GA API:

* ``Content-Type: application/sdp``, ``Authorization: Bearer <ek_ client secret>`` (or a server API key, or
  nothing when the server has no keys): the body is the offer; the secret's session is the initial config.
* ``multipart/form-data`` with parts ``sdp`` (application/sdp) and optional ``session`` (application/json GA
  session object), authenticated by a server API key (the "unified interface").

The answer is ``201 Created``, ``Content-Type: application/sdp``, ``Location: /v1/realtime/calls/rtc_…``.
Errors are JSON ``{"error": {message, type, code, param}}``.

On provider ``openai-realtime`` these routes delegate to ``voicecall.gateway.calls`` (``create_call`` and
``hangup_call``), which proxies the SDP to OpenAI; without that module they answer 501.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from voicecall.cluster.forward import drop_call_owner, forward_http, owner_elsewhere, share_call_owner
from voicecall.protocol.errors import ProtocolError
from voicecall.server.auth import Principal, presented_token
from voicecall.server.limits import Refused
from voicecall.transports.webrtc import SdpError, WebRTCPeer, WebRTCTransport, check_offer

if TYPE_CHECKING:
    from voicecall.engine.session import EngineSession
    from voicecall.server.app import AppState

log = logging.getLogger(__name__)

CALLS_PATH = "/v1/realtime/calls"
MAX_OFFER_BYTES = 256 * 1024


@dataclass(eq=False)
class WebRTCCall:
    """One live call: its peer, session, who created it, and the session slot it holds."""

    id: str
    peer: WebRTCPeer
    session: EngineSession
    secret_value: str | None  # the ek_ secret that created it (may hang it up, even after it expired)
    principal_label: str
    started: float = field(default_factory=time.time)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def hangup(self, reason: str = "hung up by the client") -> None:
        self.peer.close(reason)

    def stats(self) -> dict[str, Any]:
        """Counters of this call (no secrets): media frames each way, stalls, events, connection state."""
        track = self.peer.transport.track
        return {"id": self.id, "object": "realtime.call", "started_at": int(self.started),
                "seconds": round(time.time() - self.started, 1), "connection_state": self.peer.pc.connectionState,
                "data_channel_open": self.peer.transport.channel_open, "frames_sent": track.frames_sent,
                "late_frames": track.late_frames, "mic_frames": self.peer.mic.frames, "inline_decoding": self.peer.inline_decoding,
                "jitter_buffer_frames": self.peer.jitter_prefetch,
                "events_sent": self.peer.transport.events_sent, "client": self.principal_label}


class CallRegistry:
    """The live WebRTC calls of one app (kept on ``AppState.webrtc_calls``)."""

    #: How many ended calls are remembered (their id and secret only), and for how long: a hang-up that arrives just
    #: after the peer connection closed (a browser's ``disconnect()`` sends both at once) is answered as done, not 404.
    ENDED_KEPT = 1024
    ENDED_TTL_S = 300.0

    def __init__(self) -> None:
        self._calls: dict[str, WebRTCCall] = {}
        self._ended: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    def add(self, call: WebRTCCall) -> None:
        self._calls[call.id] = call

    def get(self, call_id: str) -> WebRTCCall | None:
        return self._calls.get(call_id)

    def remove(self, call_id: str) -> None:
        call = self._calls.pop(call_id, None)
        if call is not None:
            self._ended[call_id] = (call.secret_value, time.monotonic())
            while len(self._ended) > self.ENDED_KEPT:
                self._ended.popitem(last=False)

    def ended_secret(self, call_id: str) -> tuple[bool, str | None]:
        """``(True, the secret that created it)`` for a call that ended in the last :attr:`ENDED_TTL_S` seconds."""
        now = time.monotonic()
        while self._ended and now - next(iter(self._ended.values()))[1] > self.ENDED_TTL_S:
            self._ended.popitem(last=False)
        hit = self._ended.get(call_id)
        return (True, hit[0]) if hit is not None else (False, None)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._calls.values()))

    async def close_all(self, reason: str = "server shutting down") -> None:
        calls = list(self._calls.values())
        for c in calls:
            c.hangup(reason)
        if calls:
            await asyncio.wait([asyncio.ensure_future(c.ended.wait()) for c in calls], timeout=5)


def new_call_id() -> str:
    return "rtc_" + secrets.token_hex(16)


def _error(status: int, message: str, code: str | None, type: str = "invalid_request_error",
           param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "code": code, "param": param}},
                        status_code=status)


def registry_of(state: AppState) -> CallRegistry:
    reg = getattr(state, "webrtc_calls", None)
    if reg is None:
        reg = CallRegistry()
        state.webrtc_calls = reg  # type: ignore[attr-defined]
    return reg


def register(app: FastAPI, state: AppState) -> None:
    """Add the WebRTC routes to ``app`` (called by :func:`voicecall.server.app.create_app`)."""
    calls = registry_of(state)

    @app.post(CALLS_PATH, status_code=201, response_class=Response,
              responses={201: {"content": {"application/sdp": {}}, "description": "SDP answer"}})
    async def create_call(request: Request) -> Response:
        """Start a WebRTC call: the body is the SDP offer (or multipart sdp + session); the answer is SDP."""
        await state.secrets.prefetch(presented_token(request))  # an OpenAI secret another replica minted
        if state.provider == "openai-realtime":
            return await _delegate(request, state, "create_call")
        return await _create_local_call(request, state, calls)

    @app.get(CALLS_PATH)
    async def list_calls(request: Request) -> Response:
        """Live WebRTC calls of this process with their media counters (server API key; for operators and
        ``voicecall bench sessions``). Not part of OpenAI's API."""
        state.auth.authenticate(request, allow_secret=False)
        return JSONResponse({"object": "list", "data": [c.stats() for c in calls]})

    @app.post(CALLS_PATH + "/{call_id}/hangup")
    async def hangup_call(call_id: str, request: Request) -> Response:
        """End a call this server is running (forwarded to the replica that runs it, when that is another one)."""
        try:
            owner = await owner_elsewhere(state, request, "POST", call_id)
        except PermissionError as exc:
            return _error(403, str(exc), "forbidden")
        if owner is not None:
            return await forward_http(state, request, "POST", owner, await request.body())
        await state.secrets.prefetch(presented_token(request))
        if state.provider == "openai-realtime":
            return await _delegate(request, state, "hangup_call", call_id=call_id)
        call = calls.get(call_id)
        ended, ended_secret = (False, None) if call is not None else calls.ended_secret(call_id)
        secret_value = call.secret_value if call is not None else ended_secret
        token = presented_token(request)
        if not (secret_value and token and hmac.compare_digest(token.encode(), secret_value.encode())):
            principal = state.auth.authenticate(request)
            if (call is not None or ended) and principal.secret is not None and principal.secret.value != secret_value:
                return _error(403, "This call was started with another client secret; hang up with that secret or "
                              "a server API key.", "forbidden")
        if call is None:
            if ended:  # already over (the peer connection closed first): hanging up again is done, not an error
                return JSONResponse({})
            return _error(404, f"No active call with id '{call_id}' on this server.", "call_not_found",
                          param="call_id")
        call.hangup()
        try:
            await asyncio.wait_for(call.ended.wait(), 5)
        except TimeoutError:
            log.warning("call %s did not finish closing within 5 s", call_id)
        return JSONResponse({})


async def _delegate(request: Request, state: AppState, name: str, **kwargs: Any) -> Response:
    """Hand a call route to the OpenAI gateway (``voicecall.gateway.calls``) when that provider is active."""
    try:
        from voicecall.gateway import calls as gateway_calls
    except ImportError:
        gateway_calls = None  # type: ignore[assignment]
    handler = getattr(gateway_calls, name, None) if gateway_calls is not None else None
    if handler is None:
        return _error(501, "WebRTC calls through the openai-realtime provider are not available in this build "
                      "(voicecall.gateway.calls is missing); use the WebSocket at /v1/realtime, or provider 'local'.",
                      "not_implemented", type="server_error")
    return await handler(request, state, **kwargs)  # type: ignore[no-any-return]


async def _read_offer(request: Request, state: AppState) -> tuple[str, dict[str, Any] | None, Principal] | Response:
    """Authenticate and parse the request: (offer SDP, initial session, principal), or an error response."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media == "application/sdp":
        principal = state.auth.authenticate(request)
        body = await request.body()
        if len(body) > MAX_OFFER_BYTES:
            return _error(413, f"The SDP offer is {len(body)} bytes; at most {MAX_OFFER_BYTES} are accepted.",
                          "request_too_large")
        try:
            sdp = body.decode("utf-8")
        except UnicodeDecodeError:
            return _error(400, "The SDP offer is not valid UTF-8 text.", "invalid_sdp")
        secret_session = dict(principal.secret.session) if principal.secret is not None else None
        return sdp, secret_session, principal
    if media == "multipart/form-data":
        principal = state.auth.authenticate(request, allow_secret=False)
        try:
            form = await request.form(max_part_size=MAX_OFFER_BYTES)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies raise assorted errors
            return _error(400, f"The multipart body could not be parsed: {exc}", "invalid_request")
        unknown = [k for k in form if k not in ("sdp", "session")]
        if unknown:
            return _error(400, f"Unknown form field '{unknown[0]}': send only 'sdp' and 'session'.", "unknown_parameter",
                          param=unknown[0])
        sdp_part = form.get("sdp")
        if sdp_part is None:
            return _error(400, "The multipart body has no 'sdp' part (the SDP offer, application/sdp).",
                          "missing_required_parameter", param="sdp")
        sdp_raw = await sdp_part.read() if hasattr(sdp_part, "read") else sdp_part
        sdp = sdp_raw.decode("utf-8", "replace") if isinstance(sdp_raw, bytes) else str(sdp_raw)
        initial: dict[str, Any] | None = None
        session_part = form.get("session")
        if session_part is not None:
            raw = await session_part.read() if hasattr(session_part, "read") else session_part
            try:
                initial = json.loads(raw)
            except ValueError:
                return _error(400, "The 'session' part is not valid JSON.", "invalid_json", param="session")
            if not isinstance(initial, dict):
                return _error(400, "The 'session' part must be a JSON object (a GA session).", "invalid_type",
                              param="session")
        return sdp, initial, principal
    return _error(415, f"Unsupported Content-Type {ctype or '(none)'!r}: send the SDP offer as 'application/sdp' "
                  "(with a client secret) or as 'multipart/form-data' with 'sdp' and 'session' parts.",
                  "unsupported_media_type")


async def _create_local_call(request: Request, state: AppState, calls: CallRegistry) -> Response:
    from voicecall.engine.session import EngineSession, SessionLimits
    from voicecall.transports.websocket_session import _recorder

    parsed = await _read_offer(request, state)
    if isinstance(parsed, Response):
        return parsed
    sdp, initial, principal = parsed
    try:
        check_offer(sdp)
    except SdpError as exc:
        return _error(400, str(exc), "invalid_sdp", param="sdp")
    try:
        lease = await state.sessions.admit(principal.client, "webrtc")
    except Refused as exc:
        return _error(exc.status, exc.message, exc.code, type="server_error")
    release = lease.release

    cfg = state.config
    peer: WebRTCPeer | None = None
    session: EngineSession | None = None
    recorder = None
    try:
        pipeline = await state.get_pipeline()
        model = (initial or {}).get("model") if isinstance((initial or {}).get("model"), str) else None
        model = model or cfg.voice_call.local.model
        transport = WebRTCTransport(on_close=lambda reason: peer.close(reason) if peer is not None else None,
                                    max_outgoing_bytes=cfg.server.max_outgoing_bytes)
        peer = WebRTCPeer(transport, ice_servers=cfg.webrtc.ice_servers, host_addresses=cfg.webrtc.host_addresses,
                          max_message_bytes=cfg.server.max_message_bytes,
                          jitter_buffer_frames=cfg.webrtc.jitter_buffer_frames,
                          idle_seconds=cfg.server.idle_session_seconds)
        recorder = _recorder(state, principal, model, "webrtc")
        session = EngineSession(pipeline, cfg.voice_call.local, transport, model=model, recorder=recorder,
                                max_seconds=cfg.server.max_session_seconds,
                                limits=SessionLimits.from_config(cfg.server))
        transport.session = session
        try:
            await session.start(initial)  # validates the initial session; session.created waits for the channel
        except ProtocolError as exc:
            await _abandon(peer, session, recorder)
            release()
            return _error(400, exc.message, exc.code, type=exc.type, param=exc.param)
        try:
            answer = await peer.answer(sdp)
        except Exception as exc:  # noqa: BLE001 - aiortc rejects odd offers with assorted exceptions
            log.info("SDP negotiation failed: %s: %s", type(exc).__name__, exc)
            await _abandon(peer, session, recorder)
            release()
            return _error(400, f"The SDP offer could not be answered: {type(exc).__name__}: {exc}", "invalid_sdp",
                          param="sdp")
    except BaseException:
        if peer is not None:
            await _abandon(peer, session, recorder)
        release()
        raise
    call = WebRTCCall(id=new_call_id(), peer=peer, session=session, principal_label=principal.label,
                      secret_value=principal.secret.value if principal.secret is not None else None)
    calls.add(call)
    lease.closer = lambda reason: call.hangup(reason)
    await share_call_owner(state, call.id)
    peer.start(session)
    asyncio.ensure_future(_supervise(state, call, calls, release))
    log.info("WebRTC call %s started (%s)", call.id, principal.label)
    return Response(content=answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"{CALLS_PATH}/{call.id}"})


async def _supervise(state: AppState, call: WebRTCCall, calls: CallRegistry, release: Any) -> None:
    """Wait for the call to end (any cause), then release everything it held."""
    try:
        await call.peer.closed.wait()
    finally:
        calls.remove(call.id)
        release()
        await drop_call_owner(state, call.id)
        recorder: Any = call.session.recorder  # a ConversationRecorder (its close() is async)
        if recorder is not None:
            try:
                await recorder.close()
            except Exception:  # history must not break teardown
                log.exception("closing the call's recorder failed")
        call.ended.set()
        log.info("WebRTC call %s ended after %.1f s: %s", call.id, time.time() - call.started, call.peer.close_reason)


async def _abandon(peer: WebRTCPeer, session: EngineSession | None, recorder: Any) -> None:
    """Tear down a call that never started."""
    peer.close("the call could not be set up")
    await peer.closed.wait()
    if session is not None:
        await session.close()
    if recorder is not None:
        try:
            await recorder.close()
        except Exception:
            log.exception("closing the recorder failed")

