"""The ASGI application (FastAPI on uvicorn): one process, many sessions, any transport.

Routes by provider:

=================================  ==========================================  ===========================
route                              provider ``local``                          provider ``openai-realtime``
=================================  ==========================================  ===========================
``GET /healthz``                   liveness, provider, live sessions           same
``GET /v1/realtime`` (WebSocket)   engine session (transports/websocket.py)    relay (gateway/relay.py)
``GET /api/realtime`` (WebSocket)  alias of ``/v1/realtime`` (seed-era clients)  same
``POST /v1/realtime/client_secrets`` mint a local ``ek_`` secret               mint upstream (gateway)
``POST /session``                  secret + ``calls_url`` for the web page     same, upstream secret
``POST /v1/realtime/calls``        aiortc peer (transports/webrtc.py)          SDP proxy + sideband
``/api/conversations…``            history (store/api.py)                      same
``GET /``                          the web client (web/)                       same
=================================  ==========================================  ===========================
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from voicecall import __version__
from voicecall.cluster.metrics import CONTENT_TYPE, Metrics
from voicecall.cluster.signing import SecretSigner
from voicecall.cluster.state import SharedState, open_state
from voicecall.config import Config
from voicecall.protocol.beta import requested as beta_requested
from voicecall.server.auth import Authenticator, AuthError, offered_subprotocols, presented_token
from voicecall.server.limits import Admission
from voicecall.server.origins import OriginGuard, OriginPolicy
from voicecall.server.secrets import SecretStore

log = logging.getLogger("voicecall")


class AppState:
    """Everything a route needs; one instance per app (no module-level globals)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        srv = config.server
        self.replica_id = srv.replica_id or f"{socket.gethostname()}-{srv.port}"
        self.internal_url = (srv.internal_url or f"http://{srv.host}:{srv.port}").rstrip("/")
        self.shared: SharedState = open_state(config.state.url, lease_seconds=config.state.lease_seconds,
                                              prefix=config.state.key_prefix)
        keys = [k.get_secret_value() for k in ([srv.secret_key] if srv.secret_key else []) + srv.previous_secret_keys]
        self.secrets = SecretStore(SecretSigner(keys), shared=self.shared if self.shared.kind != "memory" else None)
        self.auth = Authenticator([k.get_secret_value() for k in srv.api_keys], self.secrets)
        self.metrics = Metrics(self.replica_id)
        self.sessions = Admission(config, self.shared, self.metrics)
        self.metrics.add_live(self.sessions.live_figures)
        """The gate every session passes (``await sessions.admit(client, transport)``); ``.count``: live here."""
        self.pipeline: Any = None  # voicecall.speech.registry.Pipeline once loaded (provider local)
        self.store: Any = None  # voicecall.store.base.Store
        from voicecall.store.pricing import PriceTable

        self.prices = PriceTable(config.store.prices)  # a bad price entry stops start-up here, with its key
        self.started = time.time()
        self._pipeline_lock = asyncio.Lock()

    @property
    def provider(self) -> str:
        return self.config.voice_call.provider

    async def get_pipeline(self) -> Any:
        """The local speech pipeline, loaded once per process (on first use when not preloaded)."""
        if self.pipeline is None:
            async with self._pipeline_lock:
                if self.pipeline is None:
                    from voicecall.speech.registry import load_pipeline

                    def load() -> Any:
                        pipeline = load_pipeline(self.config.voice_call.local, _progress)
                        pipeline.warm_up(_progress)
                        return pipeline

                    self.pipeline = await asyncio.to_thread(load)
        return self.pipeline


async def readiness(state: AppState) -> tuple[dict[str, bool], dict[str, bool]]:
    """(checks that decide readiness, checks that only report a degraded state)."""
    checks = {"not_draining": not state.sessions.draining,
              "session_slot_free": state.sessions.count < state.sessions.max_sessions}
    degraded: dict[str, bool] = {}
    if state.provider == "local":
        checks["models_loaded"] = state.pipeline is not None
    try:
        checks["store"] = bool(await asyncio.wait_for(state.store.ping(), 2.0)) if state.store is not None else False
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["store"] = False
    if state.shared.kind != "memory":
        st = state.config.state
        needed = not st.fail_open or st.max_spend_per_client_per_day_usd is not None
        # Without Redis this replica still takes sessions when it fails open: then an outage is reported, not a
        # reason to leave the balancer (every replica would leave at once).
        (checks if needed else degraded)["shared_state"] = await state.shared.ping()
    return checks, degraded


