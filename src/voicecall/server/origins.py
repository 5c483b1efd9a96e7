"""Who may call this server from a browser: one origin policy for CORS and WebSocket upgrades, and a Host check.

* ``server.allowedOrigins`` decides which web pages may use the server. It drives CORS on every HTTP route
  (preflight ``OPTIONS`` answered here, before routing; ``Access-Control-Allow-Origin`` on the answers; requests
  from other origins get 403 ``origin_not_allowed``) and the ``Origin`` check of WebSocket upgrades (a browser
  page of another origin gets 403). Clients that send no ``Origin`` header are not browsers: they pass, and are
  judged by their key as before. The server's own origin (the page at ``/``) is always allowed; when the list is
  not set, loopback origins (``http://localhost:<any port>``, ``127.0.0.1``, ``[::1]``) are too.
* ``server.allowedHosts`` refuses requests whose ``Host`` header names another site (403 ``host_not_allowed``):
  DNS rebinding, where a foreign page's own name is pointed at this server's address, always carries the
  attacker's name in ``Host``. IP addresses are always accepted (a rebinding attack cannot produce one).

:class:`OriginGuard` is plain ASGI middleware: it looks at the headers once per request or WebSocket handshake and
never touches messages after that.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSE_HEADERS = "Location, Retry-After"
"""The Agents SDK reads the call id of a WebRTC call from ``Location``."""
PREFLIGHT_MAX_AGE = "600"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without the scheme's default port, or ``None`` if ``origin`` is not
    an origin (``"null"`` stays ``"null"``)."""
    origin = origin.strip()
    if origin == "null":
        return origin
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if not scheme or not host or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def host_name(host_header: str) -> str:
    """The name in a ``Host`` header, lower case, without port or IPv6 brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).rstrip(".")  # "localhost." is localhost


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin_pattern(entry: str) -> re.Pattern[str]:
    """``https://*.example.com`` -> a pattern where ``*`` stands for one or more name labels (never a port or a
    path)."""
    return re.compile("^" + re.escape(entry).replace(r"\*", r"[a-z0-9-]+(?:\.[a-z0-9-]+)*") + "$")


class OriginPolicy:
    """The decisions; :class:`OriginGuard` applies them. ``origins``/``hosts`` ``None`` = the defaults."""

    def __init__(self, origins: Iterable[str] | None, hosts: Iterable[str] | None, server_host: str,
                 internal_url: str | None = None) -> None:
        self.default_origins = origins is None
        entries = [e.strip().lower().rstrip("/") for e in origins or ()]
        self.any_origin = "*" in entries
        self.exact: set[str] = set()
        self.patterns: list[re.Pattern[str]] = []
        for e in entries:
            if e == "*":
                continue
            if "*" in e:
                self.patterns.append(_origin_pattern(e))
            else:
                self.exact.add(normalize_origin(e) or e)
        if hosts is None:
            names = {*LOOPBACK_NAMES, "*.localhost", server_host.lower()}
            try:
                me = socket.gethostname().lower()
            except OSError:  # pragma: no cover
                me = ""
            if me:
                names |= {me, f"{me}.local"}
            hosts = names - {"0.0.0.0", "::", ""}
        self.host_entries = [h.strip().lower() for h in hosts]
        internal = urlsplit(internal_url).hostname if internal_url else None
        if internal:  # other replicas forward requests to this name (server.internalUrl)
            self.host_entries.append(internal.lower())
        self.any_host = "*" in self.host_entries

    def allows_host(self, host_header: str | None) -> bool:
        if host_header is None or self.any_host:
            return True  # no Host (HTTP/1.0 tools): not a browser
        name = host_name(host_header)
        if is_ip(name):
            return True
        for entry in self.host_entries:
            if name == entry:
                return True
            if entry.startswith("*.") and name.endswith(entry[1:]):
                return True
            if entry.startswith(".") and (name == entry[1:] or name.endswith(entry)):
                return True
        return False

    def allows_origin(self, origin: str, host_header: str | None) -> bool:
        if self.any_origin:
            return True
        norm = normalize_origin(origin)
        if norm is None:
            return False
        if host_header is not None and norm != "null":
            # the server's own origin: the page at "/" (same host and port as the request, http or https)
            own = norm.split("://", 1)[1]
            if own == host_header.strip().lower() or own == _without_default_port(host_header):
                return True
        if norm in self.exact or any(p.match(norm) for p in self.patterns):
            return True
        if self.default_origins and norm != "null":
            return is_loopback(host_name(norm.split("://", 1)[1]))
        return False


def _without_default_port(host_header: str) -> str:
    host = host_header.strip().lower()
    for suffix in (":80", ":443"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers that matter here (the last of a repeated one)."""
    return {k.lower(): v for k, v in scope.get("headers") or ()}


class OriginGuard:
    """ASGI middleware applying an :class:`OriginPolicy` (see the module docstring)."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get(b"host")
        host_text = host.decode("latin-1") if host is not None else None
        if not self.policy.allows_host(host_text):
            await _refuse(kind, receive, send, "host_not_allowed", "This server does not answer to the host name "
                          f"{(host_text or '')[:100]!r}; add it to server.allowedHosts.")
            return
        raw_origin = headers.get(b"origin")
        if raw_origin is None:  # not a browser (or a same-origin GET/HEAD): judged by its key as before
            await self.app(scope, receive, send)
            return
        origin = raw_origin.decode("latin-1")
        allowed = self.policy.allows_origin(origin, host_text)
        if kind == "websocket":
            if not allowed:
                await _refuse(kind, receive, send, "origin_not_allowed", "")
                return
            await self.app(scope, receive, send)
            return
        preflight = scope["method"] == "OPTIONS" and b"access-control-request-method" in headers
        if not allowed:
            await _refuse(kind, receive, send, "origin_not_allowed", f"Requests from the origin {origin[:100]!r} are "
                          "not allowed by this server (server.allowedOrigins).")
            return
        if preflight:
            await _preflight(send, origin, headers)
            return
        cors = [(b"access-control-allow-origin", raw_origin), (b"vary", b"Origin"),
                (b"access-control-expose-headers", EXPOSE_HEADERS.encode())]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send, origin: str, headers: dict[bytes, bytes]) -> None:
    requested = headers.get(b"access-control-request-headers", b"").decode("latin-1")
    allow_headers = ", ".join(h.strip() for h in requested.split(",") if _TOKEN.match(h.strip()))
    out = [(b"access-control-allow-origin", origin.encode("latin-1")),
           (b"access-control-allow-methods", ALLOW_METHODS.encode()),
           (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
           (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
           (b"content-length", b"0")]
    if allow_headers:
        out.append((b"access-control-allow-headers", allow_headers.encode("latin-1")))
    if headers.get(b"access-control-request-private-network", b"").lower() == b"true":
        out.append((b"access-control-allow-private-network", b"true"))  # a public page calling a LAN server
    await send({"type": "http.response.start", "status": 204, "headers": out})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(kind: str, receive: Receive, send: Send, code: str, message: str) -> None:
    """403: an OpenAI-shaped error for HTTP; a refused handshake (HTTP 403) for WebSocket."""
    if kind == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008, "reason": code})
        return
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "code": code,
                                 "param": None}}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
