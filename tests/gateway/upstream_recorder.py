"""A stand-in for OpenAI's Realtime API that records every request the gateway makes and checks it against what
OpenAI documents (reference §2): a real FastAPI app on uvicorn, on a loopback port, behind a small TCP proxy that
can cut connections (a dropped network, not a polite close).

Checked on every request (violations are collected in :attr:`UpstreamRecorder.violations`):

* ``Authorization: Bearer <the server key>`` and nothing else that authenticates; no ``OpenAI-Beta`` header;
* ``POST /v1/realtime/client_secrets``: JSON ``{"expires_after": {"anchor": "created_at", "seconds": 10..7200},
  "session": {"type": "realtime", "model": …}}``;
* ``POST /v1/realtime/calls``: ``multipart/form-data`` with exactly the parts ``sdp`` (``application/sdp``) and
  ``session`` (``application/json``, a GA session with ``type`` and ``model``);
* ``GET /v1/realtime`` (WebSocket): exactly one of ``model`` / ``call_id`` in the query, no subprotocol offered.

Behaviour is set with :attr:`UpstreamRecorder.mode`: ``ok`` (a small scripted realtime server: session.created,
session.update -> session.updated, commit -> committed, response.create -> an audio echo of what was appended and
response.done with usage), ``401``, ``429`` (with ``Retry-After: 7``), ``500``, ``hang`` (never answers), ``beta``
(error ``beta_api_shape_disabled`` then close 4000), ``close`` (accept, then close 1011 at once), ``drop`` (accept,
session.created, then the TCP connection is cut), ``leak`` (HTTP 400 whose message and ``code`` quote the key's
last characters and a base64 copy of it), ``leak-ws`` (a session whose first answer is such an ``error`` event,
then a close whose reason quotes the key), ``stall`` (a session whose responses stop after ``response.created``). Client test events ``test.close`` (``{"code", "reason"}``) and
``test.drop`` make a running session close or drop on demand.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import threading
import time
from typing import Any, Self

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.websockets import WebSocketDisconnect

FAKE_ANSWER_SDP = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\na=mid:0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=sctp-port:5000\r\na=mid:1\r\n"
)
USAGE = {"total_tokens": 1300, "input_tokens": 300, "output_tokens": 1000,
         "input_token_details": {"text_tokens": 100, "audio_tokens": 200, "image_tokens": 0, "cached_tokens": 0,
                                 "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0}},
         "output_token_details": {"text_tokens": 200, "audio_tokens": 800}}
"""One response's usage: at gpt-realtime prices 100*4 + 200*32 + 200*16 + 800*64 per 1M = $0.0612."""


def parse_multipart(body: bytes, content_type: str) -> dict[str, dict[str, Any]]:
    """The parts of a ``multipart/form-data`` body, by name: ``{content_type, filename, data}`` as sent."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    parts: dict[str, dict[str, Any]] = {}
    if not boundary:
        return parts
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disp = headers.get("content-disposition", "")
        fields = dict(p.strip().split("=", 1) for p in disp.split(";")[1:] if "=" in p)
        name = fields.get("name", "").strip('"')
        parts[name] = {"content_type": headers.get("content-type"), "filename": fields.get("filename"),
                       "disposition": disp.split(";")[0].strip(), "data": data.removesuffix(b"\r\n").decode()}
    return parts


class CutProxy:
    """A TCP proxy in front of the app: :meth:`cut` aborts every live connection (RST, no close frame); while
    :attr:`frozen` it forwards nothing either way and closes nothing (a peer that hangs: no pong, no close)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self._server: asyncio.base_events.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        link = (writer, up_writer)
        self._links.add(link)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.frozen:
                        continue
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                if not dst.transport.is_closing():
                    dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._links.discard(link)
            for w in link:
                if not w.transport.is_closing():
                    w.close()

    def cut(self) -> int:
        """Abort all live connections now; returns how many."""
        links = list(self._links)
        self._links.clear()
        for client, upstream in links:
            client.transport.abort()
            upstream.transport.abort()
        return len(links)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


