"""Client secrets minted upstream: ``POST {baseUrl}/realtime/client_secrets`` with the server key.

The server decides the session (model, instructions, voice; a trusted backend client may add its own fields, a
browser only the ``browserOverrides``, see :mod:`voicecall.gateway.policy`). The ``ek_…`` OpenAI returns is
remembered in ``state.secrets`` (provider ``openai-realtime``) so that a browser can present it to *this* server's
``/v1/realtime/calls`` and ``/v1/realtime``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

from voicecall.gateway import policy
from voicecall.gateway.upstream import UpstreamError, price_table, request

if TYPE_CHECKING:
    from voicecall.server.app import AppState

log = logging.getLogger("voicecall.gateway")

PRICE_FIELDS = ("text_in", "text_cached", "text_out", "audio_in", "audio_cached", "audio_out")


def pricing(state: AppState, model: str) -> dict[str, float]:
    """USD per 1M tokens for ``model`` (built-in table plus ``store.prices``), the six keys the web page shows."""
    price = price_table(state).price_for(model).as_dict()
    return {k: price.get(k, 0.0) for k in PRICE_FIELDS}


async def mint_upstream(state: AppState, session_patch: dict[str, Any], ttl: int, browser: bool,
                        ice_servers: list[dict[str, Any]] | None = None) -> dict[str, Any] | JSONResponse:
    """Ask OpenAI for a client secret.

    ``browser=False`` (``POST /v1/realtime/client_secrets``, a trusted client): ``session_patch`` is the client's
    ``session``, taken whole except the model. Returns OpenAI's answer ``{value, expires_at, session}``.

    ``browser=True`` (``POST /session``): ``session_patch`` holds only what ``browserOverrides`` allows (filtered
    again here). Returns ``{value, expires_at, session, provider, model, calls_url, ice_servers, pricing}``.

    Upstream failures become a JSON error response (see :func:`voicecall.gateway.upstream.from_status`).
    """
    cfg = state.config.voice_call.openai_realtime
    session = policy.mint_session(cfg, session_patch, trusted=not browser)
    body = {"expires_after": {"anchor": "created_at", "seconds": int(ttl)}, "session": session}
    try:
        resp = await request(state, "POST", "/realtime/client_secrets", "client secret", json=body)
        data = resp.json()
    except UpstreamError as exc:
        return exc.response()
    except ValueError:
        return UpstreamError(502, "upstream_bad_response",
                             "OpenAI answered the client-secret request with something that is not JSON.").response()
    value = data.get("value") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        return UpstreamError(502, "upstream_bad_response",
                             "OpenAI's client-secret answer has no 'value'.").response()
    expires_at = data.get("expires_at")
    if not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool):
        expires_at = int(time.time()) + int(ttl)
        data["expires_at"] = expires_at
    upstream_session = data.get("session") if isinstance(data.get("session"), dict) else session
    remembered = state.secrets.remember(value, int(expires_at), upstream_session, "openai-realtime")
    try:
        await state.secrets.share(remembered)  # other replicas (state.url: redis) accept it too
    except Exception as exc:  # noqa: BLE001 - the shared state is optional for this replica's own use of it
        log.warning("gateway: could not share the client secret with other replicas: %s", type(exc).__name__)
    log.info("gateway: minted an upstream client secret %s… (%s, expires in %d s)", value[:7],
             "browser" if browser else "client_secrets", int(expires_at - time.time()))
    if not browser:
        return data
    asked = upstream_session.get("model")
    model: str = asked if isinstance(asked, str) and asked else cfg.model
    return {"value": value, "expires_at": int(expires_at), "session": upstream_session,
            "provider": "openai-realtime", "model": model, "calls_url": "/v1/realtime/calls",
            "ice_servers": ice_servers or [], "pricing": pricing(state, model)}
