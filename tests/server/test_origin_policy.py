"""The origin policy on a real server: CORS (preflight and answers) on the browser-facing routes for allowed and
refused origins, the ``Origin`` check of WebSocket upgrades, the ``Host`` check (DNS rebinding), and the
``/api/realtime`` alias. Browsers are played by httpx and websockets sending the headers a browser sends."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import websockets

from tests.gateway.gwtools import ECHO_STACK
from voicecall.server.origins import OriginPolicy, normalize_origin

APP = "https://app.example.com"
EVIL = "https://evil.example"
KEY = "origin-test-key"
ROUTES = ("/v1/realtime/calls", "/session", "/v1/realtime/client_secrets", "/api/conversations")


def _preflight(origin: str, method: str = "POST", headers: str = "authorization, content-type, x-openai-agents-sdk",
               **extra: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers,
            **extra}


@pytest.fixture
def server(make_server: Any) -> Any:
    return make_server(**ECHO_STACK, **{"server.apiKeys": [KEY], "server.allowedOrigins": [APP, "https://*.example.org"],
                                        "plugins.voice-call.local.preload": False})


async def test_cors_for_an_allowed_origin_and_a_refused_one(server: Any) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server.http, timeout=10) as http:
        for path in ROUTES:
            r = await http.options(path, headers=_preflight(APP, "GET" if path.startswith("/api") else "POST"))
            assert r.status_code == 204, (path, r.status_code, r.text)
            assert r.headers["access-control-allow-origin"] == APP
            assert "POST" in r.headers["access-control-allow-methods"]
            assert "x-openai-agents-sdk" in r.headers["access-control-allow-headers"].lower()
            assert "origin" in r.headers["vary"].lower()
            refused = await http.options(path, headers=_preflight(EVIL))
            assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        # a wildcard entry, and Chrome's private-network preflight (a public page calling a LAN server)
        r = await http.options("/session", headers=_preflight("https://shop.example.org",
                                                              **{"Access-Control-Request-Private-Network": "true"}))
        assert r.status_code == 204 and r.headers["access-control-allow-private-network"] == "true"
        # the answers carry the CORS headers; Location is exposed (the Agents SDK reads the call id from it)
        r = await http.post("/v1/realtime/client_secrets", json={}, headers={**auth, "Origin": APP})
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == APP
        assert "location" in r.headers["access-control-expose-headers"].lower()
        assert r.json()["value"].startswith("ek_")
        # a foreign page cannot even make the request (no secret is minted for it)
        r = await http.post("/v1/realtime/client_secrets", json={}, headers={**auth, "Origin": EVIL})
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in r.headers
        # the page the server serves itself (its own origin) is always allowed; loopback origins are not once the
        # list is set; a request without Origin (not a browser) is judged by its key as before
        r = await http.post("/session", json={}, headers={**auth, "Origin": server.http})
        assert r.status_code == 200, r.text
        r = await http.post("/session", json={}, headers={**auth, "Origin": "http://localhost:5173"})
        assert r.status_code == 403
        assert (await http.get("/api/conversations", headers=auth)).status_code == 200
        assert (await http.get("/api/conversations")).status_code == 401


async def test_websocket_origin_check(server: Any) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(server.ws, origin=EVIL,  # type: ignore[arg-type]
                                      subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]):  # type: ignore[list-item]
            pass
    assert refused.value.response.status_code == 403
    # no Origin (a backend) + key: accepted as before; an allowed page with the key subprotocol: accepted
    async with websockets.connect(server.ws, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    alias = server.ws.replace("/v1/realtime", "/api/realtime") + "?model=gpt-4o-realtime-preview"
    async with websockets.connect(alias, origin=APP,  # type: ignore[arg-type]
                                  subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created" and created["session"]["model"] == "gpt-4o-realtime-preview"


async def test_default_policy_and_host_check(make_server: Any) -> None:
    srv = make_server(**ECHO_STACK, **{"plugins.voice-call.local.preload": False})
    async with httpx.AsyncClient(base_url=srv.http, timeout=10) as http:
        r = await http.options("/v1/realtime/calls", headers=_preflight("http://localhost:5173"))
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert (await http.options("/v1/realtime/calls", headers=_preflight(EVIL))).status_code == 403
        # DNS rebinding: a page of evil.example whose name now points at this server
        r = await http.get("/api/conversations", headers={"Host": "evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "host_not_allowed"
        r = await http.get("/api/conversations", headers={"Host": f"evil.example:{srv.port}", "Origin": EVIL})
        assert r.status_code == 403
        assert (await http.get("/api/conversations", headers={"Host": f"localhost:{srv.port}"})).status_code == 200
        assert (await http.get("/healthz", headers={"Host": "10.1.2.3:8080"})).status_code == 200  # an address
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(srv.ws, additional_headers={"Host": "evil.example"}):
            pass
    assert refused.value.response.status_code == 403


def test_policy_rules() -> None:
    assert normalize_origin("HTTPS://App.Example.com:443/") == "https://app.example.com"
    assert normalize_origin("http://[::1]:3000") == "http://[::1]:3000"
    assert normalize_origin("https://a.example/path") is None
    p = OriginPolicy(["https://*.example.org"], ["voice.example.com", ".corp.example"], "0.0.0.0")
    assert p.allows_origin("https://a.b.example.org", None) and not p.allows_origin("https://example.org", None)
    assert not p.allows_origin("https://evil.com:1.example.org", None)
    assert not p.allows_origin("http://localhost:3000", None)  # loopback only by default
    assert p.allows_origin("https://voice.example.com", "voice.example.com")  # own origin (behind TLS)
    assert p.allows_host("voice.example.com:443") and p.allows_host("x.corp.example") and p.allows_host("[::1]:80")
    assert not p.allows_host("evil.example") and not p.allows_host("corp.example.evil")
    d = OriginPolicy(None, None, "127.0.0.1")
    assert d.allows_origin("http://127.0.0.1:9999", None) and d.allows_origin("http://app.localhost", None)
    assert not d.allows_origin("null", None) and OriginPolicy(["*"], None, "h").allows_origin("null", None)
    assert d.allows_host("localhost") and d.allows_host("192.168.1.20:8080") and not d.allows_host("evil.example")
    assert d.allows_host("LocalHost.:8080") and not d.allows_host("evil.example.")
