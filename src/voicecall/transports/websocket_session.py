"""``GET /v1/realtime`` on the local engine: one :class:`EngineSession` per WebSocket."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from voicecall.server.limits import Refused, closing_event, refuse_websocket
from voicecall.transports.websocket import WebSocketTransport, receive_loop

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal

log = logging.getLogger(__name__)


async def serve_engine_websocket(ws: WebSocket, state: AppState, principal: Principal, subprotocol: str | None) -> None:
    from voicecall.engine.session import EngineSession, SessionLimits

    await ws.accept(subprotocol=subprotocol)
    try:
        lease = await state.sessions.admit(principal.client, "websocket")
    except Refused as exc:
        await refuse_websocket(ws, exc)
        return
    server = state.config.server
    transport = WebSocketTransport(ws, server.max_outgoing_bytes, server.send_timeout_seconds)

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
        await receive_loop(ws, transport, session.handle_message, server.max_message_bytes,
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
