"""HTTP connection timeouts uvicorn does not have: a deadline for a request's headers and one for its body.

uvicorn closes idle kept-alive connections (``timeout_keep_alive``) but waits forever for a connection that sends
nothing, or dribbles its headers or body a byte at a time (slowloris): each such connection holds a socket and
memory. :func:`http_protocol` builds uvicorn's HTTP protocol (httptools) with two timers:

* **headers** (``server.headerTimeoutSeconds``): from the connection's start, or from the first byte of the next
  request on a kept-alive connection, until the request's headers are complete; then the connection is dropped;
* **body** (``server.bodyTimeoutSeconds``): from the end of the headers until the whole body arrived; then the
  client gets ``408 Request Timeout`` (if nothing was answered yet) and the connection is closed.

A WebSocket upgrade stops both timers: from there the WebSocket's own limits apply (``server.firstEventSeconds``,
``server.idleSessionSeconds``, pings).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("voicecall.server")

_BODY_408 = b'{"error":{"message":"The request body did not arrive in time.","type":"invalid_request_error",' \
    b'"code":"request_timeout","param":null}}'


def http_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with the two deadlines (pass it as ``uvicorn.Config(http=...)``)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TimedHttpProtocol(HttpToolsProtocol):
        _vc_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._vc_arm(header_timeout, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._vc_disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._vc_timer is None:  # the next request on a kept-alive connection
                self._vc_arm(header_timeout, "headers")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._vc_arm(body_timeout, "body")

        def on_message_complete(self) -> None:
            self._vc_disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._vc_disarm()
            super().handle_websocket_upgrade()

        def _vc_arm(self, seconds: float, what: str) -> None:
            self._vc_disarm()
            self._vc_timer = self.loop.call_later(seconds, self._vc_expired, what, seconds)

        def _vc_disarm(self) -> None:
            if self._vc_timer is not None:
                self._vc_timer.cancel()
                self._vc_timer = None

        def _vc_expired(self, what: str, seconds: float) -> None:
            self._vc_timer = None
            transport = self.transport
            if transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            log.info("closing HTTP connection from %s: request %s not complete within %g s", client, what, seconds)
            cycle = self.cycle
            if what == "body" and cycle is not None and not cycle.response_started:
                cycle.response_started = cycle.response_complete = True  # the app's answer, if any, is void
                transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                b"connection: close\r\ncontent-length: " + str(len(_BODY_408)).encode() + b"\r\n\r\n"
                                + _BODY_408)
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()  # an app waiting for the body gets http.disconnect
            transport.close()

    return TimedHttpProtocol
