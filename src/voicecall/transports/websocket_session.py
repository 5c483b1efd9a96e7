"""``GET /v1/realtime`` on the local engine: one :class:`EngineSession` per WebSocket."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from voicecall.protocol.beta import BetaSession
from voicecall.protocol.errors import ProtocolError, from_exception
from voicecall.protocol.events import client_event_id
from voicecall.server.limits import Refused, closing_event, refuse_websocket
from voicecall.transports.websocket import BetaWebSocketTransport, WebSocketTransport, receive_loop

if TYPE_CHECKING:
    from voicecall.engine.session import EngineSession
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal

log = logging.getLogger(__name__)
_APPENDS = ('{"type":"input_audio_buffer.append"', '{"type": "input_audio_buffer.append"')


async def serve_engine_websocket(ws: WebSocket, state: AppState, principal: Principal, subprotocol: str | None,
                                 beta: bool = False) -> None:
    """``beta``: the client asked for the beta protocol; it is translated both ways (:mod:`voicecall.protocol.beta`)."""
    from voicecall.engine.session import EngineSession, SessionLimits

    await ws.accept(subprotocol=subprotocol)
    try:
        lease = await state.sessions.admit(principal.client, "websocket")
    except Refused as exc:
        await refuse_websocket(ws, exc)
        return
    server = state.config.server
    translator = BetaSession() if beta else None
    transport = (WebSocketTransport(ws, server.max_outgoing_bytes, server.send_timeout_seconds) if translator is None
                 else BetaWebSocketTransport(ws, translator, server.max_outgoing_bytes, server.send_timeout_seconds))

    def end(reason: str) -> None:  # drain ran out of time
        transport.send_event(closing_event(reason))
        transport.close(1012, "server shutting down")

    lease.closer = end
    lease.queue_depth = transport.queue_depth
    session: EngineSession | None = None
    try:
        pipeline = await state.get_pipeline()
        model = ws.query_params.get("model") or state.config.voice_call.local.model
        recorder = _recorder(state, principal, model, "websocket")
        session = EngineSession(pipeline, state.config.voice_call.local, transport, model=model, recorder=recorder,
                                max_seconds=server.max_session_seconds, limits=SessionLimits.from_config(server))
        transport.start()
        await session.start(principal.secret.session if principal.secret else None)
        handle = session.handle_message if translator is None else _beta_handler(session, translator)
        await receive_loop(ws, transport, handle, server.max_message_bytes,
                           append_audio=session.append_audio if translator is None else None,
                           first_event_seconds=server.first_event_seconds, idle_seconds=server.idle_session_seconds)
    finally:
        if session is not None:
            await session.close()
            if session.recorder is not None:
                await session.recorder.close()
        lease.release()  # before the drain: a client that reads nothing may hold the socket a while
        await transport.drain()


def _recorder(state: AppState, principal: Principal, model: str, transport: str):  # type: ignore[no-untyped-def]
    from voicecall.store.pricing import LocalPrices
    from voicecall.store.recorder import ConversationRecorder, new_conversation_id

    if state.store is None or not state.store.enabled:
        return None
    return ConversationRecorder(state.store, conversation_id=new_conversation_id(), provider=state.provider, model=model,
                                voice=state.config.voice_call.local.voice, transport=transport, client=principal.label,
                                prices=LocalPrices() if state.provider == "local" else state.prices,
                                metrics=state.metrics)


def _beta_handler(session: EngineSession, beta: BetaSession) -> Callable[[str | bytes], Awaitable[None]]:
    """``session.handle_message`` for a beta client: each event is translated to GA first (appends, the same in
    both, go through untouched; what is not an event goes on to the engine's own error path)."""

    async def handle(message: str | bytes) -> None:
        head = message[:40]
        if (head.decode("latin-1") if isinstance(head, bytes) else head).startswith(_APPENDS):
            await session.handle_message(message)  # the audio path: the same event in beta
            return
        try:
            event: Any = json.loads(message)
        except ValueError:
            event = None
        if type(event) is not dict:
            await session.handle_message(message)
            return
        try:
            ga = beta.client_event(event)
        except ProtocolError as exc:
            session.emit(from_exception(exc, client_event_id(event)))
            return
        await session.handle_message(message if ga is event else json.dumps(ga))

    return handle
