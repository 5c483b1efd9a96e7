"""What the three gateway paths share: upstream URLs, the one place the key becomes a header, timeouts, the mapping
of upstream failures to clear client errors, and redaction.

The server's OpenAI key is read (``SecretStr.get_secret_value()``) only in :func:`auth_headers`. Nothing here logs a
header. Error messages sent to clients never contain upstream bodies of 401/403 answers (OpenAI echoes part of the
key there) and every other upstream message goes through :func:`redact` first.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx
from fastapi.responses import JSONResponse

from voicecall import __version__
from voicecall.protocol.errors import error_event
from voicecall.redaction import REDACTOR, safe_code, withheld

if TYPE_CHECKING:
    from voicecall.gateway.calls import CallSession
    from voicecall.server.app import AppState

log = logging.getLogger("voicecall.gateway")

USER_AGENT = f"voicecall/{__version__}"
_KEYLIKE = re.compile(r"\b(sk|rk|ek|sess)[-_][A-Za-z0-9_\-*.]{6,}")
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upper bounds on every upstream operation, in seconds: nothing the gateway does upstream can hang."""

    connect: float = 10.0
    """TCP + TLS connect of HTTP calls; the whole WebSocket opening handshake."""
    request: float = 10.0
    """A whole HTTP request (client secrets, calls, hangup), answer included (``openaiRealtime.requestTimeoutSeconds``)."""
    sideband_retry: float = 1.0
    """Pause between attempts to (re)join a call on the sideband WebSocket."""


