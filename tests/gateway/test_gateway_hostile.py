"""The gateway against hostile clients and broken upstreams: no secret (or any fragment or encoding of one) in any
log line at DEBUG, in an error or a close reason; parser limits through the relay; idle clients closed; a stalled
upstream response failed with an error and in history; the upstream timeout comes from the configuration."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.gateway.gwtools import GATEWAY_KEY, LEAK_KEY, LogCapture, conversations, sdk_client, wait_until
from tests.gateway.test_gateway_relay import events_until_close, pcm_b64, raw_connect, recv_event
from tests.gateway.upstream_recorder import UpstreamRecorder

CHATTY = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "httpx", "httpcore", "voicecall", "")


def fragments(secret: str, size: int = 10) -> set[str]:
    """Every ``size``-long piece of ``secret`` and of its base64 forms."""
    forms = {secret, base64.b64encode(secret.encode()).decode()[2:-4]}
    return {f[i:i + size] for f in forms for i in range(len(f) - size + 1)}


@pytest.fixture
def debug_logs() -> Iterator[LogCapture]:
    """Every record of every logger at DEBUG, uvicorn's non-propagating ones included."""
    capture = LogCapture()
    saved = []
    for name in CHATTY:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger, level in saved:
            logger.removeHandler(capture)
            logger.setLevel(level)


def lines(capture: LogCapture) -> list[str]:
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [fmt.format(r) for r in capture.records]


