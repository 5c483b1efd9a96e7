"""``voicecall bench latency``: voice-to-voice latency of complete spoken turns, as a client hears it.

Each run opens a session, streams a recorded utterance in real time (20 ms appends) followed by real-time silence,
and measures from the moment the last speech sample was sent to the first answer audio delta received
(voice-to-voice), plus the server-reported parts of it (``response.done.response.x_voicecall.latency_ms``):
end-of-turn wait (VAD silence window), STT final, LLM first token, TTS first audio, and processing (end-of-turn
decision -> first audio). Prints per run and p50/p95, writes JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.audio import ENGINE_RATE
from voicecall.bench.common import (
    UTTERANCES,
    InProcessServer,
    last_speech_sample,
    machine_info,
    progress,
    report,
    summary,
    utterance_pcm,
)

CHUNK = ENGINE_RATE // 50  # 20 ms
PARTS = ["end_of_turn_ms", "stt_final_ms", "llm_first_token_ms", "tts_first_audio_ms", "processing_ms"]


async def one_turn_ws(url: str, pcm: np.ndarray, turn_detection: dict[str, Any] | None = None) -> dict[str, Any]:
    import websockets

    last = last_speech_sample(pcm, ENGINE_RATE)
    # The same microphone noise floor before, under and after the words (digital zeros are no microphone's).
    lead = np.random.default_rng(5).normal(0, 60, ENGINE_RATE // 2).astype(np.int16)
    pcm = np.concatenate([lead, pcm])
    last += len(lead)
    silence = (np.random.default_rng(3).normal(0, 60, CHUNK)).astype(np.int16)
    result: dict[str, Any] = {}
    async with websockets.connect(url, subprotocols=["realtime"], max_size=1 << 24) as ws:  # type: ignore[list-item]
        await ws.recv()
        audio_in: dict[str, Any] = {"transcription": {"model": "whisper-1"}}
        if turn_detection is not None:
            audio_in["turn_detection"] = turn_detection
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {"input": audio_in}}}))
        t_last_speech: float | None = None
        first_audio: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        transcript: list[str] = []
        heard = asyncio.Event()

        async def reader() -> None:
            async for raw in ws:
                ev = json.loads(raw)
                t = ev["type"]
                if t == "response.output_audio.delta" and not first_audio.done():
                    first_audio.set_result(time.perf_counter())
                elif t == "conversation.item.input_audio_transcription.completed":
                    transcript.append(ev["transcript"])
                    heard.set()
                elif t == "response.output_audio_transcript.done":
                    result["answer"] = ev["transcript"]
                elif t == "response.done" and not done.done():
                    done.set_result(ev["response"])
                elif t == "error":
                    result.setdefault("errors", []).append(ev["error"]["message"])

        rtask = asyncio.create_task(reader())
        t0 = time.perf_counter()
        sent = 0
        i = 0
        while not first_audio.done() and time.perf_counter() - t0 < 30:
            chunk = pcm[i:i + CHUNK] if i < len(pcm) else silence
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk.tobytes()).decode()}))
            if i <= last < i + CHUNK:
                t_last_speech = time.perf_counter()
            i += CHUNK
            sent += CHUNK
            target = t0 + sent / ENGINE_RATE
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        if first_audio.done() and t_last_speech is not None:
            result["voice_to_voice_ms"] = (first_audio.result() - t_last_speech) * 1000
        try:
            resp = await asyncio.wait_for(done, 60)
            for k, v in resp.get("x_voicecall", {}).get("latency_ms", {}).items():
                result["server_" + k if k == "voice_to_voice_ms" else k] = v
            result["status"] = resp["status"]
        except TimeoutError:
            result["status"] = "timeout"
        # A speculative answer does not wait for the final transcript, which may come after response.done.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(heard.wait(), 5)
        result["heard"] = " ".join(transcript)
        rtask.cancel()
    return result


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    server = None
    url = args.url
    if url is None:
        overrides = {}
        if getattr(args, "stt", None):
            overrides["plugins.voice-call.local.stt.type"] = args.stt
        if getattr(args, "stt_processes", None) is not None:
            overrides["plugins.voice-call.local.stt.type"] = "pocketsphinx"
            overrides["plugins.voice-call.local.stt.processes"] = args.stt_processes
        server = InProcessServer(args.config, overrides).__enter__()
        url = server.ws_url
    try:
        progress("synthesizing test utterances…")
        clips = [(t, utterance_pcm(t)) for t in UTTERANCES]
        runs: list[dict[str, Any]] = []
        for n in range(args.runs):
            text, pcm = clips[n % len(clips)]
            if args.transport == "websocket":
                r = await one_turn_ws(url, pcm)
            else:
                from voicecall.bench.latency_webrtc import one_turn_webrtc

                base = url.replace("ws://", "http://").removesuffix("/v1/realtime")
                r = await one_turn_webrtc(base, pcm)
            r["utterance"] = text
            runs.append(r)
            v2v = r.get("voice_to_voice_ms")
            progress(f"run {n + 1}/{args.runs}: voice-to-voice {v2v:.0f} ms" if v2v is not None else
                     f"run {n + 1}/{args.runs}: no answer ({r.get('status')})")
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    stats = {k: summary([r.get(k) for r in runs]) for k in ["voice_to_voice_ms", *PARTS]}
    return {"benchmark": "latency", "transport": args.transport, "url": args.url or "in-process",
            "stt": getattr(args, "stt", None) or ("pocketsphinx" if getattr(args, "stt_processes", None) is not None
                                                   else "default"),
            "machine": machine_info(), "runs": runs, "summary": stats}


def print_table(data: dict[str, Any]) -> None:
    cols = ["voice_to_voice_ms", *PARTS]
    heads = ["v2v", "eot wait", "stt final", "llm 1st tok", "tts 1st audio", "processing"]
    print(f"{'#':>3}  " + "  ".join(f"{h:>13}" for h in heads) + "  heard / answer")
    for i, r in enumerate(data["runs"], 1):
        vals = "  ".join(f"{r[c]:>13.0f}" if isinstance(r.get(c), (int, float)) else f"{'-':>13}" for c in cols)
        print(f"{i:>3}  {vals}  {r.get('heard', '')!r} -> {r.get('answer', '')[:50]!r}")
    for p in ("p50", "p95"):
        vals = "  ".join(f"{data['summary'][c][p]:>13.0f}" if data["summary"][c][p] is not None else f"{'-':>13}"
                         for c in cols)
        print(f"{p:>3}  {vals}")
    print("(ms; v2v = last speech sample sent -> first answer audio received, as the client sees it)")


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = data["runs"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    idx = np.arange(1, len(runs) + 1)
    bottom = np.zeros(len(runs))
    for key, label in (("end_of_turn_ms", "end-of-turn wait"), ("stt_final_ms", "STT final"),
                       ("llm_first_token_ms", "LLM first token"), ("tts_first_audio_ms", "TTS first audio")):
        vals = np.array([r.get(key) or 0.0 for r in runs])
        ax.bar(idx, vals, bottom=bottom, label=label)
        bottom += vals
    v2v = [r.get("voice_to_voice_ms") for r in runs]
    ax.plot(idx, [v if v is not None else np.nan for v in v2v], "ko-", label="voice-to-voice (client)")
    ax.set_xlabel("run")
    ax.set_ylabel("ms")
    ax.set_title(f"voicecall turn latency ({data['transport']})")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    if args.transport == "webrtc" and args.url is None:
        import sys

        from voicecall.bench.sessions import ensure_netns

        ensure_netns(sys.argv[1:])  # WebRTC benchmarks run in a loopback-only network namespace
    return report(asyncio.run(run_async(args)), args.out, print_table, plot)
