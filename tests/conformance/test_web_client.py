"""voicecall's own browser client over its WebSocket transport, in headless Chromium.

The seed's ``OpenAIRealtime`` class (``src/voicecall/web/realtime-client.js``, WebSocket transport) in headless
Chromium, used the seed way (``tests/conformance/pages/seed.html``): ``connect()``, ``startRecording()``,
``onTranscript(text, isFinal)``, ``onAudioChunk(base64)``.

The fake microphone (a WAV) asks a question, then talks over the answer. Checked: the ek_ secret is fetched
first and used as the WebSocket subprotocol (the server selects ``realtime``), the session carries the page's
settings, the question is transcribed and answered with audio that the page plays through its AudioWorklet, and
the barge-in stops playback at once and truncates the item at what was heard (``conversation.item.truncate``
with ``audio_end_ms`` below what was received, confirmed by ``conversation.item.truncated``). No error.

The demo page's WebSocket transport is tested through the gateway (``tests/gateway/test_gateway_browser.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.chromium import chromium_or_skip, chromium_page
from tests.conformance.conftest import PAGES
from tests.conftest import ServerThread
from tests.webrtc.conftest import BARGE_IN, ECHO_STACK, QUESTION, RTC_RATE, speech
from tests.webrtc.test_browser import BROWSER_STACK
from voicecall.audio import write_wav

pytestmark = [pytest.mark.conformance, pytest.mark.browser]

INSTRUCTIONS = "Seed-era instructions: answer like a pirate."
SEED_MODEL = "gpt-4o-realtime-preview"  # seed-era code, through the seed's WebSocket path /api/realtime


def test_seed_openai_realtime_websocket(make_server: Callable[..., ServerThread], tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    srv = make_server(**{**ECHO_STACK, **BROWSER_STACK})
    wav = tmp_path / "question.wav"
    write_wav(wav, speech(QUESTION, RTC_RATE, lead_s=1.0, tail_s=20.0, seed=2), RTC_RATE)
    with chromium_page(chromium, wav, tmp_path) as page:
        page_errors: list[str] = []
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.on("console", lambda m: page_errors.append(f"console: {m.text}")
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        page.on("response", lambda r: page_errors.append(f"HTTP {r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        # The page comes from the voicecall server's origin, as seed-era apps served it: a document loaded from the
        # server (so Chromium's local-network-access checks see a loopback page), then the seed page's content.
        page.goto(f"{srv.http}/healthz?model={SEED_MODEL}&wsPath=/api/realtime&instructions={INSTRUCTIONS}")
        page.set_content((PAGES / "seed.html").read_text())
        page.wait_for_function("() => window.run")
        assert page.evaluate("() => window.run().catch(e => e.message + ' ' + JSON.stringify(window.result))") \
            == "connected", page_errors
        assert page.evaluate("() => [window.rt.ws.protocol, new URL(window.rt.ws.url).pathname]") == [
            "realtime", "/api/realtime"]
        try:
            # Talk over the answer once it is heard.
            page.wait_for_function("() => window.rt.levels.remote > 0.05", timeout=30000)
            page.evaluate("b64 => window.say(b64)", base64.b64encode(speech(BARGE_IN, RTC_RATE, tail_s=3.0, seed=3)
                                                                     .tobytes()).decode())
            page.wait_for_function(
                """() => Object.values(window.result.transcripts).filter(t => t.role === 'user' && t.isFinal && t.text)
                      .length >= 2 && window.result.events.some(e => e[1] === 'conversation.item.truncated')""",
                timeout=30000)
        finally:
            res: dict[str, Any] = page.evaluate("() => window.result")
            print("events:", [(t, e, st) for t, e, _, st, _ in res["events"]])
            print("sent:", [(t, ev["type"]) for t, ev in res["sent"]], "transcripts:", res["transcripts"])
            print("errors:", res["errors"], page_errors)
        secret_ok = page.evaluate("() => window.rt.sessionInfo.value.startsWith('ek_')")
        page.evaluate("() => window.rt.disconnect()")
    assert not page_errors, page_errors
    assert not res["errors"], res["errors"]
    assert not [e for e in res["events"] if e[1] == "error"], [e[4] for e in res["events"] if e[1] == "error"]
    assert secret_ok
    # The page's settings are the session's (carried by the ek_ secret; the model asked for in ?model=).
    created = next(e[2] for e in res["events"] if e[1] == "session.created")
    assert created["instructions"] == INSTRUCTIONS
    assert created["audio"]["output"]["voice"] == "marin"
    assert created["model"] == SEED_MODEL  # the local engine reports what was asked
    # A spoken turn: the question transcribed, an answer transcribed and heard.
    texts = [res["transcripts"][i] for i in res["order"]]
    user = [t["text"].lower() for t in texts if t["role"] == "user" and t["isFinal"]]
    assistant = [t["text"].lower() for t in texts if t["role"] == "assistant"]
    assert "capital" in user[0] and "france" in user[0], texts
    assert assistant and assistant[0].startswith("you said"), texts
    assert res["audioChunks"] > 0 and res["audioBytes"] > 24000 * 2 * 0.5
    assert max(lv for _, lv in res["levels"]) > 0.05  # played by the AudioWorklet
    # Barge-in: truncate at what was heard, then silence at once.
    sent = [ev for _, ev in res["sent"]]
    truncates = [(t, ev) for t, ev in res["sent"] if ev["type"] == "conversation.item.truncate"]
    assert truncates, [ev["type"] for ev in sent]
    t_trunc, trunc = truncates[0]
    truncated = next(e for e in res["events"] if e[1] == "conversation.item.truncated")
    # the barge-in starts as soon as the answer is audible, so what was heard is short (a few hundred ms: the VAD's
    # time to hear the interruption), but never nothing
    assert truncated[3] == trunc["audio_end_ms"] > 100, (truncated, trunc)
    assert trunc["audio_end_ms"] < res["audioBytes"] / 2 / 24, (trunc, res["audioBytes"])  # not all was heard
    loud_before = [lv for t, lv in res["levels"] if t_trunc - 500 < t < t_trunc and lv > 0.05]
    assert loud_before, "the answer was not playing when the user talked over it"
    after = [lv for t, lv in res["levels"] if t_trunc + 100 < t < t_trunc + 1000]
    assert after and max(after) < 0.02, max(after or [0])
    assert any("stop" in u and "talking" in u for u in user[1:]), user


def test_openai_realtime_from_another_site(conformance_server: ServerThread, second_origin: str,
                                           tmp_path: Path) -> None:
    """The documented "your app on another site" path with this client: module imported from voicecall, ek_ secret
    from the app's side (``getClientSecret``), WebSocket to voicecall from the second origin (allowed by
    ``server.allowedOrigins``)."""
    chromium = chromium_or_skip()
    wav = tmp_path / "question.wav"
    write_wav(wav, speech(QUESTION, RTC_RATE, lead_s=1.0, tail_s=6.0, seed=2), RTC_RATE)
    with chromium_page(chromium, wav, tmp_path) as page:
        page.goto(f"{second_origin}/app-elsewhere.html?server={conformance_server.http}")
        page.wait_for_function("() => window.run")
        assert page.evaluate("() => window.run().catch(e => e.message)") == "connected"
        page.wait_for_function("() => window.result.transcripts.some(t => t.role === 'assistant')", timeout=40000)
        # the user's final transcript is asynchronous (as on OpenAI): it may arrive after the answer
        page.wait_for_function("() => window.result.transcripts.some(t => t.role === 'user')", timeout=20000)
        res: dict[str, Any] = page.evaluate("() => window.result")
        page.evaluate("() => window.rt.disconnect()")
    assert not res["errors"] and ["error"] not in res["events"], res
    assert ["session.created", "Answer from another site."] in res["events"]
    user = [t["text"].lower() for t in res["transcripts"] if t["role"] == "user"]
    assert user and "capital" in user[0] and "france" in user[0], res["transcripts"]
    assert res["audioChunks"] > 0


def test_pcm_audio_worklets_gapless_and_resampled(conformance_server: ServerThread, tmp_path: Path) -> None:
    """The WebSocket transport's audio, rendered offline in Chromium (``pages/pcm-audio-check.js``): a tone pushed in
    25 odd-sized chunks plays back as one continuous tone (gapless; the worst sample is within interpolation error of
    the ideal tone) and the player counts every sample as heard; the microphone worklet turns 1 s at 48 kHz into
    exactly 24,000 samples at 24 kHz (25 chunks of 40 ms) of the same tone."""
    chromium = chromium_or_skip()
    wav = tmp_path / "silence.wav"
    write_wav(wav, np.zeros(RTC_RATE // 10, np.int16), RTC_RATE)  # no microphone needed
    with chromium_page(chromium, wav, tmp_path) as page:
        page.goto(f"{conformance_server.http}/healthz")
        res: dict[str, Any] = page.evaluate((PAGES / "pcm-audio-check.js").read_text())
    assert res["chunks"] == 25
    assert res["playErr"] < 0.005, res  # a gap or a repeated/skipped sample at a join would be ~0.03-0.5
    assert res["tail"] == 0, res  # silence once the queue is empty
    assert res["position"] == {"itemId": "item_a", "contentIndex": 0, "played": 12000, "queued": 0}
    assert res["captured"] == 24000 and set(res["captureChunks"]) == {960}, res
    assert res["capErr"] < 0.01, res