async def test_no_secret_or_fragment_in_any_debug_log_line(make_gateway, local_upstream: Any,
                                                             debug_logs: LogCapture) -> None:
    """A full session through the gateway (trusted client, then a browser with a minted ek_), on top of a local
    engine session (the upstream, which gets the OpenAI key as a Bearer token): every log line at DEBUG."""
    gw = make_gateway(f"{local_upstream.http}/v1")
    for name in CHATTY:  # the servers' start set uvicorn's levels back
        logging.getLogger(name).setLevel(logging.DEBUG)
    client = sdk_client(gw)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hello"}]})
        await conn.response.create()
        async for event in conn:
            if event.type == "response.done":
                break
    async with httpx.AsyncClient(base_url=gw.http, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        secret = (await http.post("/session", json={})).json()["value"]
    async with connect(f"{gw.ws}?model=gpt-realtime",
                       subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as ws:  # type: ignore[list-item]
        assert (await recv_event(ws))["type"] == "session.created"
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": pcm_b64(0.2)[0]}))
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        while (await recv_event(ws))["type"] != "input_audio_buffer.cleared":
            pass
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    text = lines(debug_logs)
    assert len(text) > 50 and any("Authorization: Bearer ***" in t or "authorization: Bearer ***" in t.lower()
                                  for t in text), "the handshake headers were not logged at DEBUG: the test is blind"
    needles = {LEAK_KEY, GATEWAY_KEY, secret} | fragments(LEAK_KEY) | fragments(GATEWAY_KEY) | fragments(secret)
    leaks = [(n, t[:160]) for t in text for n in needles if n in t]
    assert not leaks, leaks[:5]


async def test_upstream_errors_that_quote_the_key_lose_their_text_and_code(make_gateway,
                                                                          upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url)
    tail = LEAK_KEY[-10:]
    upstream.mode = "leak"
    async with httpx.AsyncClient(base_url=gw.http, headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as http:
        r = await http.post("/session", json={})
    assert r.status_code == 400 and tail not in r.text and "echo_" not in r.text, r.text
    assert all(f not in r.text for f in fragments(LEAK_KEY, 8)), r.text
    assert r.json()["error"]["code"] == "upstream_bad_request"
    async with raw_connect(gw) as ws:  # the handshake answered 400 with the same body
        events, code, reason = await events_until_close(ws)
    blob = json.dumps(events) + reason
    assert tail not in blob and "echo_" not in blob and code == 1008, (events, reason)
    upstream.mode = "leak-ws"  # an error event, then a close reason quoting the key
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        await ws.send('{"type":"response.create"}')
        events, code, reason = await events_until_close(ws)
    blob = json.dumps(events) + reason
    assert all(f not in blob for f in fragments(LEAK_KEY, 8)), (events, reason)
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == "upstream_error" and "is not allowed here" in errors[0]["message"]
    assert code == 1008


async def test_parser_limits_and_idle_clients_through_the_relay(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url, **{"server.firstEventSeconds": 1, "server.idleSessionSeconds": 2})
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        for message in ("[" * 100_000 + "]" * 100_000, '{"type":"x","n":' + "1" * 5000 + "}",
                        '{"type":"session.update","session":' + '{"a":' * 1000 + "1" + "}" * 1001):
            await ws.send(message)
            err = await recv_event(ws)
            assert err["type"] == "error" and err["error"]["code"] == "invalid_json", err
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))  # the session goes on
        events, code, reason = await events_until_close(ws, 15)  # ... until it idles
    assert code == 1008 and "idle timeout" in reason and events[-1]["error"]["code"] == "idle_timeout"
    async with raw_connect(gw) as ws:  # a client that never sends anything
        events, code, reason = await events_until_close(ws, 15)
    assert code == 1008 and "no first event" in reason
    assert await wait_until(lambda: gw.state.sessions.count == 0)


async def test_stalled_upstream_response_is_failed(make_gateway, upstream: UpstreamRecorder) -> None:
    gw = make_gateway(upstream.base_url, **{"plugins.voice-call.openaiRealtime.responseStallSeconds": 1})
    upstream.mode = "stall"
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        await ws.send('{"type":"response.create"}')
        created = await recv_event(ws)
        err = await recv_event(ws, 15)
        done = await recv_event(ws)
        assert created["type"] == "response.created"
        assert err["type"] == "error" and err["error"]["code"] == "upstream_timeout", err
        assert done["type"] == "response.done" and done["response"]["status"] == "failed"
        assert done["response"]["id"] == "resp_stalled"
        await ws.send(json.dumps({"type": "test.ping"}))  # the session goes on
        assert await wait_until(lambda: any('"response.cancel"' in t for _, t in upstream.frames))
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    convs = await conversations(gw)
    assert convs[0]["responses"][0]["status"] == "failed", convs[0]["responses"]


def test_upstream_request_timeout_comes_from_the_configuration(tmp_path) -> None:
    from tests.gateway.gwtools import gateway_config
    from voicecall.gateway.upstream import gateway_state
    from voicecall.server.app import create_app

    app = create_app(gateway_config(tmp_path, "http://127.0.0.1:9/v1"))
    assert gateway_state(app.state.vc).timeouts.request == 10.0  # the default: at most 10 s
    app = create_app(gateway_config(tmp_path, "http://127.0.0.1:9/v1",
                                    **{"plugins.voice-call.openaiRealtime.requestTimeoutSeconds": 2.5}))
    assert gateway_state(app.state.vc).timeouts.request == 2.5


async def test_relay_client_that_does_not_read_is_closed(make_gateway, upstream: UpstreamRecorder) -> None:
    """The relay keeps no queue: a client that reads nothing stops the upstream socket being read, and once it has
    taken nothing for server.sendTimeoutSeconds it is closed (1008), its slot freed."""
    gw = make_gateway(upstream.base_url, **{"server.sendTimeoutSeconds": 2})
    async with raw_connect(gw, max_queue=1) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        appends = [json.dumps({"type": "input_audio_buffer.append", "audio": c}) for c in pcm_b64(10.0)]
        for _ in range(25):  # each answer echoes the 10 s appended before it (640 kB of deltas): 16 MB unread
            for append in appends:
                await ws.send(append)
            await ws.send('{"type":"response.create"}')
        await asyncio.sleep(5)
        _, code, reason = await events_until_close(ws, 60)
    assert code == 1008 and reason.startswith("client too slow"), (code, reason)
    assert await wait_until(lambda: gw.state.sessions.count == 0)