async def _sweep_dead_replicas(state: AppState) -> None:
    """Close the history of conversations whose replica died (no heartbeat in the shared state)."""
    from voicecall.cluster.state import StateUnavailable

    while True:
        await asyncio.sleep(state.config.state.lease_seconds)
        try:
            open_on = set(await state.store.open_replicas())
            if not open_on - {state.replica_id}:
                continue
            live = await state.shared.live_replicas()
            for dead in open_on - set(live) - {state.replica_id}:
                closed = await state.store.close_dangling(replica=dead)
                if closed:
                    log.warning("replica %s is gone: closed %d conversation(s) it left open", dead, closed)
        except StateUnavailable:
            continue
        except Exception:
            log.exception("sweeping dead replicas' conversations failed")


def ws_hard_limit(config: Config) -> int:
    """The WebSocket frame size past which uvicorn closes the socket (1009). Messages between
    ``server.maxMessageBytes`` and this get an ``error`` event instead, and the session goes on."""
    return max(config.server.max_message_bytes * 4, 4 << 20)


def uvicorn_options(config: Config) -> dict[str, Any]:
    """Connection settings every way of running the app shares (``voicecall serve``, tests, benchmarks): WebSocket
    sizes and pings, HTTP header/body deadlines (:mod:`voicecall.server.http_timeouts`), keep-alive, the connection
    cap, and which proxies' ``X-Forwarded-For`` counts (``server.trustedProxies``; none by default).

    permessage-deflate is off: realtime traffic is mostly base64 audio, which does not compress, and deflating
    every frame costs CPU on the audio path (OpenAI clients offer it by default). The WebSocket protocol is
    uvicorn's sans-I/O one with voicecall's frame-level extension (:mod:`voicecall.server.ws_protocol`), which the
    relay uses to move audio frames without a task or queue per message."""
    from voicecall.server.http_timeouts import http_protocol
    from voicecall.server.ws_protocol import FrameWebSocketProtocol

    server = config.server
    return {"ws": FrameWebSocketProtocol, "ws_max_size": ws_hard_limit(config), "ws_ping_interval": 20.0,
            "ws_ping_timeout": 20.0, "ws_per_message_deflate": False,
            "http": http_protocol(server.header_timeout_seconds, server.body_timeout_seconds),
            "timeout_keep_alive": server.keep_alive_seconds, "limit_concurrency": server.max_connections,
            # X-Forwarded-For / -Proto count only from server.trustedProxies (uvicorn's default trusts loopback)
            "proxy_headers": bool(server.trusted_proxies), "forwarded_allow_ips": list(server.trusted_proxies),
            # https:// and wss:// served directly (clients such as openai-node 7 only speak wss://)
            **({"ssl_certfile": server.tls_cert_file, "ssl_keyfile": server.tls_key_file} if server.tls_cert_file
               else {})}


def _progress(message: str) -> None:
    log.info("%s", message)


def error_response(status: int, message: str, code: str | None = None, type: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "code": code, "param": None}}, status_code=status,
                        headers=headers)


def _store_description(store: Any) -> str:
    """Where history goes, for the start-up log: a SQLite file by its resolved absolute path (``sqlite:///x.db``
    is relative to the working directory, a common surprise), other stores without their password."""
    from pathlib import Path

    path = getattr(store, "path", None)
    if isinstance(path, str) and not getattr(store, "in_memory", False):
        return f"SQLite database {Path(path).resolve()}"
    return str(getattr(store, "description", type(store).__name__))


