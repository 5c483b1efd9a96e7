"""``voicecall bench turns``: end-of-turn quality and false interruptions, on a labelled set built here.

The set (espeak-ng voices, not Piper; SSML breaks give mid-sentence pauses with the sentence melody going on):

* ``complete``: questions spoken whole; the true end of turn is the end of speech.
* ``cut``: the same questions with a 0.5-1.5 s pause in the middle ("What is the capital of ... France?"); an end
  of turn inside the pause is a **false cut-off**.
* ``backchannel`` / ``noise``: "mm-hm", "yeah", "okay", a cough-like burst, a knock, said while an answer plays;
  any ``speech_started`` (the client would stop) or cancelled answer is a **false interruption**.
* ``interrupt``: real interruptions while an answer plays; they must stop it.

End-of-turn turns are streamed in real time, one session per turn-detection setting (``server_vad`` and each
``semantic_vad`` eagerness) at once, and judged on the audio clock: **dead air** = ``speech_stopped.audio_end_ms``
minus the true end of speech. Prints a table, writes JSON and a plot of cut-off rate against dead air.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.audio import ENGINE_RATE, resample
from voicecall.bench.common import InProcessServer, machine_info, progress, report, summary

CHUNK = ENGINE_RATE // 10  # 100 ms appends
QUESTIONS = [
    ("What is the capital of", "France?"),
    ("Can you recommend a good book about", "history?"),
    ("How far away is the", "moon from the earth?"),
    ("Tell me a short joke about", "cats."),
    ("I would like to book a table for", "two people tonight."),
    ("What is the weather like in", "London today?"),
    ("Could you tell me how to get to the", "train station?"),
    ("What time does the", "museum open on Sunday?"),
    ("Please remind me to call my", "mother tomorrow."),
    ("How many people live in", "Japan?"),
]
VOICES = ["en-us", "en-us+f3", "en+m3"]
PAUSES_MS = [500, 750, 1000, 1250, 1500]
BACKCHANNELS = ["Mm-hm.", "Yeah.", "Okay.", "Right.", "Uh-huh.", "I see.", "Hmm.", "Mm."]
INTERRUPTIONS = ["Stop, that is not what I asked.", "Wait, tell me about the weather instead.",
                 "No no, I meant the other one."]
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("server_vad", {"type": "server_vad"}),
    ("semantic_vad high", {"type": "semantic_vad", "eagerness": "high"}),
    ("semantic_vad auto", {"type": "semantic_vad", "eagerness": "auto"}),
    ("semantic_vad low", {"type": "semantic_vad", "eagerness": "low"}),
]
GAP_MS = 4000  # silence after each turn: more than the longest hard maximum (low: 3.5 s)


@dataclass(slots=True)
class Turn:
    kind: str  # complete | cut | backchannel | noise | interrupt
    text: str
    voice: str
    pcm: np.ndarray  # engine rate
    pause: tuple[int, int] | None = None  # samples (start, end) of the mid-sentence pause
    speech_end: int = 0  # samples: true end of speech
    nominal_pause: int = 0  # ms of the SSML break
    q: int = -1  # index of the question in QUESTIONS (even: the tuning half, odd: held out)


def _espeak(text: str, voice: str, ssml: bool = False) -> np.ndarray:
    from voicecall.speech.tts_espeak import _espeak as lib_

    lib = lib_()
    with lib.lock:
        pcm = lib.speak(text, voice, 175, ssml)
    return resample(pcm, lib.sample_rate, ENGINE_RATE)


def _loud(pcm: np.ndarray, dbfs: float = -40.0) -> np.ndarray:
    win = ENGINE_RATE // 100
    n = len(pcm) // win
    frames = pcm[: n * win].astype(np.float64).reshape(n, win)
    return 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) / 32768 + 1e-9) > dbfs


def _noise(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(0.25 * ENGINE_RATE)
    env = np.exp(-np.arange(n) / (0.06 * ENGINE_RATE))
    if kind == "cough":  # a burst of band-passed noise
        x = np.convolve(rng.normal(0, 1, n), np.ones(8) / 8, "same") * env * 9000
    else:  # a knock: a decaying low thud
        t = np.arange(n) / ENGINE_RATE
        x = np.sin(2 * np.pi * 140 * t) * env * 12000
    return x.astype(np.int16)


def build_set(n_questions: int, voices: list[str]) -> list[Turn]:
    turns: list[Turn] = []
    i = 0
    for voice in voices:
        for q, (a, b) in enumerate(QUESTIONS[:n_questions]):
            full = _espeak(f"{a} {b}", voice)
            loud = np.flatnonzero(_loud(full))
            turns.append(Turn("complete", f"{a} {b}", voice, full, speech_end=int((loud[-1] + 1) * ENGINE_RATE / 100),
                              q=q))
            pause = PAUSES_MS[i % len(PAUSES_MS)]
            i += 1
            cut = _espeak(f'{a} <break time="{pause}ms"/> {b}', voice, ssml=True)
            lv = _loud(cut)
            # the pause: the longest quiet run
            best, run, start = (0, 0), 0, 0
            for k, quiet in enumerate(~lv):
                run = run + 1 if quiet else 0
                if run == 1:
                    start = k
                if run > best[1] - best[0]:
                    best = (start, k + 1)
            loud = np.flatnonzero(lv)
            turns.append(Turn("cut", f"{a} ({pause} ms) {b}", voice, cut,
                              pause=(best[0] * ENGINE_RATE // 100, best[1] * ENGINE_RATE // 100),
                              speech_end=int((loud[-1] + 1) * ENGINE_RATE / 100), nominal_pause=pause, q=q))
    for k, word in enumerate(BACKCHANNELS):
        for voice in voices:
            turns.append(Turn("backchannel", word, voice, _espeak(word, voice)))
    for k, kind in enumerate(["cough", "knock", "cough", "knock"]):
        turns.append(Turn("noise", kind, "-", _noise(kind, k)))
    for k, text in enumerate(INTERRUPTIONS):
        for voice in voices[:2]:
            turns.append(Turn("interrupt", text, voice, _espeak(text, voice)))
    return turns


def _mic(pcm: np.ndarray, seed: int) -> np.ndarray:
    x = pcm.astype(np.float64) + np.random.default_rng(seed).normal(0, 60, len(pcm))
    return np.clip(x, -32768, 32767).astype(np.int16)


async def _session(url: str, td: dict[str, Any], create_response: bool) -> Any:
    import websockets

    ws = await websockets.connect(url, subprotocols=["realtime"], max_size=1 << 24,  # type: ignore[list-item]
                                  ping_interval=None)
    await ws.recv()
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "transcription": {"model": "whisper-1"}, "turn_detection": {**td, "create_response": create_response}}}}}))
    return ws


async def _append(ws: Any, pcm: np.ndarray) -> None:
    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()}))


async def _stream(ws: Any, audio: np.ndarray) -> None:
    """Append ``audio`` in real time."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for k in range(0, len(audio), CHUNK):
        await _append(ws, audio[k:k + CHUNK])
        await asyncio.sleep(max(0.0, t0 + (k + CHUNK) / ENGINE_RATE - loop.time()))


