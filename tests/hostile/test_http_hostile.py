"""Hostile HTTP clients: silent TCP connections, half-sent headers and bodies, idle keep-alive, and forged
``X-Forwarded-For`` headers (believed only from ``server.trustedProxies``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from tests.conftest import ServerThread
from tests.hostile.conftest import ECHO_STACK

TIMEOUTS = {"server.headerTimeoutSeconds": 1, "server.bodyTimeoutSeconds": 1, "server.keepAliveSeconds": 1}


async def _read_all(reader: asyncio.StreamReader, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(-1), timeout)




async def test_slow_headers_bodies_and_idle_keepalive_are_cut(make_server: Callable[..., ServerThread]) -> None:
    srv = make_server(**TIMEOUTS, **{"plugins.voice-call.local.preload": False})
    conns = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(200)]
    for n, (_, writer) in enumerate(conns):
        if n % 2:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
    outcomes = await asyncio.gather(*(_read_all(reader) for reader, _ in conns))
    assert all(out == b"" for out in outcomes)  # every one closed by the server, none answered
    for _, writer in conns:
        writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                 b"content-length: 100\r\n\r\n{\"sess")
    answer = await _read_all(reader)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await _read_all(reader)  # answered, then closed once idle for keepAliveSeconds
    assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
    writer.close()


async def _mint(srv: ServerThread, forwarded_for: str) -> int:
    async with httpx.AsyncClient(timeout=60) as http:
        resp = await http.post(srv.http + "/v1/realtime/client_secrets", json={},
                               headers={"X-Forwarded-For": forwarded_for})
        return resp.status_code


async def test_forwarded_for_counts_only_from_trusted_proxies(make_server: Callable[..., ServerThread]) -> None:
    common = {"server.mintRatePerMinute": 2, **ECHO_STACK}
    direct = make_server(**common)
    statuses = [await _mint(direct, f"203.0.113.{n}") for n in range(4)]
    assert statuses[:2] == [200, 200] and statuses[2:] == [429, 429], statuses  # a forged header changes nothing
    proxied = make_server(**common, **{"server.trustedProxies": ["127.0.0.1/32"]})
    statuses = [await _mint(proxied, f"203.0.113.{n}") for n in range(4)]
    assert statuses == [200] * 4, statuses  # behind a trusted proxy, each forwarded client has its own budget
