"""@openai/agents-realtime (the official Agents SDK, pinned in tests/js/package-lock.json) against voicecall, in
its README quickstart shape (RealtimeAgent + RealtimeSession, default model, no ``error`` listener):

- WebSocket, in Node (``tests/js/agents-websocket.mjs``): a server ``error`` event would crash the process (exit
  code 1), so exit code 0 is itself the "zero error events" check; the events it saw are checked here too.
- In Chromium, from a page on a second origin (``pages/agents-browser.html``, the SDK's browser bundle): WebRTC (the
  browser default) and its WebSocket transport.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import chromium_or_skip, chromium_page
from tests.conformance.conftest import AGENTS_BUNDLE, node_or_skip, run_node, speech_pcm24
from tests.conftest import ServerThread
from tests.webrtc.conftest import QUESTION, RTC_RATE, speech
from voicecall.audio import write_wav

pytestmark = [pytest.mark.conformance]

AGENT_INSTRUCTIONS = "You are a terse assistant. Answer in one short sentence."


def _words(text: str) -> set[str]:
    return {w.strip(".,?!:;").lower() for w in text.split()}


def check_turn(seen: dict[str, Any], turn_detection: str = "semantic_vad") -> None:
    """One spoken turn with the client's session applied (its instructions, its one tool ``get_weather``, its turn
    detection) and no error: what every JavaScript client of the suite must show."""
    assert "error" not in seen["types"], seen["types"]
    assert seen["sessionUpdated"], f"no session.updated: {seen['types']}"
    session = seen["sessionUpdated"][-1]
    assert session["instructions"] == AGENT_INSTRUCTIONS, session
    assert [t["name"] for t in session["tools"]] == ["get_weather"], session["tools"]
    assert session["audio"]["input"]["turn_detection"]["type"] == turn_detection, session["audio"]
    assert seen["userTranscripts"], seen["types"]
    assert {"capital", "france"} <= _words(seen["userTranscripts"][0]), seen["userTranscripts"]
    assert seen["assistantTranscripts"] and seen["assistantTranscripts"][0].lower().startswith("you said"), seen
    assert "response.done" in seen["types"]


def test_agents_sdk_websocket_node(conformance_server: ServerThread, tmp_path: Path) -> None:
    pcm = speech_pcm24(tmp_path / "question.pcm")
    proc = run_node("agents-websocket.mjs", conformance_server.ws, "local-test-key", str(pcm))
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["transport"] == "OpenAIRealtimeWebSocket"
    check_turn(seen)
    assert seen["audioBytes"] > 24000 * 2 * 0.3, seen["audioBytes"]  # the SDK's `audio` event: answer audio
    # The SDK's own view of the conversation: the user's audio item and the assistant's answer, both transcribed.
    roles = [(h["role"], h["content"][0]["type"]) for h in seen["history"] if h["type"] == "message" and h["content"]]
    assert ("user", "input_audio") in roles and ("assistant", "output_audio") in roles, seen["history"]


@pytest.mark.browser
@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
def test_agents_sdk_browser_cross_origin(conformance_server: ServerThread, second_origin: str, tmp_path: Path,
                                         transport: str) -> None:
    """The SDK's browser bundle from a page on another origin: the ek_ secret and the SDP exchange (WebRTC, the
    browser default; fake microphone from a WAV) or the WebSocket (its subprotocols ``realtime``,
    ``openai-insecure-api-key.<ek_>``, ``openai-agents-sdk.<version>``; the app sends the audio) are cross-origin."""
    chromium = chromium_or_skip()
    if not AGENTS_BUNDLE.exists():
        node_or_skip()  # explains how to install tests/js
    wav = tmp_path / "question.wav"
    write_wav(wav, speech(QUESTION, RTC_RATE, lead_s=1.0, tail_s=6.0, seed=2), RTC_RATE)
    problems: list[str] = []
    with chromium_page(chromium, wav, tmp_path) as page:
        page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))  # e.g. an unhandled SDK `error` event
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning") and not m.text.startswith("Failed to load resource") else None)
        page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        page.goto(f"{second_origin}/agents-browser.html?server={conformance_server.http}&transport={transport}")
        page.wait_for_function("() => window.run")
        status = page.evaluate("() => window.run().catch(e => 'failed: ' + e.message)")
        assert status == "connected", (status, problems)
        if transport == "websocket":
            pcm = speech_pcm24(tmp_path / "question.pcm").read_bytes()
            page.evaluate("b64 => { window.sendPcm(b64); }", base64.b64encode(pcm).decode())
        try:
            page.wait_for_function("() => seen.types.includes('response.done') && seen.userTranscripts.length",
                                   timeout=40000)
        finally:
            seen: dict[str, Any] = page.evaluate("() => window.seen")
            print("events:", seen["types"], "problems:", problems)
        received = page.evaluate("() => window.receivedAudio()") if transport == "webrtc" else None
        page.evaluate("() => window.session.close()")
    # No uncaught SDK error, and (WebRTC) connect() was not released by its 5 s "no session.updated" timer, which
    # warns on the console.
    assert not problems, problems
    assert seen["transport"] == transport
    check_turn(seen)
    if received is not None:
        assert received["energy"] > 0 and received["samples"] > 0, received  # the answer's audio reached the page
    else:
        assert seen["audioBytes"] > 24000 * 2 * 0.3, seen["audioBytes"]  # the SDK's `audio` events