def pick_configs(names: str) -> list[tuple[str, dict[str, Any]]]:
    """``--settings``: "server_vad,auto" -> the matching :data:`CONFIGS` (an eagerness alone names its
    semantic_vad setting)."""
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    picked = [(name, td) for name, td in CONFIGS if name in wanted or name.removeprefix("semantic_vad ") in wanted]
    if not picked:
        raise SystemExit(f"--settings: none of {sorted(wanted)} is one of server_vad, high, auto, low")
    return picked


async def eot_run(url: str, turns: list[Turn], configs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Stream every complete/cut turn (then GAP_MS of silence) to one session per config, in real time."""
    eot = [t for t in turns if t.kind in ("complete", "cut")]
    gap = np.zeros(ENGINE_RATE * GAP_MS // 1000, np.int16)
    parts, spans, offset = [], [], 0
    for t in eot:
        spans.append(offset)
        parts.append(t.pcm)
        parts.append(gap)
        offset += len(t.pcm) + len(gap)
    audio = _mic(np.concatenate(parts), 11)
    sessions = [await _session(url, td, False) for _, td in configs]
    stops: list[list[int]] = [[] for _ in configs]
    stop_items: list[dict[int, str]] = [{} for _ in configs]  # stop sample -> item id
    heard: dict[str, str] = {}  # item id -> final transcript

    async def reader(i: int) -> None:
        async for raw in sessions[i]:
            ev = json.loads(raw)
            if ev["type"] == "input_audio_buffer.speech_stopped":
                stops[i].append(int(ev["audio_end_ms"] * ENGINE_RATE / 1000))
                stop_items[i][stops[i][-1]] = ev.get("item_id") or ""
            elif ev["type"] == "conversation.item.input_audio_transcription.completed":
                heard[ev["item_id"]] = ev["transcript"]

    readers = [asyncio.create_task(reader(i)) for i in range(len(configs))]
    decisions = _Decisions()  # how each semantic_vad end was decided (an in-process server only)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        for k in range(0, len(audio), CHUNK):
            await asyncio.gather(*(_append(ws, audio[k:k + CHUNK]) for ws in sessions))
            if k % (ENGINE_RATE * 10) < CHUNK:
                progress(f"end of turn: {k / ENGINE_RATE:.0f} / {len(audio) / ENGINE_RATE:.0f} s of audio streamed")
            await asyncio.sleep(max(0.0, t0 + (k + CHUNK) / ENGINE_RATE - loop.time()))
        await asyncio.sleep(1.0)
    finally:
        decisions.close()
    for r in readers:
        r.cancel()
    for ws in sessions:
        await ws.close()
    out: dict[str, Any] = {}
    voices = sorted({t.voice for t in eot})
    for i, (name, td) in enumerate(configs):
        rows: list[dict[str, Any]] = []
        # the session of this eagerness ended its turns in the order of its speech_stopped events
        how = _match(stops[i], decisions.of(td["eagerness"])) if td.get("eagerness") else {}
        for t, start in zip(eot, spans, strict=True):
            end = start + t.speech_end
            window = [s for s in stops[i] if start < s <= start + len(t.pcm) + len(gap)]
            cut_off = t.pause is not None and any(start + t.pause[0] <= s < start + t.pause[1] + ENGINE_RATE // 10
                                                  for s in window)
            final = [s for s in window if s >= end]
            dead = (final[0] - end) * 1000 / ENGINE_RATE if final else None
            rows.append({"kind": t.kind, "text": t.text, "voice": t.voice, "q": t.q, "cut_off": cut_off,
                         "dead_air_ms": dead, "heard": [heard.get(stop_items[i][s], "") for s in window],
                         "decided": [how.get(s) for s in window],
                         "stops": len(window), "pause_ms": (t.pause[1] - t.pause[0]) * 1000 // ENGINE_RATE
                         if t.pause else None, "nominal_pause_ms": t.nominal_pause})
        out[name] = {"rows": rows, **_eot_figures(rows),
                     "missed_ends": sum(1 for r in rows if r["dead_air_ms"] is None),
                     "decided": _decided_by(rows),
                     "by_voice": {v: _eot_figures([r for r in rows if r["voice"] == v]) for v in voices},
                     "by_half": {h: _eot_figures([r for r in rows if r["q"] % 2 == k])
                                 for k, h in enumerate(("even (tuning)", "odd (held out)"))}}
    return out


class _Decisions(logging.Handler):
    """Collects the endpointer's record of each end of turn (engine/endpointing.py, ``Endpointer._ended``): what
    decided, the model's verdict, the words, and when (ms of silence) each came. In-process server only."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[dict[str, Any]] = []
        self._log = logging.getLogger("voicecall.engine.endpointing")
        self._saved = (self._log.level, self._log.propagate)
        self._log.setLevel(logging.DEBUG)
        self._log.propagate = False  # these debug records are for the bench, not the console
        self._log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        info = getattr(record, "end_of_turn", None)
        if info is not None:
            self.records.append(info)
        elif record.levelno >= logging.WARNING:
            logging.getLogger().handle(record)

    def of(self, eagerness: str) -> list[dict[str, Any]]:
        name = "auto" if eagerness == "medium" else eagerness
        return [r for r in self.records if r.get("eagerness") == name]

    def close(self) -> None:
        self._log.removeHandler(self)
        self._log.setLevel(self._saved[0])
        self._log.propagate = self._saved[1]
        super().close()


def _match(stops: list[int], records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each end of turn (a ``speech_stopped`` at engine sample ``s``) with the endpointer's record of it: the one
    logged at the same point of the audio clock (within 100 ms: the VAD's batching)."""
    out: dict[int, dict[str, Any]] = {}
    for s in stops:
        ms = s * 1000 / ENGINE_RATE
        near = min(records, key=lambda r: abs(r.get("audio_ms", -1e9) - ms), default=None)
        if near is not None and abs(near.get("audio_ms", -1e9) - ms) <= 100:
            out[s] = near
    return out


def _decided_by(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the true ends of complete turns were decided, and when the model's verdict and the words came."""
    return _ends_summary([r["decided"][-1] for r in rows
                          if r["kind"] == "complete" and r.get("decided") and r["decided"][-1]])


def _ends_summary(ends: list[dict[str, Any]]) -> dict[str, Any]:
    """What decided these ends of turn, and after how much silence the verdict, the words and the end came."""
    by: dict[str, int] = {}
    for e in ends:
        by[e["by"]] = by.get(e["by"], 0) + 1
    return {"by": by, "verdict_at_ms": summary([e.get("verdict_at_ms") for e in ends]),
            "words_at_ms": summary([e.get("words_at_ms") for e in ends]),
            "ended_at_ms": summary([e.get("at_ms") for e in ends])}


def _eot_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Cut-off rates and dead air of a slice of the rows (one voice, one half of the questions)."""
    cut = [r for r in rows if r["kind"] == "cut"]
    short = [r for r in cut if r["nominal_pause_ms"] <= 1000]
    return {"cut_off_rate": sum(r["cut_off"] for r in cut) / max(1, len(cut)),
            "cut_off_rate_le_1s": sum(r["cut_off"] for r in short) / max(1, len(short)),
            "n_cut": len(cut), "n_cut_le_1s": len(short),
            "dead_air_ms": summary([r["dead_air_ms"] for r in rows if r["kind"] == "complete"])}


async def interruption_run(url: str, turns: list[Turn]) -> dict[str, Any]:
    """Say each backchannel / noise / interruption while an answer plays (WebSocket, server_vad)."""
    ws = await _session(url, {"type": "server_vad"}, True)
    rows: list[dict[str, Any]] = []
    items = [t for t in turns if t.kind in ("backchannel", "noise", "interrupt")]
    for n, t in enumerate(items):
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
                                  "content": [{"type": "input_text", "text": "Tell me a long story about a lighthouse."}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        events: list[str] = []
        status = None
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 120))
            events.append(ev["type"])
            if ev["type"] == "response.output_audio.delta":
                break
        heard: list[str] = []  # what the recogniser made of it, when it became a user turn
        lead = np.zeros(ENGINE_RATE // 5, np.int16)
        audio = _mic(np.concatenate([lead, t.pcm, np.zeros(ENGINE_RATE * 2, np.int16)]), n)
        sender = asyncio.create_task(_stream(ws, audio))
        done = False
        while not (done and sender.done()):
            try:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except TimeoutError:
                continue
            events.append(ev["type"])
            if ev["type"] == "response.done" and status is None:
                status = ev["response"]["status"]
                done = True
            elif ev["type"] == "conversation.item.input_audio_transcription.completed":
                heard.append(ev["transcript"])
        stopped = "input_audio_buffer.speech_started" in events or status == "cancelled"
        rows.append({"kind": t.kind, "text": t.text, "voice": t.voice, "stopped": stopped, "status": status,
                     "heard": heard})
        progress(f"interruptions: {n + 1}/{len(items)} {t.kind} {t.text!r}: {'stopped' if stopped else 'went on'}")
        # let any answer to a real interruption finish before the next item
        if stopped:
            with contextlib.suppress(TimeoutError):
                while True:
                    ev = json.loads(await asyncio.wait_for(ws.recv(), 20))
                    if ev["type"] == "conversation.item.input_audio_transcription.completed":
                        heard.append(ev["transcript"])
                    if ev["type"] == "response.done":
                        break
    await ws.close()
    false = [r for r in rows if r["kind"] in ("backchannel", "noise")]
    real = [r for r in rows if r["kind"] == "interrupt"]
    return {"rows": rows, "false_interruption_rate": sum(r["stopped"] for r in false) / max(1, len(false)),
            "real_interruption_stop_rate": sum(r["stopped"] for r in real) / max(1, len(real))}


async def v2v_run(url: str, turns: list[Turn], runs: int, configs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Voice-to-voice on complete questions (WebSocket), per setting: last speech sample sent -> first answer audio."""
    complete = [t for t in turns if t.kind == "complete"]
    picks = [complete[(i * 7) % len(complete)] for i in range(runs)]  # spread over questions and voices
    out: dict[str, Any] = {}
    decisions = _Decisions()  # the endpointer's record of each end (semantic_vad, in-process server)
    try:
        for name, td in configs:
            out[name] = await _v2v_setting(url, picks, name, td, decisions)
    finally:
        decisions.close()
    return out


async def _v2v_setting(url: str, picks: list[Turn], name: str, td: dict[str, Any],
                       decisions: _Decisions) -> dict[str, Any]:
    from voicecall.bench.latency import PARTS, one_turn_ws

    rows = []
    for i, t in enumerate(picks):
        seen = len(decisions.records)
        r = await one_turn_ws(url, _mic(t.pcm, 40 + i), turn_detection=td)
        r.update(text=t.text, voice=t.voice)
        # the turn's end (one session, one turn: the last record logged during the run)
        r["decided"] = decisions.records[-1] if len(decisions.records) > seen else None
        rows.append(r)
        v = r.get("voice_to_voice_ms")
        progress(f"voice-to-voice {name} {i + 1}/{len(picks)}: " + (f"{v:.0f} ms" if v is not None else "no answer"))
    return {"rows": rows, "voice_to_voice_ms": summary([r.get("voice_to_voice_ms") for r in rows]),
            "parts_ms": {k: summary([r.get(k) for r in rows]) for k in PARTS},
            "speculative": sum(1 for r in rows if r.get("speculative")) / max(1, len(rows)),
            "decided": _ends_summary([r["decided"] for r in rows if r.get("decided")])}


async def barge_in_run(base: str, runs: int) -> dict[str, Any]:
    """Real interruptions over WebRTC: user speech onset -> answer audio silent at the client."""
    from voicecall.bench.latency_webrtc import barge_in_webrtc

    question = _mic(_espeak("Tell me a story about a lighthouse keeper and his cat.", "en-us"), 3)
    rows = []
    for i in range(runs):
        text, voice = INTERRUPTIONS[i % len(INTERRUPTIONS)], VOICES[i % 2]
        r = await barge_in_webrtc(base, question, _mic(_espeak(text, voice), 20 + i))
        r.update(text=text, voice=voice)
        rows.append(r)
        stop = r.get("stop_ms")
        progress(f"barge-in {i + 1}/{runs}: " + (f"answer silent {stop:.0f} ms after the speech onset" if stop is not None
                                                  else f"no measurement ({r.get('errors')})"))
    return {"rows": rows, "stop_ms": summary([r.get("stop_ms") for r in rows])}


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    progress("building the labelled set (espeak-ng voices)…")
    turns = build_set(args.questions, VOICES[:args.voices])
    counts = {k: sum(1 for t in turns if t.kind == k) for k in ("complete", "cut", "backchannel", "noise", "interrupt")}
    progress(f"{len(turns)} turns: {counts}")
    server = None
    url = args.url
    if url is None:
        server = InProcessServer(args.config, {}).__enter__()
        url = server.ws_url
    try:
        configs = pick_configs(args.settings)
        eot = await eot_run(url, turns, configs) if not args.skip_eot else {}
        inter = await interruption_run(url, turns) if not args.skip_interruptions else {}
        v2v = await v2v_run(url, turns, args.v2v, configs) if args.v2v else {}
        base = url.replace("ws://", "http://").removesuffix("/v1/realtime")
        barge = await barge_in_run(base, args.barge_in) if args.barge_in else {}
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    return {"benchmark": "turns", "machine": machine_info(), "set": counts, "voices": VOICES[:args.voices],
            "settings": [name for name, _ in configs], "end_of_turn": eot, "interruptions": inter,
            "voice_to_voice": v2v, "barge_in_webrtc": barge}


def print_table(data: dict[str, Any]) -> None:
    print(f"labelled set: {data['set']} (voices {', '.join(data['voices'])})")
    print(f"{'setting':<20} {'cut-offs':>9} {'≤1 s':>6} {'dead air p50':>13} {'p95':>6} {'missed':>7}"
          f" {'v2v p50':>8} {'p95':>6}")
    v2v = data.get("voice_to_voice") or {}
    names = data.get("settings") or [name for name, _ in CONFIGS]

    def ms(d: dict[str, Any] | None, k: str) -> str:
        return f"{d[k]:.0f}" if d and d.get(k) is not None else "-"

    def pct(x: float | None) -> str:
        return f"{100 * x:.0f}%" if x is not None else "-"

    for name in names:
        r = data["end_of_turn"].get(name) or {}
        d = r.get("dead_air_ms")
        v = (v2v.get(name) or {}).get("voice_to_voice_ms")
        print(f"{name:<20} {pct(r.get('cut_off_rate')):>9} {pct(r.get('cut_off_rate_le_1s')):>6} {ms(d, 'p50'):>13} "
              f"{ms(d, 'p95'):>6} {r.get('missed_ends', '-'):>7} {ms(v, 'p50'):>8} {ms(v, 'p95'):>6}")
    for name in names:
        r = data["end_of_turn"].get(name) or {}
        for group in ("by_voice", "by_half"):
            parts = [f"{k}: cut-offs {pct(f['cut_off_rate'])} (≤1 s {pct(f['cut_off_rate_le_1s'])}), dead air p50 "
                     f"{ms(f['dead_air_ms'], 'p50')} p95 {ms(f['dead_air_ms'], 'p95')}"
                     for k, f in (r.get(group) or {}).items()]
            if parts:
                print(f"  {name} {group.replace('_', ' ')}: " + "; ".join(parts))
    for name in names:
        dec = (data["end_of_turn"].get(name) or {}).get("decided") or {}
        if dec.get("by"):
            print(f"  {name} complete turns ended by: {dec['by']}; model verdict after {ms(dec['verdict_at_ms'], 'p50')}"
                  f" ms of silence (p50), the pause's words after {ms(dec['words_at_ms'], 'p50')} ms, end after "
                  f"{ms(dec['ended_at_ms'], 'p50')} ms (p95 {ms(dec['ended_at_ms'], 'p95')})")
    for name in names:
        v = v2v.get(name) or {}
        if v.get("parts_ms"):
            print(f"  v2v {name}: " + ", ".join(f"{k.removesuffix('_ms')} p50 {ms(d, 'p50')}"
                                                for k, d in v["parts_ms"].items()) +
                  f"; speculative answers {pct(v.get('speculative'))}")
        dec = v.get("decided") or {}
        if dec.get("by"):
            print(f"  v2v {name} ended by: {dec['by']}; model verdict after {ms(dec['verdict_at_ms'], 'p50')} ms of "
                  f"silence (p50), the pause's words after {ms(dec['words_at_ms'], 'p50')} ms, end after "
                  f"{ms(dec['ended_at_ms'], 'p50')} ms (p95 {ms(dec['ended_at_ms'], 'p95')})")
    inter = data["interruptions"]
    if inter:
        print(f"false interruptions (backchannels/noises that stopped the answer): "
              f"{100 * inter['false_interruption_rate']:.0f}%; real interruptions that stopped it: "
              f"{100 * inter['real_interruption_stop_rate']:.0f}%")
    barge = data.get("barge_in_webrtc") or {}
    if barge:
        st = barge["stop_ms"]
        if st["p50"] is not None:
            print(f"barge-in stop latency (WebRTC, speech onset -> answer silent at the client): p50 {st['p50']:.0f} ms, "
                  f"p95 {st['p95']:.0f} ms over {st['n']} runs")
    print("(dead air: end of speech -> speech_stopped, on the audio clock, complete questions)")


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in data["end_of_turn"].items():
        d = r["dead_air_ms"]
        if d["p50"] is None:
            continue
        ax.errorbar([d["p50"]], [100 * r["cut_off_rate"]], xerr=[[0], [max(0.0, (d["p95"] or d["p50"]) - d["p50"])]],
                    fmt="o", capsize=4, label=name)
        ax.annotate(name, (d["p50"], 100 * r["cut_off_rate"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("dead air after the true end of turn, ms (p50, bar to p95)")
    ax.set_ylabel("false cut-offs on mid-sentence pauses, %")
    ax.set_title("voicecall end of turn: cut-offs vs dead air")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to plot when the end-of-turn part was skipped
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.barge_in and args.url is None:
        import sys

        from voicecall.bench.sessions import ensure_netns

        ensure_netns(sys.argv[1:])  # WebRTC runs in a loopback-only network namespace
    return report(asyncio.run(run_async(args)), args.out, print_table, plot)
