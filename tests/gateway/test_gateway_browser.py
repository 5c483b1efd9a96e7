"""The real web page in headless Chromium through the gateway: the page asks the gateway for a session (an ``ek_``
minted upstream), posts its offer to the gateway, and talks to the upstream engine directly over WebRTC; the
gateway's sideband records the call. The page, its scripts and everything the gateway sends are checked for the
OpenAI key (the leak guard)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.chromium import chromium_or_skip, chromium_page, hang_up
from tests.conftest import netns_required
from tests.gateway.gwtools import LEAK_KEY, conversations, wait_until
from voicecall.audio import write_wav

pytestmark = [pytest.mark.webrtc, pytest.mark.browser]


def test_served_pages_hold_no_key(make_gateway, upstream) -> None:
    gw = make_gateway(upstream.base_url)
    with httpx.Client(base_url=gw.http) as http:
        for path in ("/", "/realtime-client.js", "/app.js", "/healthz"):
            r = http.get(path)
            assert r.status_code == 200, path
            assert LEAK_KEY not in r.text and not any(LEAK_KEY in v for v in r.headers.values())
            assert "sk-test" not in r.text


def test_browser_call_through_the_gateway(make_gateway, local_upstream, tmp_path: Path) -> None:
    netns_required()
    from tests.webrtc.conftest import QUESTION, RTC_RATE, speech

    chromium = chromium_or_skip()

    # No client keys on this gateway: the page calls /session without credentials (loopback only).
    gw = make_gateway(f"{local_upstream.http}/v1", **{"server.apiKeys": []})
    wav = tmp_path / "mic.wav"
    write_wav(wav, np.concatenate([speech(QUESTION, RTC_RATE, lead_s=1.0, tail_s=6.0, seed=2)]), RTC_RATE)
    with chromium_page(chromium, wav, tmp_path) as page:
        requests: list[str] = []
        page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
        page.goto(f"{gw.http}/")
        page.wait_for_function("() => window.voicecall && window.voicecall.client")
        page.evaluate("() => { window.voicecall.client.audioConstraints = "
                      "{echoCancellation: false, noiseSuppression: false, autoGainControl: false}; }")
        page.click("#connect")
        page.wait_for_function("() => window.voicecall.state === 'connected'", timeout=15000)
        page.wait_for_function(
            """() => window.voicecall.transcripts.some(t => t.role === 'assistant' && t.text)
                  && window.voicecall.events.includes('output_audio_buffer.stopped')""", timeout=40000)
        hooks: dict[str, Any] = page.evaluate(
            "() => ({transcripts: window.voicecall.transcripts, errors: window.voicecall.errors, "
            "remoteLevelMax: window.voicecall.remoteLevelMax})")
        hang_up(page)
    assert not hooks["errors"], hooks["errors"]
    user = [t["text"].lower() for t in hooks["transcripts"] if t["role"] == "user" and t["text"]]
    assistant = [t["text"].lower() for t in hooks["transcripts"] if t["role"] == "assistant" and t["text"]]
    assert user and "capital" in user[0] and "france" in user[0], hooks["transcripts"]
    assert assistant and assistant[0].startswith("you said"), hooks["transcripts"]
    assert hooks["remoteLevelMax"] > 0.05
    # signalling went to the gateway only
    posts = [r for r in requests if r.startswith("POST")]
    assert any(r.endswith("/session") for r in posts) and any("/v1/realtime/calls" in r for r in posts), posts
    assert all(r.split(" ", 1)[1].startswith(gw.http) for r in posts), posts

    async def recorded() -> list[dict[str, Any]]:
        assert await wait_until(lambda: gw.state.sessions.count == 0, timeout=45)
        return await conversations(gw)

    convs = asyncio.run(recorded())
    assert len(convs) == 1 and convs[0]["transport"] == "sideband"
    texts = " ".join((i["text"] or "") for i in convs[0]["items"]).lower()
    assert "capital" in texts and "you said" in texts


@pytest.mark.conformance
def test_browser_websocket_through_the_gateway(make_gateway, local_upstream, tmp_path: Path) -> None:
    """The page's WebSocket transport through the gateway: the ek_ minted upstream authenticates the browser's
    WebSocket (subprotocol) to the gateway, which relays to the upstream with its own key; one spoken turn, heard."""
    netns_required()
    from tests.webrtc.conftest import QUESTION, RTC_RATE, speech

    chromium = chromium_or_skip()
    gw = make_gateway(f"{local_upstream.http}/v1", **{"server.apiKeys": []})
    wav = tmp_path / "mic.wav"
    write_wav(wav, speech(QUESTION, RTC_RATE, lead_s=1.0, tail_s=6.0, seed=2), RTC_RATE)
    with chromium_page(chromium, wav, tmp_path) as page:
        frames: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(str(f))))
        page.goto(f"{gw.http}/")
        page.wait_for_function("() => window.voicecall && window.voicecall.client")
        page.select_option("#transport", "websocket")
        page.evaluate("() => { window.voicecall.client.audioConstraints = "
                      "{echoCancellation: false, noiseSuppression: false, autoGainControl: false}; }")
        page.click("#connect")
        page.wait_for_function("() => window.voicecall.state === 'connected'", timeout=15000)
        assert page.evaluate("() => window.voicecall.client.ws.url").startswith(gw.ws)
        page.wait_for_function("() => window.voicecall.transcripts.some(t => t.role === 'assistant' && t.final)",
                               timeout=40000)
        page.wait_for_function("() => window.voicecall.remoteLevelMax > 0.05", timeout=10000)
        # the user's final transcript is asynchronous (as on OpenAI): it may arrive after the answer
        page.wait_for_function("() => window.voicecall.transcripts.some(t => t.role === 'user' && t.final)",
                               timeout=20000)
        hooks: dict[str, Any] = page.evaluate(
            "() => ({transcripts: window.voicecall.transcripts, errors: window.voicecall.errors, "
            "events: window.voicecall.events})")
        hang_up(page)
        saved = page.evaluate("() => JSON.parse(localStorage.getItem('voicecall.settings')).transport")
    assert saved == "websocket"  # the page remembers the Connection choice
    assert not hooks["errors"] and "error" not in hooks["events"], hooks
    user = [t["text"].lower() for t in hooks["transcripts"] if t["role"] == "user" and t["text"]]
    assert user and "capital" in user[0] and "france" in user[0], hooks["transcripts"]
    assert frames and not any(LEAK_KEY in f for f in frames)
