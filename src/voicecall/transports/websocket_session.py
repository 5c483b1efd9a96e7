"""``GET /v1/realtime`` on the local engine: one :class:`EngineSession` per WebSocket."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from voicecall.protocol.errors import error_event
from voicecall.transports.websocket import WebSocketTransport, receive_loop

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal

log = logging.getLogger(__name__)


async def serve_engine_websocket(ws: WebSocket, state: AppState, principal: Principal, subprotocol: str | None) -> None:
    from voicecall.engine.session import EngineSession

    await ws.accept(subprotocol=subprotocol)
    if not state.sessions.try_acquire():
        await ws.send_text(json.dumps(error_event(
            "session_limit_reached", f"This server already runs its maximum of {state.sessions.max_sessions} sessions; "
            "try again later.", type="server_error")))
        await ws.close(code=1013, reason="session limit reached")
        return
    transport = WebSocketTransport(ws)
    session: EngineSession | None = None
    try:
        pipeline = await state.get_pipeline()
        model = ws.query_params.get("model") or state.config.voice_call.local.model
        recorder = _recorder(state, principal, model, "websocket")
        session = EngineSession(pipeline, state.config.voice_call.local, transport, model=model, recorder=recorder,
                                max_seconds=state.config.server.max_session_seconds)
        transport.start()
        await session.start(principal.secret.session if principal.secret else None)
        await receive_loop(ws, transport, session.handle_message, state.config.server.max_message_bytes)
    finally:
        if session is not None:
            await session.close()
            if session.recorder is not None:
                await session.recorder.close()
        await transport.drain()
        state.sessions.release()


def _recorder(state: AppState, principal: Principal, model: str, transport: str):  # type: ignore[no-untyped-def]
    from voicecall.store.pricing import LocalPrices
    from voicecall.store.recorder import ConversationRecorder, new_conversation_id

    if state.store is None or not state.store.enabled:
        return None
    return ConversationRecorder(state.store, conversation_id=new_conversation_id(), provider=state.provider, model=model,
                                voice=state.config.voice_call.local.voice, transport=transport, client=principal.label,
                                prices=LocalPrices() if state.provider == "local" else state.prices)