class UpstreamRecorder:
    """The recording upstream. Start with ``with UpstreamRecorder(key) as up:``; point ``baseUrl`` at
    :attr:`base_url`."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.mode = "ok"
        self.delta_seconds = 1.0  # audio per response.output_audio.delta
        self.compact_deltas = False  # deltas as JSON.stringify writes them (the relay's fast id check) instead of ", "
        self.requests: list[dict[str, Any]] = []
        self.frames: list[tuple[str, str]] = []  # (connection id, text) of every WebSocket frame received
        self.violations: list[str] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.hangups: list[str] = []
        self.ws_closes: list[tuple[str, int | None, str]] = []  # (connection id, code, reason) seen from the gateway
        self.released = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.proxy: CutProxy | None = None
        self._sidebands: dict[str, list[WebSocket]] = {}
        self.app = self._build()
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        assert self.proxy is not None
        return f"http://127.0.0.1:{self.proxy.port}/v1"

    def __enter__(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                    ws_max_size=64 * 1024 * 1024, timeout_graceful_shutdown=1)
            self.server = uvicorn.Server(config)

            async def main() -> None:
                assert self.server is not None
                serve = asyncio.ensure_future(self.server.serve())
                while not self.server.started:
                    await asyncio.sleep(0.01)
                port = self.server.servers[0].sockets[0].getsockname()[1]
                self.proxy = CutProxy(port)
                await self.proxy.start()
                ready.set()
                await serve
                await self.proxy.stop()

            loop.run_until_complete(main())
            loop.close()

        self.thread = threading.Thread(target=run, name="upstream-recorder", daemon=True)
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError("the upstream recorder did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.released = True
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)

    def cut(self) -> None:
        """Drop every TCP connection through the proxy (from any thread)."""
        assert self.loop is not None and self.proxy is not None
        self.loop.call_soon_threadsafe(self.proxy.cut)

    def push(self, call_id: str, event: dict[str, Any]) -> None:
        """Send ``event`` on every sideband socket joined to ``call_id`` (from any thread)."""
        assert self.loop is not None

        async def send() -> None:
            for ws in list(self._sidebands.get(call_id, [])):
                with contextlib.suppress(Exception):  # the sideband may have gone already
                    await ws.send_text(json.dumps(event))

        asyncio.run_coroutine_threadsafe(send(), self.loop).result(5)

    def sidebands(self, call_id: str) -> int:
        return len(self._sidebands.get(call_id, []))

    # ----------------------------------------------------------------------------------- checks
    def _check_headers(self, what: str, headers: Any) -> None:
        auth = headers.get("authorization")
        if auth != f"Bearer {self.key}":
            self.violations.append(f"{what}: Authorization is not 'Bearer <server key>'")
        for name in headers:
            if name.lower() == "openai-beta":
                self.violations.append(f"{what}: OpenAI-Beta header sent")
            if name.lower() in ("x-api-key", "api-key", "cookie"):
                self.violations.append(f"{what}: unexpected credential header {name}")

    def _refusal(self) -> Response | None:
        if self.mode == "401":
            # OpenAI echoes (part of) the key it got; this one echoes all of it, so a leak would show.
            return JSONResponse({"error": {"message": f"Incorrect API key provided: {self.key}.",
                                           "type": "invalid_request_error", "code": "invalid_api_key",
                                           "param": None}}, status_code=401)
        if self.mode == "429":
            return JSONResponse({"error": {"message": "Rate limit reached for requests.", "type": "requests",
                                           "code": "rate_limit_exceeded", "param": None}}, status_code=429,
                                headers={"Retry-After": "7"})
        if self.mode == "leak":
            return JSONResponse({"error": self.leaky_error()}, status_code=400)
        if self.mode == "500":
            return JSONResponse({"error": {"message": "The server had an error while processing your request.",
                                           "type": "server_error", "code": None, "param": None}}, status_code=500)
        return None

    def leaky_error(self) -> dict[str, Any]:
        """An error that quotes pieces of the key, as a careless upstream (or a proxy) might."""
        tail = self.key[-10:]
        return {"message": f"Key ...{tail} is not allowed here (b64 {base64.b64encode(self.key.encode()).decode()}).",
                "type": "invalid_request_error", "code": f"echo_{tail}", "param": None}

    async def _hang(self) -> None:
        deadline = time.monotonic() + 120
        while not self.released and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # ----------------------------------------------------------------------------------- the app
    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/realtime/client_secrets")
        async def client_secrets(request: Request) -> Response:
            raw = await request.body()
            entry: dict[str, Any] = {"path": "/v1/realtime/client_secrets", "headers": dict(request.headers),
                                     "content_type": request.headers.get("content-type", "")}
            self.requests.append(entry)
            self._check_headers("client_secrets", request.headers)
            if self.mode == "hang":
                await self._hang()
            if (refusal := self._refusal()) is not None:
                return refusal
            try:
                body = json.loads(raw)
            except ValueError:
                self.violations.append("client_secrets: body is not JSON")
                return JSONResponse({"error": {"message": "bad json", "type": "invalid_request_error"}}, 400)
            entry["json"] = body
            if not entry["content_type"].startswith("application/json"):
                self.violations.append("client_secrets: Content-Type is not application/json")
            if set(body) - {"expires_after", "session"}:
                self.violations.append(f"client_secrets: unknown keys {sorted(set(body) - {'expires_after', 'session'})}")
            ea = body.get("expires_after", {})
            if ea.get("anchor") != "created_at" or not 10 <= int(ea.get("seconds", 0)) <= 7200:
                self.violations.append(f"client_secrets: bad expires_after {ea}")
            session = body.get("session") or {}
            if session.get("type") != "realtime" or not session.get("model"):
                self.violations.append(f"client_secrets: session lacks type/model: {session}")
            value = "ek_" + secrets.token_hex(16)
            full = {**session, "object": "realtime.session", "id": "sess_" + secrets.token_hex(10), "expires_at": 0,
                    "tracing": None, "prompt": None, "include": None}
            return JSONResponse({"value": value, "expires_at": int(time.time()) + int(ea.get("seconds", 600)),
                                 "session": full})

        @app.post("/v1/realtime/calls")
        async def calls(request: Request) -> Response:
            entry: dict[str, Any] = {"path": "/v1/realtime/calls", "headers": dict(request.headers),
                                     "content_type": request.headers.get("content-type", "")}
            self.requests.append(entry)
            self._check_headers("calls", request.headers)
            if self.mode == "hang":
                await self._hang()
            if (refusal := self._refusal()) is not None:
                return refusal
            if not entry["content_type"].startswith("multipart/form-data"):
                self.violations.append(f"calls: Content-Type {entry['content_type']!r} is not multipart/form-data")
                return JSONResponse({"error": {"message": "expected multipart", "type": "invalid_request_error"}}, 400)
            parts = parse_multipart(await request.body(), entry["content_type"])
            entry["parts"] = parts
            if sorted(parts) != ["sdp", "session"]:
                self.violations.append(f"calls: parts are {sorted(parts)}, expected sdp and session")
            sdp = parts.get("sdp", {})
            session_part = parts.get("session", {})
            if sdp.get("content_type") != "application/sdp":
                self.violations.append(f"calls: sdp part has Content-Type {sdp.get('content_type')!r}")
            if session_part.get("content_type") != "application/json":
                self.violations.append(f"calls: session part has Content-Type {session_part.get('content_type')!r}")
            try:
                session = json.loads(session_part.get("data") or "{}")
            except ValueError:
                self.violations.append("calls: session part is not JSON")
                session = {}
            if session.get("type") != "realtime" or not session.get("model"):
                self.violations.append(f"calls: session lacks type/model: {session}")
            for key in ("id", "object", "expires_at"):
                if key in session:
                    self.violations.append(f"calls: session has the read-only field {key!r}")
            offer = sdp.get("data") or ""
            if not offer.startswith("v=0"):
                return JSONResponse({"error": {"message": f"Invalid SDP offer (from key {self.key}).",
                                               "type": "invalid_request_error", "code": "invalid_offer",
                                               "param": "sdp"}}, status_code=400)
            call_id = "rtc_" + secrets.token_hex(16)
            self.calls[call_id] = {"session": session, "sdp": offer, "ended": False}
            return Response(FAKE_ANSWER_SDP, status_code=201, media_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{call_id}"})

        @app.post("/v1/realtime/calls/{call_id}/hangup")
        async def hangup(call_id: str, request: Request) -> Response:
            self.requests.append({"path": f"/v1/realtime/calls/{call_id}/hangup", "headers": dict(request.headers)})
            self._check_headers("hangup", request.headers)
            if (refusal := self._refusal()) is not None:
                return refusal
            call = self.calls.get(call_id)
            if call is None:
                return JSONResponse({"error": {"message": "call not found", "type": "invalid_request_error",
                                               "code": "not_found"}}, 404)
            call["ended"] = True
            self.hangups.append(call_id)
            for ws in list(self._sidebands.get(call_id, [])):
                with contextlib.suppress(Exception):  # the sideband may have gone already
                    await ws.close(1000, "call ended")
            return Response(status_code=200)

        @app.websocket("/v1/realtime")
        async def realtime(ws: WebSocket) -> None:
            conn = secrets.token_hex(4)
            params = dict(ws.query_params)
            entry = {"path": "/v1/realtime", "headers": dict(ws.headers), "query": params, "conn": conn}
            self.requests.append(entry)
            self._check_headers("websocket", ws.headers)
            if ws.headers.get("sec-websocket-protocol"):
                self.violations.append("websocket: a subprotocol was offered upstream")
            if ("model" in params) == ("call_id" in params):
                self.violations.append(f"websocket: query must have exactly one of model/call_id: {params}")
            if self.mode == "hang":
                await self._hang()
                return
            if (refusal := self._refusal()) is not None:
                await ws.send_denial_response(refusal)
                return
            await ws.accept()
            if self.mode == "beta":
                await ws.send_text(json.dumps({"type": "error", "event_id": "event_beta1", "error": {
                    "type": "invalid_request_error", "code": "beta_api_shape_disabled",
                    "message": "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
                    "param": None}}))
                await ws.close(4000, "invalid_request_error.beta_api_shape_disabled")
                return
            if self.mode == "close":
                await ws.close(1011, "upstream exploded")
                return
            call_id = params.get("call_id")
            if call_id is not None:
                await self._sideband(ws, call_id)
                return
            await self._session(ws, conn, params.get("model", ""))

        return app

    async def _sideband(self, ws: WebSocket, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call["ended"]:
            await ws.close(1008, "no such call")
            return
        self._sidebands.setdefault(call_id, []).append(ws)
        await ws.send_text(json.dumps({"type": "session.created", "event_id": "event_sb1",
                                       "session": {**call["session"], "object": "realtime.session"}}))
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
        finally:
            self._sidebands[call_id].remove(ws)

    async def _session(self, ws: WebSocket, conn: str, model: str) -> None:
        session: dict[str, Any] = {"type": "realtime", "object": "realtime.session", "id": "sess_" + conn,
                                   "model": model, "instructions": "OpenAI default instructions",
                                   "output_modalities": ["audio"], "tools": [], "tool_choice": "auto",
                                   "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
                                             "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                                        "voice": "alloy"}}}
        n = 0

        def eid() -> str:
            nonlocal n
            n += 1
            return f"event_{conn}_{n}"

        await ws.send_text(json.dumps({"type": "session.created", "event_id": eid(), "session": session}))
        if self.mode == "drop":
            await asyncio.sleep(0.2)
            self.cut()
            await asyncio.sleep(5)
            return
        audio: list[bytes] = []
        item = 0
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    self.ws_closes.append((conn, msg.get("code"), msg.get("reason") or ""))
                    return
                text = msg.get("text")
                if text is None:
                    continue
                self.frames.append((conn, text))
                try:
                    event = json.loads(text)
                except ValueError:
                    await ws.send_text(json.dumps({"type": "error", "event_id": eid(), "error": {
                        "type": "invalid_request_error", "code": "invalid_json", "message": "not json"}}))
                    continue
                etype = event.get("type")
                if etype == "session.update":
                    upd = event.get("session") or {}
                    if "model" in upd:
                        await ws.send_text(json.dumps({"type": "error", "event_id": eid(), "error": {
                            "type": "invalid_request_error", "code": "invalid_value", "param": "session.model",
                            "message": "model cannot be changed", "event_id": event.get("event_id")}}))
                        continue
                    for key, value in upd.items():
                        if key == "audio" and isinstance(value, dict):
                            for side, conf in value.items():
                                session["audio"].setdefault(side, {}).update(conf)
                        else:
                            session[key] = value
                    await ws.send_text(json.dumps({"type": "session.updated", "event_id": eid(), "session": session}))
                elif etype == "input_audio_buffer.append":
                    audio.append(base64.b64decode(event["audio"]))
                elif etype == "input_audio_buffer.commit":
                    item += 1
                    await ws.send_text(json.dumps({"type": "input_audio_buffer.committed", "event_id": eid(),
                                                   "previous_item_id": None, "item_id": f"item_u{item}"}))
                    await ws.send_text(json.dumps({"type": "conversation.item.done", "event_id": eid(),
                                                   "previous_item_id": None, "item": {
                                                       "id": f"item_u{item}", "type": "message", "role": "user",
                                                       "status": "completed",
                                                       "content": [{"type": "input_audio", "transcript": None}]}}))
                elif self.mode == "leak-ws":
                    await ws.send_text(json.dumps({"type": "error", "event_id": eid(), "error": self.leaky_error()}))
                    await ws.close(1008, f"bad key {self.key[-12:]}")
                    return
                elif etype == "response.create" and self.mode == "stall":
                    await ws.send_text(json.dumps({"type": "response.created", "event_id": eid(), "response": {
                        "id": "resp_stalled", "object": "realtime.response", "status": "in_progress", "output": []}}))
                elif etype == "response.create":
                    await self._respond(ws, eid, b"".join(audio), item)
                    audio.clear()
                elif etype == "test.close":
                    await ws.close(int(event.get("code", 1000)), str(event.get("reason", "")))
                    return
                elif etype == "test.drop":
                    self.cut()
                    await asyncio.sleep(5)
                    return
        except WebSocketDisconnect as exc:
            self.ws_closes.append((conn, exc.code, exc.reason or ""))

    async def _respond(self, ws: WebSocket, eid: Any, pcm: bytes, item: int) -> None:
        rid, iid = f"resp_{item}", f"item_a{item}"
        await ws.send_text(json.dumps({"type": "response.created", "event_id": eid(), "response": {
            "id": rid, "object": "realtime.response", "status": "in_progress", "output": []}}))
        await ws.send_text(json.dumps({"type": "response.output_item.added", "event_id": eid(), "response_id": rid,
                                       "output_index": 0, "item": {"id": iid, "type": "message", "role": "assistant",
                                                                   "status": "in_progress", "content": []}}))
        step = int(48000 * self.delta_seconds) // 2 * 2
        separators = (",", ":") if self.compact_deltas else None
        for i in range(0, max(len(pcm), 1), step):
            chunk = pcm[i:i + step] or b"\0\0" * 2400
            await ws.send_text(json.dumps({"type": "response.output_audio.delta", "event_id": eid(),
                                           "response_id": rid, "item_id": iid, "output_index": 0,
                                           "content_index": 0, "delta": base64.b64encode(chunk).decode()},
                                          separators=separators))
        transcript = "I heard you."
        await ws.send_text(json.dumps({"type": "response.output_audio_transcript.done", "event_id": eid(),
                                       "response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0,
                                       "transcript": transcript}))
        done_item = {"id": iid, "type": "message", "role": "assistant", "status": "completed",
                     "content": [{"type": "output_audio", "transcript": transcript}]}
        await ws.send_text(json.dumps({"type": "response.output_item.done", "event_id": eid(), "response_id": rid,
                                       "output_index": 0, "item": done_item}))
        await ws.send_text(json.dumps({"type": "response.done", "event_id": eid(), "response": {
            "id": rid, "object": "realtime.response", "status": "completed", "output": [done_item],
            "usage": USAGE}}))
