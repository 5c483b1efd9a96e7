"""``GET /v1/realtime?call_id=rtc_…`` on the *local* engine: a sideband WebSocket onto a running WebRTC call.

OpenAI lets a server join a WebRTC call it did not carry (the "sideband": see the reference, §2.2). The gateway
relies on that to record calls and enforce limits, so the local engine offers the same, which makes a local voicecall
server a complete stand-in for OpenAI behind the gateway (tests, chained deployments):

* every server event of the call's session (except ``response.output_audio.delta``: WebRTC audio is on the media
  track) is also sent to the sideband socket;
* every client event received on the sideband socket is handled by the call's session, as if it came on the data
  channel;
* the socket is closed (1000, ``call ended``) when the call ends.

A client that authenticated with a client secret may join only the call it started with that secret; a server API
key may join any call. The server app routes here (``voicecall.server.app``) for provider ``local`` when the
WebSocket has a ``call_id`` query parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketState

from voicecall.protocol.errors import error_event

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal

log = logging.getLogger("voicecall.gateway")

QUEUE_EVENTS = 2000
"""Events buffered for a slow sideband socket before the oldest are dropped (the call itself never waits)."""


class FanOutTransport:
    """Wraps a session's transport: events still go to the call, and also to each subscribed sideband queue."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.subscribers: set[asyncio.Queue[str]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send_event(self, event: dict[str, Any]) -> None:
        self.inner.send_event(event)
        if self.subscribers and event.get("type") != "response.output_audio.delta":
            text = json.dumps(event, separators=(",", ":"))
            for queue in self.subscribers:
                if queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                queue.put_nowait(text)


def _fan_out(session: Any) -> FanOutTransport:
    transport = session.transport
    if not isinstance(transport, FanOutTransport):
        transport = FanOutTransport(transport)
        session.transport = transport
    return transport


async def serve_local_sideband(ws: WebSocket, state: AppState, principal: Principal, subprotocol: str | None) -> None:
    """Attach ``ws`` to the local WebRTC call named by its ``call_id`` query parameter."""
    from voicecall.transports.webrtc_routes import registry_of

    call_id = ws.query_params.get("call_id", "")
    await ws.accept(subprotocol="realtime" if subprotocol == "realtime" else None)
    call = registry_of(state).get(call_id)
    allowed = call is not None and (principal.secret is None or principal.secret.value == call.secret_value)
    if call is None or not allowed:
        await ws.send_text(json.dumps(error_event("call_not_found", f"No active call {call_id[:40]!r} on this server "
                                                  "that this client may join.", param="call_id")))
        await ws.close(code=1008, reason="call not found")
        return
    fan = _fan_out(call.session)
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_EVENTS)
    fan.subscribers.add(queue)
    log.info("sideband joined call %s (%s)", call_id, principal.label)
    await ws.send_text(json.dumps({"type": "session.created", "event_id": "event_sideband_" + call_id[-12:],
                                   "session": call.session.config.to_dict()}))

    async def writer() -> None:
        while True:
            await ws.send_text(await queue.get())

    max_bytes = state.config.server.max_message_bytes

    async def reader() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
            if data is not None and len(data) > max_bytes:
                await ws.send_text(json.dumps(error_event(
                    "message_too_large", f"The message is {len(data)} bytes; this server accepts at most "
                    f"{max_bytes} bytes per message.")))
            elif data is not None:
                await call.session.handle_message(data)

    tasks = [asyncio.ensure_future(writer()), asyncio.ensure_future(reader()),
             asyncio.ensure_future(call.ended.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        fan.subscribers.discard(queue)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        # let what the call said last reach the sideband
        with contextlib.suppress(Exception):
            async with asyncio.timeout(state.config.server.send_timeout_seconds):  # a sideband that reads nothing
                while not queue.empty() and ws.application_state == WebSocketState.CONNECTED:
                    await ws.send_text(queue.get_nowait())
        if ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(code=1000, reason="call ended")
        log.info("sideband left call %s", call_id)
