"""Requests for a WebRTC call that another replica runs are forwarded to that replica.

A call lives in the process that answered its SDP (the media goes there). The shared state maps the call id to
its replica and that replica's ``server.internalUrl``. ``POST …/calls/{id}/hangup`` and the sideband join
(``GET /v1/realtime?call_id=…``) that reach another replica through the load balancer are forwarded there with the
client's own credentials (the owner authenticates the client as usual) and an ``X-Voicecall-Forwarded`` header:
an HMAC, with ``server.secretKey``, over the method, path and a timestamp. The owner accepts a forwarded request
only with a valid, fresh signature, and never forwards it again (no loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from voicecall.cluster.state import StateUnavailable

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from voicecall.server.app import AppState

log = logging.getLogger("voicecall.cluster")

HEADER = "x-voicecall-forwarded"
MAX_SKEW_SECONDS = 30
_PASS_HEADERS = ("authorization", "content-type", "openai-beta")


def _key(state: AppState) -> bytes:
    key = state.config.server.secret_key
    return key.get_secret_value().encode() if key is not None else b""


def sign(state: AppState, method: str, path: str, now: float | None = None) -> str:
    ts = str(int(time.time() if now is None else now))
    mac = hmac.new(_key(state), f"{ts}\n{method}\n{path}".encode(), hashlib.sha256).hexdigest()
    return f"{ts}.{mac}"


def is_forwarded(state: AppState, conn: HTTPConnection, method: str) -> bool:
    """True when ``conn`` came from another replica with a valid signature; raises PermissionError when the
    header is there but wrong (a client pretending to be a replica)."""
    value = conn.headers.get(HEADER)
    if value is None:
        return False
    ts, _, mac = value.partition(".")
    if not ts.isdigit() or abs(time.time() - int(ts)) > MAX_SKEW_SECONDS or not _key(state):
        raise PermissionError("invalid forwarding signature")
    expected = hmac.new(_key(state), f"{ts}\n{method}\n{conn.url.path}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        raise PermissionError("invalid forwarding signature")
    return True


async def share_call_owner(state: AppState, call_id: str) -> None:
    """Record that this replica runs ``call_id`` (refreshed by the heartbeat until :func:`drop_call_owner`)."""
    try:
        await state.shared.set_call_owner(call_id)
    except StateUnavailable as exc:
        log.warning("call %s: could not record its owner in the shared state (%s); other replicas cannot reach it",
                    call_id, exc)


async def drop_call_owner(state: AppState, call_id: str) -> None:
    with contextlib.suppress(StateUnavailable):
        await state.shared.drop_call(call_id)


async def owner_elsewhere(state: AppState, conn: HTTPConnection, method: str, call_id: str) -> str | None:
    """The internal URL of the replica that runs ``call_id`` when it is another one (and ``conn`` was not itself
    forwarded), else None."""
    if state.shared.kind == "memory" or is_forwarded(state, conn, method):
        return None
    try:
        owner = await state.shared.call_owner(call_id)
    except StateUnavailable:
        return None
    if owner is None or owner[0] == state.replica_id:
        return None
    return owner[1]


async def forward_http(state: AppState, conn: HTTPConnection, method: str, owner_url: str, body: bytes) -> Response:
    import httpx

    path = conn.url.path + (f"?{conn.url.query}" if conn.url.query else "")
    headers = {k: v for k, v in conn.headers.items() if k in _PASS_HEADERS}
    headers[HEADER] = sign(state, method, conn.url.path)
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            resp = await client.request(method, owner_url + path, headers=headers, content=body)
    except httpx.HTTPError as exc:
        log.warning("forwarding %s %s to %s failed: %s", method, conn.url.path, owner_url, type(exc).__name__)
        return Response(content=b'{"error": {"message": "The replica running this call cannot be reached.", '
                        b'"type": "server_error", "code": "replica_unreachable", "param": null}}', status_code=502,
                        media_type="application/json")
    keep = {k: v for k, v in resp.headers.items() if k in ("content-type", "location", "retry-after")}
    return Response(content=resp.content, status_code=resp.status_code, headers=keep)


async def forward_websocket(state: AppState, ws: WebSocket, owner_url: str, subprotocol: str | None) -> None:
    """Relay an (accepted-here) sideband WebSocket to the owner replica, both ways, until either side closes."""
    import websockets

    url = owner_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + ws.url.path
    if ws.url.query:
        url += "?" + ws.url.query
    headers = {k: v for k, v in ws.headers.items() if k in _PASS_HEADERS}
    headers[HEADER] = sign(state, "GET", ws.url.path)
    protocols = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    await ws.accept(subprotocol=subprotocol)
    try:
        async with websockets.connect(url, additional_headers=headers, subprotocols=protocols or None,  # type: ignore[arg-type]
                                      max_size=None, open_timeout=10) as upstream:

            async def down() -> None:
                async for message in upstream:
                    await (ws.send_text(message) if isinstance(message, str) else ws.send_bytes(message))

            async def up() -> None:
                while True:
                    msg = await ws.receive()
                    if msg["type"] == "websocket.disconnect":
                        return
                    data: Any = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
                    if data is not None:
                        await upstream.send(data)

            tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            code = upstream.close_code or 1000
    except Exception as exc:  # noqa: BLE001 - any failure to reach the owner is reported the same way
        log.warning("forwarding a sideband WebSocket to %s failed: %s", owner_url, type(exc).__name__)
        code = 1011
    with contextlib.suppress(Exception):
        await ws.close(code=code if code in (1000, 1008, 1011, 1012, 1013) or 4000 <= code < 5000 else 1000)
