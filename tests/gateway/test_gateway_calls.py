"""The SDP proxy (``POST /v1/realtime/calls``), the sideband and hangup, against the recording stand-in of OpenAI:
the exact multipart request, the answer and Location, the sideband's recording and limits, and failures."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.gateway.gwtools import GATEWAY_KEY, LEAK_KEY, MODEL, conversations, wait_until
from tests.gateway.upstream_recorder import FAKE_ANSWER_SDP, USAGE, UpstreamRecorder

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def browser_secret(gw, **body) -> str:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=gw.http, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        r = await http.post("/session", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["value"])


async def post_offer(gw, secret: str | None = None, offer: str = OFFER, session: dict | None = None,  # type: ignore[no-untyped-def]
                     key: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http, timeout=20) as http:
        if session is not None:
            return await http.post("/v1/realtime/calls", headers={"Authorization": f"Bearer {key or GATEWAY_KEY}"},
                                   files={"sdp": (None, offer, "application/sdp"),
                                          "session": (None, __import__("json").dumps(session), "application/json")})
        return await http.post("/v1/realtime/calls", content=offer,
                               headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"})


def response_done(rid: str) -> dict:
    return {"type": "response.done", "event_id": f"event_{rid}", "response": {
        "id": rid, "object": "realtime.response", "status": "completed", "usage": USAGE,
        "output": [{"id": f"item_{rid}", "type": "message", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_audio", "transcript": "Hello from the call."}]}]}}


async def test_sdp_proxy_sideband_and_hangup(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url)
    secret = await browser_secret(gw, voice="cedar")
    r = await post_offer(gw, secret)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/sdp") and r.text == FAKE_ANSWER_SDP
    call_id = r.headers["location"].rsplit("/", 1)[-1]
    assert r.headers["location"] == f"/v1/realtime/calls/{call_id}" and call_id in upstream.calls
    # upstream got exactly OpenAI's unified-interface request
    req = next(x for x in upstream.requests if x["path"] == "/v1/realtime/calls")
    assert req["headers"]["authorization"] == f"Bearer {LEAK_KEY}" and "openai-beta" not in req["headers"]
    assert req["parts"]["sdp"]["data"] == OFFER and req["parts"]["sdp"]["content_type"] == "application/sdp"
    assert req["parts"]["session"]["content_type"] == "application/json"
    session = upstream.calls[call_id]["session"]
    assert session["model"] == MODEL and session["instructions"] == "You are the gateway's assistant."
    assert session["audio"]["output"]["voice"] == "cedar"
    # the sideband joined with the server key, and the call holds a session slot
    assert await wait_until(lambda: upstream.sidebands(call_id) == 1)
    sb = [x for x in upstream.requests if x["path"] == "/v1/realtime" and x["query"].get("call_id") == call_id]
    assert sb and sb[0]["query"] == {"call_id": call_id}
    assert gw.state.sessions.count == 1
    # what happens in the call is recorded through the sideband
    upstream.push(call_id, response_done("resp_1"))
    # the browser hangs up through the gateway with its secret
    async with httpx.AsyncClient(base_url=gw.http) as http:
        other = await http.post(f"/v1/realtime/calls/{call_id}/hangup",
                                headers={"Authorization": f"Bearer {await browser_secret(gw)}"})
        assert other.status_code == 404  # another browser's secret may not
        h = await http.post(f"/v1/realtime/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {secret}"})
    assert h.status_code == 200, h.text
    assert upstream.hangups == [call_id]
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    convs = await conversations(gw)
    assert len(convs) == 1 and convs[0]["transport"] == "sideband" and convs[0]["ended_at"]
    assert convs[0]["responses"][0]["cost_usd"] == pytest.approx(0.0612, rel=1e-6)
    assert any(i["text"] == "Hello from the call." for i in convs[0]["items"])


async def test_multipart_from_a_trusted_client(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url)
    r = await post_offer(gw, session={"type": "realtime", "model": "gpt-realtime-2", "instructions": "Backend.",
                                      "output_modalities": ["audio"]})
    assert r.status_code == 201, r.text
    call_id = r.headers["location"].rsplit("/", 1)[-1]
    session = upstream.calls[call_id]["session"]
    assert session["model"] == MODEL and session["instructions"] == "Backend."
    assert await wait_until(lambda: upstream.sidebands(call_id) == 1)
    # the sideband ends when upstream ends the call (a trusted client hangs up any call)
    async with httpx.AsyncClient(base_url=gw.http, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        assert (await http.post(f"/v1/realtime/calls/{call_id}/hangup")).status_code == 200
    assert await wait_until(lambda: gw.state.sessions.count == 0)


async def test_bad_offer_gets_upstreams_message_without_the_key(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url)
    r = await post_offer(gw, await browser_secret(gw), offer="not an sdp")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_offer" and "Invalid SDP offer" in err["message"]
    assert LEAK_KEY not in r.text
    assert "(from key ***)" in err["message"]  # upstream echoed the key; the gateway redacted it
    assert gw.state.sessions.count == 0


async def test_request_errors(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url)
    async with httpx.AsyncClient(base_url=gw.http) as http:
        r = await http.post("/v1/realtime/calls", content=OFFER, headers={"Content-Type": "application/sdp"})
        assert r.status_code == 401  # no credentials
        secret = await browser_secret(gw)
        r = await http.post("/v1/realtime/calls", content="", headers={"Authorization": f"Bearer {secret}",
                                                                       "Content-Type": "application/sdp"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_sdp"
        r = await http.post("/v1/realtime/calls", content=OFFER, headers={"Authorization": f"Bearer {secret}",
                                                                          "Content-Type": "text/plain"})
        assert r.status_code == 415
    assert not [x for x in upstream.requests if x["path"] == "/v1/realtime/calls"]


@pytest.mark.parametrize(("mode", "status", "code"), [
    ("401", 502, "upstream_unauthorized"), ("429", 429, "upstream_rate_limited"),
    ("500", 502, "upstream_unavailable"), ("hang", 504, "upstream_timeout"),
])
async def test_upstream_failures(make_gateway, upstream: UpstreamRecorder, mode: str, status: int, code: str) -> None:
    gw = make_gateway(upstream.base_url)
    secret = await browser_secret(gw)
    upstream.mode = mode
    t0 = time.monotonic()
    r = await post_offer(gw, secret)
    assert time.monotonic() - t0 < 6
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert LEAK_KEY not in r.text
    if mode == "429":
        assert r.headers["retry-after"] == "7"
    assert gw.state.sessions.count == 0


async def test_max_session_seconds_hangs_up_the_call(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url, **{"server.maxSessionSeconds": 1.0})
    r = await post_offer(gw, await browser_secret(gw))
    call_id = r.headers["location"].rsplit("/", 1)[-1]
    assert await wait_until(lambda: upstream.hangups == [call_id], timeout=5)
    assert await wait_until(lambda: gw.state.sessions.count == 0)


async def test_spend_limit_hangs_up_the_call(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url, **{"plugins.voice-call.openaiRealtime.maxSpendUsd": 0.1})
    r = await post_offer(gw, await browser_secret(gw))
    call_id = r.headers["location"].rsplit("/", 1)[-1]
    assert await wait_until(lambda: upstream.sidebands(call_id) == 1)
    upstream.push(call_id, response_done("resp_1"))  # $0.0612
    await wait_until(lambda: bool(upstream.hangups), timeout=1)
    assert upstream.hangups == []
    upstream.push(call_id, response_done("resp_2"))  # $0.1224 > $0.10
    assert await wait_until(lambda: upstream.hangups == [call_id], timeout=5)
    assert await wait_until(lambda: gw.state.sessions.count == 0)


async def test_calls_count_against_max_sessions(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url, **{"server.maxSessions": 1})
    secret = await browser_secret(gw)
    assert (await post_offer(gw, secret)).status_code == 201
    r = await post_offer(gw, secret)
    assert r.status_code == 503 and r.json()["error"]["code"] == "session_limit_reached"
    assert len([x for x in upstream.requests if x["path"] == "/v1/realtime/calls"]) == 1


async def test_relay_joins_a_call(make_gateway, upstream: UpstreamRecorder) -> None:
    """``GET /v1/realtime?call_id=`` through the gateway: a trusted client joins any call made through it, a browser
    only its own."""
    import json

    from websockets.asyncio.client import connect

    gw = make_gateway(upstream.base_url)
    secret = await browser_secret(gw)
    r = await post_offer(gw, secret)
    call_id = r.headers["location"].rsplit("/", 1)[-1]
    async with connect(f"{gw.ws}?call_id={call_id}", additional_headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created"
        assert await wait_until(lambda: upstream.sidebands(call_id) == 2)  # the gateway's own sideband + this one
    joins = [x["query"] for x in upstream.requests if x["path"] == "/v1/realtime"]
    assert joins.count({"call_id": call_id}) == 2 and not any("model" in q for q in joins)
    other = await browser_secret(gw)
    async with connect(f"{gw.ws}?call_id={call_id}", subprotocols=["realtime", f"openai-insecure-api-key.{other}"]) as ws:
        err = json.loads(await ws.recv())
        assert err["type"] == "error" and err["error"]["code"] == "call_not_found"
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_daily_client_spend_limit_hangs_up_and_refuses_new_calls(make_gateway, upstream: UpstreamRecorder) -> None:
    """``state.maxSpendPerClientPerDayUsd`` (here with the in-process state; tests/cluster covers Redis): the
    client's calls add up; past the limit the live call is hung up and the next one refused."""
    gw = make_gateway(upstream.base_url, **{"state.maxSpendPerClientPerDayUsd": 0.1})
    r = await post_offer(gw, await browser_secret(gw))
    call_id = r.headers["location"].rsplit("/", 1)[-1]
    assert await wait_until(lambda: upstream.sidebands(call_id) == 1)
    upstream.push(call_id, response_done("resp_1"))  # $0.0612
    upstream.push(call_id, response_done("resp_2"))  # $0.1224 today > $0.10
    assert await wait_until(lambda: upstream.hangups == [call_id], timeout=5)
    r = await post_offer(gw, await browser_secret(gw))
    assert r.status_code == 429 and r.json()["error"]["code"] == "spend_limit_reached"
