"""``POST /v1/realtime/client_secrets`` (GA shapes) and ``POST /session`` (what the web page calls first).

On provider ``local`` the secret is minted here; on ``openai-realtime`` the gateway asks OpenAI for it
(``voicecall.gateway.secrets``). Both are rate limited per client and authenticated by the server's rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from voicecall.protocol.beta import BetaSession, param_to_beta
from voicecall.protocol.errors import ProtocolError
from voicecall.protocol.session import SessionConfig, Transcription, TurnDetection, apply_session_update

if TYPE_CHECKING:
    from voicecall.server.app import AppState
    from voicecall.server.auth import Principal


async def local_session_config(state: AppState, patch: dict[str, Any] | None) -> SessionConfig:
    """The session a local secret carries: server defaults, then the requested fields (validated)."""
    pipeline = await state.get_pipeline()
    local = state.config.voice_call.local
    td = TurnDetection(threshold=local.threshold, prefix_padding_ms=local.prefix_padding_ms,
                       silence_duration_ms=local.silence_duration_ms)
    cfg = SessionConfig(model=local.model, instructions=local.instructions, voice=local.voice, turn_detection=td,
                        transcription=Transcription(model=pipeline.stt.name) if local.input_transcription else None)
    if patch:
        patch = dict(patch)
        model = patch.pop("model", None)
        cfg = apply_session_update(cfg, patch, voices=set(pipeline.voice_names()), defaults=td, audio_started=False,
                                   stt_models={pipeline.stt.name})
        if isinstance(model, str) and model:
            cfg.model = model
    return cfg


def register(app: FastAPI, state: AppState) -> None:
    from voicecall.server.app import error_response

    async def _rate_limited(request: Request, label: str) -> JSONResponse | None:
        client = request.client.host if request.client else "unknown"
        ok, wait = await state.sessions.allow_mint(f"{client}|{label}")
        if not ok:
            return error_response(429, f"Too many client secrets requested; try again in {wait:.0f} s.",
                                  "rate_limit_exceeded", headers={"Retry-After": str(max(1, int(wait) + 1))})
        return None

    async def _json(request: Request) -> dict[str, Any]:
        if not (await request.body()):
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise ProtocolError("invalid_json", "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ProtocolError("invalid_request", "The request body must be a JSON object.")
        return body

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, exc: ProtocolError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message, "type": exc.type, "code": exc.code, "param": exc.param}},
                            status_code=400)

    @app.post("/v1/realtime/client_secrets")
    async def client_secrets(request: Request) -> Any:
        principal = state.auth.authenticate(request, allow_secret=False)
        if (limited := await _rate_limited(request, principal.label)) is not None:
            return limited
        body = await _json(request)
        for key in body:
            if key not in ("expires_after", "session"):
                raise ProtocolError("unknown_parameter", f"Unknown parameter: '{key}'.", key)
        ttl = _expires_after(body.get("expires_after"), state.config.server.client_secret_ttl_seconds, "expires_after")
        session = body.get("session")
        if session is not None and not isinstance(session, dict):
            raise ProtocolError("invalid_type", "session must be an object.", "session")
        return await _mint(principal, session, ttl)

    async def _mint(principal: Principal, session: dict[str, Any] | None, ttl: int) -> dict[str, Any] | JSONResponse:
        """A client secret for a trusted client: ``{value, expires_at, session}`` (GA)."""
        if state.provider == "openai-realtime":
            from voicecall.gateway.secrets import mint_upstream

            return await mint_upstream(state, session or {}, ttl, browser=False)
        cfg = await local_session_config(state, session)
        secret = state.secrets.mint(cfg.to_dict(), ttl, "local", client=principal.client)
        return {"value": secret.value, "expires_at": secret.expires_at, "session": secret.session}

    @app.post("/v1/realtime/sessions")
    async def beta_sessions(request: Request) -> Any:
        """The beta-era ``POST /v1/realtime/sessions`` (what seed-era backends call to mint their page's key): a
        flat beta session in; the beta session with ``client_secret: {value, expires_at}`` out."""
        principal = state.auth.authenticate(request, allow_secret=False)
        if (limited := await _rate_limited(request, principal.label)) is not None:
            return limited
        body = await _json(request)
        client_secret = body.pop("client_secret", None)
        ttl = state.config.server.client_secret_ttl_seconds
        if client_secret is not None:
            if not isinstance(client_secret, dict):
                raise ProtocolError("invalid_type", "client_secret must be an object.", "client_secret")
            ttl = _expires_after(client_secret.get("expires_after"), ttl, "client_secret.expires_after")
        beta = BetaSession()
        try:
            minted = await _mint(principal, beta.session_to_ga({k: v for k, v in body.items() if k != "type"}), ttl)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, exc.message, param_to_beta(exc.param), exc.type) from None
        if isinstance(minted, JSONResponse):
            return minted
        session = minted["session"] if isinstance(minted.get("session"), dict) else {}
        return {**beta.session_to_beta(session),
                "client_secret": {"value": minted["value"], "expires_at": minted["expires_at"]}}

    @app.post("/session")
    async def browser_session(request: Request) -> Any:
        principal = state.auth.authenticate(request, allow_secret=False)
        if (limited := await _rate_limited(request, principal.label)) is not None:
            return limited
        body = await _json(request)
        ttl = state.config.server.client_secret_ttl_seconds
        ice = _ice_for_browser(state)  # TURN credentials are meant for the browser
        if state.provider == "openai-realtime":
            from voicecall.gateway.secrets import mint_upstream

            return await mint_upstream(state, _browser_patch(state, body), ttl, browser=True, ice_servers=ice)
        patch: dict[str, Any] = {}
        if isinstance(body.get("voice"), str) and body["voice"]:
            patch.setdefault("audio", {}).setdefault("output", {})["voice"] = body["voice"]
        if isinstance(body.get("instructions"), str) and body["instructions"].strip():
            patch["instructions"] = body["instructions"]
        cfg = await local_session_config(state, patch)
        secret = state.secrets.mint(cfg.to_dict(), ttl, "local", client=principal.client)
        return {"value": secret.value, "expires_at": secret.expires_at, "session": secret.session,
                "provider": "local", "model": cfg.model, "calls_url": "/v1/realtime/calls", "ice_servers": ice,
                "pricing": {k: 0.0 for k in ("text_in", "text_cached", "text_out", "audio_in", "audio_cached",
                                             "audio_out")}}


def _expires_after(value: Any, default: int, param: str) -> int:
    """The lifetime ``{"anchor": "created_at", "seconds": 10..7200}`` asks for (``default`` when absent)."""
    if value is None:
        return default
    if not isinstance(value, dict) or value.get("anchor", "created_at") != "created_at":
        raise ProtocolError("invalid_value", "expires_after.anchor must be 'created_at'.", param + ".anchor")
    secs = value.get("seconds", default)
    if not isinstance(secs, int) or isinstance(secs, bool) or not 10 <= secs <= 7200:
        raise ProtocolError("invalid_value", "expires_after.seconds must be an integer from 10 to 7200.",
                            param + ".seconds")
    return secs


def _ice_for_browser(state: AppState) -> list[dict[str, Any]]:
    out = []
    for s in state.config.webrtc.ice_servers:
        entry: dict[str, Any] = {"urls": s.urls}
        if s.username:
            entry["username"] = s.username
        if s.credential:
            entry["credential"] = s.credential.get_secret_value()
        out.append(entry)
    return out


def _browser_patch(state: AppState, body: dict[str, Any]) -> dict[str, Any]:
    """Only the fields the configuration lets a browser choose (``openaiRealtime.browserOverrides``)."""
    allowed = set(state.config.voice_call.openai_realtime.browser_overrides)
    patch: dict[str, Any] = {}
    if "voice" in allowed and isinstance(body.get("voice"), str) and body["voice"]:
        patch["audio"] = {"output": {"voice": body["voice"]}}
    if "instructions" in allowed and isinstance(body.get("instructions"), str) and body["instructions"].strip():
        patch["instructions"] = body["instructions"]
    return patch
