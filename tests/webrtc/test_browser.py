"""The web page in headless Chromium, end to end over WebRTC: fake microphone (a WAV made at test time) ->
server (echo engine) -> answer audio heard by the page's WebAudio analyser.

The page is the real one (src/voicecall/web): the test presses ``#connect`` and reads the page's test hook
``window.voicecall`` ({transcripts, events, remoteLevel, ...}). For the timing checks it also wraps the page
client's ``onEvent`` / ``onLevels`` callbacks to timestamp events and remote levels (page clock).

The microphone WAV holds: 1 s of silence (the fake device starts playing at getUserMedia, before the media
path is up), the question, a pause long enough for the answer to start, then a second utterance spoken over
the answer (barge-in). The echo LLM streams its words slowly, so the response is still being generated when the
barge-in comes: it must end ``cancelled`` / ``turn_detected`` and the page's remote level must drop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.chromium import chromium_or_skip, chromium_page, hang_up
from tests.webrtc.conftest import barge_in_wav

pytestmark = [pytest.mark.webrtc, pytest.mark.browser]

# Slow words from the echo LLM and long tone bursts: the first answer chunk ("You said:") plays for ~2.5 s while
# the rest of the answer is still being generated (8 words x 0.45 s), which is when the barge-in lands.
SERVER_INSTRUCTIONS = "Answer like a ship's captain, in one sentence."
BROWSER_STACK = {
    "plugins.voice-call.local.instructions": SERVER_INSTRUCTIONS,
    "plugins.voice-call.local.llm": {"type": "echo", "delay": 0.45},
    "plugins.voice-call.local.tts": {"type": "tone", "wordMs": 1200, "gapMs": 40, "amplitude": 0.4},
    # The page-side timing below is anchored on output_audio_buffer.cleared: interrupt at once, as OpenAI does
    # (with false-interruption handling the answer pauses earlier, at speech onset; test_aiortc_client covers it).
    "plugins.voice-call.local.falseInterruptions": False,
}
LEAD_S = 1.0
# Where the barge-in starts, counted from the end of the question. Measured: the answer's audio starts ~1.4 s
# after the question ends (0.5 s VAD silence window, 0.9 s until the echo LLM's first clause); so the barge-in
# lands ~0.9 s into the 2.5 s first chunk, leaving about a second of slack either way.
BARGE_AFTER_S = 2.3

INSTRUMENT = """() => {
  const h = window.voicecall, c = h.client;
  h.t = {events: [], levels: []};
  const onEvent = c.onEvent, onLevels = c.onLevels;
  c.onEvent = (ev) => { h.t.events.push([performance.now(), ev.type, ev.response_id || (ev.response && ev.response.id) || null,
                                          ev.response && ev.response.status, ev.response && ev.response.status_details &&
                                          ev.response.status_details.reason]); onEvent(ev); };
  c.onLevels = (l) => { h.t.levels.push([l.time, l.remote, l.mic]); onLevels(l); };
  // Recognition wants the signal as it is in the file: no echo cancellation, noise suppression or AGC.
  c.audioConstraints = {echoCancellation: false, noiseSuppression: false, autoGainControl: false};
}"""


def test_browser_call_and_barge_in(make_rtc_server, tmp_path: Path) -> None:
    chromium = chromium_or_skip()
    srv = make_rtc_server(**BROWSER_STACK)
    wav, q_end, barge_at = barge_in_wav(tmp_path / "mic.wav", LEAD_S, BARGE_AFTER_S)
    with chromium_page(chromium, wav, tmp_path) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        failed: list[str] = []  # which request a "Failed to load resource" console error was about
        page.on("response", lambda r: failed.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400
                else None)
        page.goto(f"{srv.http}/")
        page.wait_for_function("() => window.voicecall && window.voicecall.client")
        page.evaluate(INSTRUMENT)
        t_click = page.evaluate("() => performance.now()")
        page.click("#connect")
        page.wait_for_function("() => window.voicecall.state === 'connected'", timeout=15000)
        # The page sent no instructions of its own (its field is empty): the server's configured ones are in force,
        # and the page shows them (from session.created) as the field's placeholder.
        page.wait_for_function("() => document.querySelector('#instructions').placeholder !== ''"
                               " && window.voicecall.events.includes('session.created')", timeout=5000)
        field = page.evaluate("() => ({value: document.querySelector('#instructions').value, "
                              "placeholder: document.querySelector('#instructions').placeholder})")
        assert field == {"value": "", "placeholder": SERVER_INSTRUCTIONS}, field
        # Wait for the barge-in turn to be transcribed (or give up after the file has played).
        try:
            page.wait_for_function(
                """() => window.voicecall.transcripts.filter(t => t.role === 'user' && t.final && t.text).length >= 2
                      && window.voicecall.events.includes('output_audio_buffer.cleared')""",
                timeout=40000)
        except PlaywrightTimeoutError:  # say what the page saw (a starved machine can start the answer late)
            seen = page.evaluate("() => ({transcripts: window.voicecall.transcripts, events: window.voicecall.events,"
                                 " errors: window.voicecall.errors})")
            raise AssertionError(f"the barge-in turn never completed: {seen}, console {console}, failed {failed}")
        page.wait_for_timeout(300)
        hooks: dict[str, Any] = page.evaluate(
            "() => ({transcripts: window.voicecall.transcripts, events: window.voicecall.events, "
            "t: window.voicecall.t, remoteLevelMax: window.voicecall.remoteLevelMax, "
            "micLevelMax: window.voicecall.micLevelMax, errors: window.voicecall.errors, "
            "notes: [...document.querySelectorAll('#transcript .msg.assistant .msg-note')].map(e => e.textContent)})")
        hang_up(page)
    _report(hooks, t_click, q_end, barge_at)
    transcripts = hooks["transcripts"]
    user = [t["text"].lower() for t in transcripts if t["role"] == "user" and t["text"]]
    assistant = [t["text"].lower() for t in transcripts if t["role"] == "assistant" and t["text"]]
    assert not hooks["errors"], hooks["errors"]
    assert user and "capital" in user[0] and "france" in user[0], transcripts
    assert assistant and assistant[0].startswith("you said"), transcripts
    assert hooks["micLevelMax"] > 0.05
    # The answer was audible in the page (WebAudio analyser on the remote stream).
    assert hooks["remoteLevelMax"] > 0.05, hooks["remoteLevelMax"]
    # Barge-in: the response was cancelled by the user's turn, and the page went quiet right after the clear.
    events = hooks["t"]["events"]
    first_done = next(e for e in events if e[1] == "response.done")
    assert first_done[3] == "cancelled" and first_done[4] == "turn_detected", events
    assert "interrupted" in hooks["notes"]
    t_clear = next(e[0] for e in events if e[1] == "output_audio_buffer.cleared")
    levels = hooks["t"]["levels"]
    loud_before = [lv for t, lv, _ in levels if t_clear - 600 < t < t_clear and lv > 0.05]
    assert loud_before, "the answer was not playing when the barge-in cleared it"
    # The page hears audio 100-250 ms after the server sends it (Chrome's jitter buffer and audio output), at the
    # start as at the clear: the answer (RMS ~0.28) must fall silent within that playout delay plus 200 ms, and
    # stay silent until the next answer (what remains is Chrome's concealment fading out, RMS < 0.05).
    t_started = next(e[0] for e in events if e[1] == "output_audio_buffer.started")
    playout = next(t for t, lv, _ in levels if t > t_started and lv > 0.05) - t_started
    last_loud = max(t for t, lv, _ in levels if t < t_clear + 1000 and lv > 0.05)
    print(f"playout delay {playout:.0f} ms; last loud answer audio {last_loud - t_clear:.0f} ms after the clear")
    print("remote level after the clear:", [(round(t - t_clear), round(lv, 3)) for t, lv, _ in levels
                                            if t_clear - 50 < t < t_clear + 700][::5])
    assert last_loud - t_clear < playout + 200
    nxt = [e[0] for e in events if e[1] == "output_audio_buffer.started" and e[0] > t_clear]
    quiet_window = [lv for t, lv, _ in levels if t_clear + playout + 200 < t < (nxt[0] if nxt else t_clear + 1500)]
    assert quiet_window and max(quiet_window) < 0.05, max(quiet_window or [0])
    assert len(user) >= 2 and "stop" in user[1] and "talking" in user[1], transcripts
    assert not [m for m in console if m.startswith("error")], (console, failed)


def _report(hooks: dict[str, Any], t_click: float, q_end: float, barge_at: float) -> None:
    """Print the call's timeline (page clock, ms after the click): shown by pytest on failure or with -s."""
    print(f"question ends at {q_end:.2f} s of the file, barge-in starts at {barge_at:.2f} s")
    for t, etype, rid, status, reason in hooks["t"]["events"]:
        print(f"{t - t_click:8.0f} ms  {etype} {rid or ''} {status or ''} {reason or ''}")
    first_mic = next((t for t, _, mic in hooks["t"]["levels"] if mic > 0.02), None)
    if first_mic is not None:
        print(f"mic speech first heard at {first_mic - t_click:.0f} ms (file {LEAD_S:.1f} s)")
    loud = [t for t, lv, _ in hooks["t"]["levels"] if lv > 0.05]
    if loud:
        print(f"remote audio loud from {loud[0] - t_click:.0f} to {loud[-1] - t_click:.0f} ms")
    print("transcripts:", hooks["transcripts"])