def create_app(config: Config) -> FastAPI:
    from voicecall.redaction import config_secrets, install_log_redaction

    install_log_redaction(config_secrets(config))  # before anything logs: every logger, every handler
    state = AppState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from voicecall.store import open_store

        state.store = open_store(config.store.url)
        if config.server.replica_id or state.shared.kind != "memory":
            state.store.replica = state.replica_id
        await state.store.open()
        log.info("history: %s", _store_description(state.store))
        closed = await state.store.close_dangling()
        if closed:
            log.info("closed %d conversation(s) left open by an earlier crash", closed)
        await state.shared.start(state.replica_id, state.internal_url)
        if state.shared.kind != "memory":
            log.info("shared state: %s (replica %s, reachable by other replicas at %s)",
                     state.shared.kind, state.replica_id, state.internal_url)
        sweeper = asyncio.create_task(_sweep_dead_replicas(state)) if state.shared.kind != "memory" else None
        if state.provider == "local" and config.voice_call.local.preload:
            t0 = time.monotonic()
            await state.get_pipeline()
            log.info("models ready in %.1f s", time.monotonic() - t0)
        # Everything allocated so far (models, modules) lives as long as the process: keep the garbage collector
        # from walking it again and again (shorter GC pauses in the audio path).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            calls = getattr(state, "webrtc_calls", None)  # transports/webrtc_routes.py: hang up live WebRTC calls
            if calls is not None:
                await calls.close_all()
            await state.shared.close()
            await state.store.close()

    app = FastAPI(title="voicecall", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.vc = state
    app.add_middleware(OriginGuard, policy=OriginPolicy(config.server.allowed_origins, config.server.allowed_hosts,
                                                         config.server.host, config.server.internal_url))

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        return error_response(exc.status, exc.message, "invalid_api_key" if exc.status == 401 else None)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers. (Readiness to take sessions: ``/readyz``.)"""
        return {"status": "ok", "version": __version__, "provider": state.provider, "sessions": state.sessions.count,
                "models_loaded": state.pipeline is not None if state.provider == "local" else None,
                "replica": state.replica_id, "draining": state.sessions.draining}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: models loaded, store reachable, not draining, a session slot free, and the shared state
        reachable when sessions need it (``state.failOpen: false`` or a spend limit); else its outage is listed
        under ``degraded``."""
        checks, degraded = await readiness(state)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks, "degraded": [k for k, ok in degraded.items() if not ok],
                             "replica": state.replica_id, "sessions": state.sessions.count},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        state.auth.authenticate(request, allow_secret=False)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.websocket("/v1/realtime")
    async def realtime_ws(ws: WebSocket) -> None:
        offered = offered_subprotocols(ws)
        subprotocol = "realtime" if "realtime" in offered else None
        beta = beta_requested(ws.headers, offered)
        if beta and config.server.beta_protocol == "refuse":
            await _refuse_beta(ws, subprotocol)
            return
        await state.secrets.prefetch(presented_token(ws))  # an OpenAI secret another replica minted (gateway)
        try:
            principal = state.auth.authenticate(ws)
        except AuthError as exc:
            await ws.close(code=4001 if exc.status == 401 else 4003, reason=exc.message[:120])
            return
        if state.provider == "openai-realtime":
            from voicecall.gateway.relay import relay_websocket

            await relay_websocket(ws, state, principal, subprotocol, beta=beta)
            return
        if ws.query_params.get("call_id"):  # sideband onto a local WebRTC call (gateway/local_sideband.py)
            from voicecall.cluster.forward import forward_websocket, owner_elsewhere

            try:
                owner = await owner_elsewhere(state, ws, "GET", ws.query_params["call_id"])
            except PermissionError:
                await ws.close(code=4003, reason="invalid forwarding signature")
                return
            if owner is not None:  # the call runs on another replica
                await forward_websocket(state, ws, owner, subprotocol)
                return
            if beta:  # a sideband is a backend of this decade: GA only
                await _refuse_beta(ws, subprotocol)
                return
            from voicecall.gateway.local_sideband import serve_local_sideband

            await serve_local_sideband(ws, state, principal, subprotocol)
            return
        from voicecall.transports.websocket_session import serve_engine_websocket

        await serve_engine_websocket(ws, state, principal, subprotocol, beta=beta)

    # The seed-era clients' WebSocket proxy path (``/api/realtime?model=…``): the same endpoint, both providers.
    app.add_api_websocket_route("/api/realtime", realtime_ws)

    from voicecall.server.routes_secrets import register as register_secrets

    register_secrets(app, state)
    with contextlib.suppress(ImportError):
        from voicecall.transports.webrtc_routes import register as register_webrtc

        register_webrtc(app, state)
    _register_history(app, state)
    web = resources.files("voicecall") / "web"
    app.mount("/", StaticFiles(directory=str(web), html=True), name="web")
    return app


def _register_history(app: FastAPI, state: AppState) -> None:
    from fastapi import Depends

    from voicecall.store.api import make_router

    async def require_auth(request: Request) -> None:
        state.auth.authenticate(request, allow_secret=False)

    app.include_router(make_router(lambda: state.store, Depends(require_auth)))


async def _refuse_beta(ws: WebSocket, subprotocol: str | None) -> None:
    """Behave as OpenAI does since 2026 (``server.betaProtocol: refuse``): an error event, then close 4000."""
    import json

    from voicecall.protocol.errors import error_event

    await ws.accept(subprotocol=subprotocol)
    await ws.send_text(json.dumps(error_event(
        "beta_api_shape_disabled",
        "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.")))
    await ws.close(code=4000, reason="invalid_request_error.beta_api_shape_disabled")