@dataclass(slots=True)
class GatewayState:
    """The gateway's per-app state, kept on :class:`~voicecall.server.app.AppState` (no module-level state)."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    calls: dict[str, CallSession] = field(default_factory=dict)
    """Live WebRTC calls made through this server, by upstream call id (``rtc_…``)."""


def gateway_state(state: AppState) -> GatewayState:
    """The :class:`GatewayState` of this app (created on first use)."""
    gw = getattr(state, "gateway", None)
    if not isinstance(gw, GatewayState):
        wait = state.config.voice_call.openai_realtime.request_timeout_seconds
        gw = GatewayState(timeouts=Timeouts(connect=min(10.0, wait), request=wait))
        state.gateway = gw  # type: ignore[attr-defined]
    return gw


# ------------------------------------------------------------------------------------------ URLs and key
def base_url(state: AppState) -> str:
    """``openaiRealtime.baseUrl`` without a trailing slash (``https://api.openai.com/v1``)."""
    return state.config.voice_call.openai_realtime.base_url.rstrip("/")


def upstream_host(state: AppState) -> str:
    """The upstream host (and port) for messages: ``api.openai.com``."""
    return urlsplit(base_url(state)).netloc or base_url(state)


def ws_url(state: AppState, **params: str) -> str:
    """``{ws base}/realtime?…``: ``wss`` for an ``https`` base URL, ``ws`` for ``http``."""
    base = base_url(state)
    scheme, rest = base.split("://", 1)
    ws = ("wss" if scheme == "https" else "ws") + "://" + rest
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{ws}/realtime" + (f"?{query}" if query else "")


def auth_headers(state: AppState) -> dict[str, str]:
    """``Authorization: Bearer <server key>``: the only place the key is read. Never log the result."""
    key = state.config.voice_call.openai_realtime.api_key
    if key is None:  # the configuration refuses this, but be explicit
        raise UpstreamError(500, "gateway_misconfigured", "The server has no OpenAI API key configured.",
                            type="server_error")
    return {"Authorization": "Bearer " + key.get_secret_value()}


def redact(text: str, state: AppState | None = None) -> str:
    """``text`` without the server key (whole, in fragments or encoded), bearer tokens or anything shaped like an
    OpenAI key (:data:`voicecall.redaction.REDACTOR`, which knows every configured secret)."""
    if state is not None:
        key = state.config.voice_call.openai_realtime.api_key
        secret = key.get_secret_value() if key is not None else ""
        if secret:
            text = text.replace(secret, "***")
            REDACTOR.add([secret])
    return REDACTOR.redact(_KEYLIKE.sub(lambda m: m.group(1) + "-***", _BEARER.sub(r"\1***", text)))


def price_table(state: AppState) -> Any:
    """The app's :class:`~voicecall.store.pricing.PriceTable` (built-in prices plus ``store.prices``)."""
    table = getattr(state, "prices", None)
    if table is None:
        from voicecall.store.pricing import PriceTable

        table = PriceTable(state.config.store.prices)
    return table


def http_client(state: AppState) -> httpx.AsyncClient:
    """A client for one upstream exchange, with connect and total timeouts."""
    t = gateway_state(state).timeouts
    return httpx.AsyncClient(timeout=httpx.Timeout(t.request, connect=min(t.connect, t.request)),
                             headers={"User-Agent": USER_AGENT}, follow_redirects=False)


class NoDebugLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for the ``websockets`` client that is never enabled for DEBUG: at DEBUG, ``websockets`` logs every
    handshake header, and ours carries the key."""

    def isEnabledFor(self, level: int) -> bool:  # logging API name
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


def ws_logger() -> NoDebugLogger:
    """The logger to hand to ``websockets.connect`` for upstream sockets."""
    return NoDebugLogger(logging.getLogger("voicecall.gateway.upstream_ws"), {})


# ------------------------------------------------------------------------------------------ errors
class UpstreamError(Exception):
    """An upstream failure, already phrased for the client (no key, no upstream secrets).

    ``status`` is the HTTP status this server answers with; ``code`` the ``error.code`` (also used in WebSocket
    ``error`` events); ``close_code`` the WebSocket close code the relay uses.
    """

    def __init__(self, status: int, code: str, message: str, *, retry_after: str | None = None,
                 type: str = "server_error", close_code: int = 1011) -> None:  # `type`: the protocol field
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.type = type
        self.close_code = close_code

    def response(self) -> JSONResponse:
        """The JSON error answer (OpenAI's shape), with ``Retry-After`` when upstream gave one."""
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return JSONResponse({"error": {"message": self.message, "type": self.type, "code": self.code, "param": None}},
                            status_code=self.status, headers=headers)

    def event(self) -> dict[str, Any]:
        """The ``error`` server event for a WebSocket client."""
        return error_event(self.code, self.message, type=self.type)


def upstream_message(resp: httpx.Response, state: AppState) -> str:
    """The upstream ``error.message`` (or the start of the body), redacted."""
    text = ""
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
    except (ValueError, RecursionError):
        text = resp.text[:300]
    return redact(withheld(" ".join(text.split())[:500]), state)


def upstream_code(resp: httpx.Response) -> str | None:
    """Upstream's ``error.code`` when it is a plain identifier that quotes no credential."""
    try:
        body = resp.json()
    except (ValueError, RecursionError):
        return None
    err = body.get("error") if isinstance(body, dict) else None
    return safe_code(err.get("code") if isinstance(err, dict) else None)


def from_status(state: AppState, status: int, what: str, *, message: str = "", code: str | None = None,
                retry_after: str | None = None) -> UpstreamError:
    """Map an upstream HTTP status to the error this server gives its client.

    * 401 -> 502 ``upstream_unauthorized`` ("OpenAI rejected the server's API key"; upstream text dropped);
    * 403 -> 502 ``upstream_forbidden``;
    * 429 -> 429 ``upstream_rate_limited``, ``Retry-After`` passed through;
    * 5xx -> 502 ``upstream_unavailable``;
    * other 4xx -> the same status with upstream's (redacted) message and code: the client's request was wrong.
    """
    host = upstream_host(state)
    if status == 401:
        return UpstreamError(502, "upstream_unauthorized",
                             f"OpenAI rejected the server's API key ({what}: HTTP 401 from {host}). "
                             "The server operator must fix openaiRealtime.apiKey.", close_code=1011)
    if status == 403:
        return UpstreamError(502, "upstream_forbidden",
                             f"OpenAI refused the request ({what}: HTTP 403 from {host})"
                             + (f": {message}" if message else "."), close_code=1011)
    if status == 429:
        wait = f" Retry after {retry_after} s." if retry_after else ""
        return UpstreamError(429, "upstream_rate_limited",
                             f"OpenAI is rate limiting this server ({what}: HTTP 429 from {host})."
                             + (f" {message}" if message else "") + wait,
                             retry_after=retry_after, close_code=1013)
    if status >= 500:
        return UpstreamError(502, "upstream_unavailable",
                             f"OpenAI failed ({what}: HTTP {status} from {host}); try again later.",
                             close_code=1014)
    if 400 <= status < 500:
        return UpstreamError(status if status in (400, 404, 409, 413, 415, 422) else 400,
                             code or "upstream_bad_request",
                             f"OpenAI refused the request ({what}: HTTP {status})" + (f": {message}" if message else "."),
                             type="invalid_request_error", close_code=1008)
    return UpstreamError(502, "upstream_bad_response",
                         f"OpenAI gave an unexpected answer ({what}: HTTP {status} from {host}).", close_code=1014)


def from_response(state: AppState, resp: httpx.Response, what: str) -> UpstreamError:
    """:func:`from_status` for an :mod:`httpx` response."""
    msg = "" if resp.status_code == 401 else upstream_message(resp, state)
    return from_status(state, resp.status_code, what, message=msg, code=upstream_code(resp),
                       retry_after=resp.headers.get("retry-after"))


def from_transport(state: AppState, exc: BaseException, what: str) -> UpstreamError:
    """Timeouts -> 504 ``upstream_timeout``; refused / unreachable / broken -> 502 ``upstream_unreachable``."""
    host = upstream_host(state)
    t = gateway_state(state).timeouts
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        limit = t.request if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout) \
            else t.connect
        return UpstreamError(504, "upstream_timeout",
                             f"OpenAI did not answer in time ({what}: no answer from {host} within {limit:g} s).",
                             close_code=1014)
    return UpstreamError(502, "upstream_unreachable",
                         f"Could not reach OpenAI ({what}: {host}: {type(exc).__name__}"
                         + (f": {redact(str(exc), state)[:200]}" if str(exc) else "") + ").", close_code=1014)


async def request(state: AppState, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
    """One upstream HTTP request with the server key; a non-2xx answer or a transport failure raises
    :class:`UpstreamError`."""
    url = base_url(state) + path
    headers = {**kwargs.pop("headers", {}), **auth_headers(state)}
    try:
        async with http_client(state) as client:
            resp = await client.request(method, url, headers=headers, **kwargs)
    except httpx.HTTPError as exc:
        err = from_transport(state, exc, what)
        log.warning("gateway: %s failed: %s", what, err.message)
        raise err from None
    if resp.status_code >= 300:
        err = from_response(state, resp, what)
        log.warning("gateway: %s: upstream answered HTTP %d -> %d %s", what, resp.status_code, err.status, err.code)
        raise err
    return resp
