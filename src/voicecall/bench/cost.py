"""``voicecall bench cost``: what a 10-minute call costs through each configuration, from measured usage.

A scripted call (:data:`SCRIPT`: a user's questions, spoken by the embedded Piper voice, and the assistant's answers,
spoken at 160 words a minute) is replayed, turn after turn, through a real voicecall server with the official
``openai`` SDK as the client. The cloud services are the local stand-ins of :mod:`voicecall.bench.standins` (the
same wire protocols; they play the script: the question as the transcript, the answer as the reply), so what is
*measured* is what the vendors bill: audio seconds sent to the recogniser, LLM tokens in and out (the stand-ins count
~4 characters per token), characters sent to the synthesizer, seconds of speech made. Each configuration's bill is then priced with the default price table
(:mod:`voicecall.speech.prices`, vendors' public pages, dated):

* ``realtime`` — OpenAI Realtime (``gpt-realtime``) through voicecall's gateway. The upstream is a voicecall engine
  answering with the script; the gateway relays its ``response.done`` usage, in OpenAI's units (user audio
  10 tokens/s, assistant audio 20 tokens/s, the conversation's text). OpenAI bills the whole conversation as input at
  every response, the assistant's earlier audio included, so each response's input audio is counted as the user
  audio in context (relayed) plus the assistant audio of the earlier responses (relayed output). Priced with
  gpt-realtime's prices, two ways: the part of each input already sent in the previous response at the cached-input
  price (what OpenAI's automatic prompt caching gives at best), and with no caching at all (the worst case).
* ``claude`` — Deepgram nova-3 + Claude Haiku 4.5 + ElevenLabs Flash v2.5 (the pipeline's own ``response.done`` cost).
* ``openai`` — gpt-4o-mini-transcribe + gpt-4o-mini + gpt-4o-mini-tts.
* ``local`` — the embedded stack (Whisper tiny.en, SmolLM2, Piper): the same measured usage, priced at $0.

The call is replayed faster than real time (audio is appended as fast as the server takes it); call minutes are
counted from the audio itself (user speech, assistant speech, a 1 s pause each way per turn), and every figure is
scaled to exactly ``--minutes`` of call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from collections import deque
from contextlib import ExitStack
from typing import Any

import numpy as np

from voicecall.audio import ENGINE_RATE
from voicecall.bench.common import InProcessServer, machine_info, progress, report, utterance_pcm, write_json

SCRIPT: list[tuple[str, str]] = [
    ("Hi, I would like to book a table for dinner tonight.",
     "Of course. For how many people, and around what time would you like the table?"),
    ("For four people at around eight.",
     "I have a table for four at eight fifteen on the terrace, or at eight inside. Which would you prefer?"),
    ("Inside please, it might get cold later.",
     "Good choice. The table inside at eight is yours. Could I have a name for the booking?"),
    ("The name is Taylor.",
     "Thank you, Taylor. A table for four at eight tonight, inside. Do you have any allergies I should note?"),
    ("One of us is allergic to peanuts.",
     "Noted: a peanut allergy. The kitchen will prepare that guest's dishes separately. Anything else?"),
    ("Do you have vegetarian options?",
     "Yes, we have a mushroom risotto, a vegetable curry and a goat cheese salad, and most starters are vegetarian."),
    ("Is there parking nearby?",
     "There is a public car park two minutes away on Market Street. It is free after seven in the evening."),
    ("Great. Can we bring our own wine?",
     "You can. We charge a corkage fee of ten dollars per bottle, and we are happy to chill it for you."),
    ("What time does the kitchen close?",
     "The kitchen takes its last orders at ten thirty, so you will have plenty of time."),
    ("Perfect, thank you so much.",
     "You are welcome, Taylor. We look forward to seeing you tonight at eight. Have a lovely day."),
]
PAUSE_S = 1.0
SPEECH_WPM = 160
INSTRUCTIONS = "You are the friendly phone assistant of a restaurant. Answer in one or two short sentences."
CONFIGS = ("realtime", "claude", "openai", "local")
TURN_TIMEOUT_S = 120.0


def _plan(minutes: float, questions: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """Turns of the script, cycled until the call lasts ``minutes``."""
    turns: list[tuple[str, str]] = []
    total = 0.0
    while total < minutes * 60:
        q, a = SCRIPT[len(turns) % len(SCRIPT)]
        turns.append((q, a))
        total += len(questions[q]) / ENGINE_RATE + len(a.split()) * 60 / SPEECH_WPM + 2 * PAUSE_S
    return turns


async def _drive(http: str, turns: list[tuple[str, str]], questions: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Speak every turn through the server; the ``response.done`` of each."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="bench", base_url=f"{http}/v1", websocket_base_url=http.replace("http", "ws", 1) + "/v1")
    dones: list[dict[str, Any]] = []
    pause = np.zeros(int(PAUSE_S * 1.2 * ENGINE_RATE), np.int16)
    async with client.realtime.connect(model="gpt-realtime",
                                       websocket_connection_options={"ping_interval": None},  # type: ignore[typeddict-unknown-key]
                                       ) as conn:
        await conn.session.update(session={"type": "realtime", "instructions": INSTRUCTIONS, "audio": {"input": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        for n, (q, _a) in enumerate(turns):
            pcm = np.concatenate([questions[q], pause])
            for i in range(0, len(pcm), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 4800].tobytes()).decode())
            try:
                dones.append(await asyncio.wait_for(_response_done(conn), TURN_TIMEOUT_S))
            except TimeoutError:
                progress(f"  turn {n + 1}: no response.done within {TURN_TIMEOUT_S:g} s; going on")
            if (n + 1) % 10 == 0:
                progress(f"  {n + 1}/{len(turns)} turns")
    return dones


async def _response_done(conn: Any) -> dict[str, Any]:
    async for event in conn:
        if event.type == "response.done":
            return dict(event.response.model_dump())
        if event.type == "error":
            progress(f"  error: {event.error.message}")
    raise RuntimeError("the server closed the session")


def _script(standin: Any, turns: list[tuple[str, str]]) -> None:
    """The stand-ins answer the script: the question as the transcript, the answer as the LLM's reply, spoken at 160
    words a minute (0.375 s per word)."""
    standin.answers.extend(a for _q, a in turns)
    standin.transcripts = deque(q for q, _a in turns)
    standin.word_ms, standin.gap_ms = 300, 75


def _stack(kind: str, s: dict[str, Any]) -> dict[str, Any]:
    from voicecall.speech.prices import DEFAULT_STAGE_PRICES, PRICE_FIELDS

    vad = {"type": "silero"}
    if kind == "claude":
        return {"vad": vad, "stt": {"type": "deepgram", "baseUrl": s["deepgram"].ws, "apiKey": "bench", "timeout": 30},
                "llm": {"type": "anthropic", "baseUrl": s["anthropic"].http, "apiKey": "bench", "timeout": 30},
                "tts": {"type": "elevenlabs", "baseUrl": s["eleven"].ws, "apiKey": "bench", "timeout": 30}}
    if kind == "openai":
        base = s["openai"].http + "/v1"
        fields = {v: k for k, v in PRICE_FIELDS.items()}
        prices = {}  # the stand-in is not api.openai.com: price it as OpenAI's own models
        for model in ("gpt-4o-mini-transcribe", "gpt-4o-mini", "gpt-4o-mini-tts"):
            p = DEFAULT_STAGE_PRICES[f"openai/{model}"]
            prices[f"openai-compatible/{model}"] = {fields[f]: getattr(p, f) for f in fields if getattr(p, f)}
        return {"vad": vad, "prices": prices,
                "stt": {"type": "openai-compatible", "baseUrl": base, "apiKey": "bench", "model": "gpt-4o-mini-transcribe"},
                "llm": {"type": "openai-compatible", "baseUrl": base, "apiKey": "bench", "model": "gpt-4o-mini"},
                "tts": {"type": "openai-compatible", "baseUrl": base, "apiKey": "bench", "model": "gpt-4o-mini-tts"}}
    if kind == "realtime":  # the upstream engine behind the gateway: scripted answers, 160 wpm speech
        return {"vad": vad, "stt": {"type": "deepgram", "baseUrl": s["deepgram"].ws, "apiKey": "bench", "timeout": 30},
                "llm": {"type": "anthropic", "baseUrl": s["anthropic"].http, "apiKey": "bench", "timeout": 30},
                "tts": {"type": "tone", "wordMs": 300, "gapMs": 75}}
    return {"speculative": False}  # local: the embedded default stack


def _local_overrides(stack: dict[str, Any]) -> dict[str, Any]:
    return {f"plugins.voice-call.local.{k}": v for k, v in stack.items()} | {"store.url": "none"}


def _realtime_cost(dones: list[dict[str, Any]]) -> dict[str, Any]:
    """gpt-realtime's price for the usage the gateway relayed: without caching, and with each response's input up to
    the previous response's input size billed at the cached price."""
    from voicecall.store.pricing import PriceTable, usage_tokens

    table = PriceTable()
    price = table.price_for("gpt-realtime")
    plain = 0.0
    cached_total = 0.0
    prev = {"text_in": 0.0, "audio_in": 0.0}
    said = 0.0  # assistant audio tokens so far: OpenAI bills the conversation's audio, the assistant's too, as input
    for d in dones:
        t = usage_tokens(d.get("usage") or {})
        t["audio_in"] += said
        said += t["audio_out"]
        for kind in ("text", "audio"):
            fresh = t[f"{kind}_in"]
            hit = min(prev[f"{kind}_in"], fresh)
            cached_total += (fresh - hit) * getattr(price, f"{kind}_in") + hit * getattr(price, f"{kind}_cached")
            plain += fresh * getattr(price, f"{kind}_in")
            prev[f"{kind}_in"] = fresh
        out = t["text_out"] * price.text_out + t["audio_out"] * price.audio_out
        cached_total += out
        plain += out
    tokens = {k: sum(usage_tokens(d.get("usage") or {})[k] for d in dones) for k in ("text_in", "audio_in", "text_out",
                                                                                         "audio_out")}
    return {"usd_no_cache": plain / 1e6, "usd_cached": cached_total / 1e6, "tokens": tokens}


def _pipeline_cost(dones: list[dict[str, Any]]) -> dict[str, Any]:
    stages: dict[str, dict[str, float]] = {}
    for d in dones:
        for stage, block in (((d.get("x_voicecall") or {}).get("cost") or {}).get("stages") or {}).items():
            acc = stages.setdefault(stage, {"usd": 0.0, "audio_seconds": 0.0, "characters": 0.0,
                                            "input_tokens": 0.0, "output_tokens": 0.0})
            acc["usd"] += float(block.get("usd") or 0.0)
            for p in block.get("providers") or []:
                for k in ("audio_seconds", "characters", "input_tokens", "output_tokens"):
                    acc[k] += float(p.get(k) or 0.0)
    return {"usd": sum(v["usd"] for v in stages.values()), "stages": stages}


def run(args: argparse.Namespace) -> int:
    from voicecall.bench.standins.anthropic import AnthropicStandIn
    from voicecall.bench.standins.deepgram import DeepgramStandIn
    from voicecall.bench.standins.elevenlabs import ElevenLabsStandIn
    from voicecall.bench.standins.openai_audio import OpenAIAudioStandIn

    progress("speaking the script's questions (Piper)…")
    questions = {q: utterance_pcm(q) for q, _a in SCRIPT}
    turns = _plan(args.minutes, questions)
    user_s = sum(len(questions[q]) for q, _a in turns) / ENGINE_RATE
    answer_s = sum(len(a.split()) for _q, a in turns) * 60 / SPEECH_WPM
    call_s = user_s + answer_s + 2 * PAUSE_S * len(turns)
    scale = args.minutes * 60 / call_s
    results: dict[str, Any] = {}
    for kind in args.configs:
        progress(f"{kind}: {len(turns)} turns…")
        t0 = time.monotonic()
        with ExitStack() as stack:
            s = {"anthropic": stack.enter_context(AnthropicStandIn("bench")),
                 "deepgram": stack.enter_context(DeepgramStandIn("bench")),
                 "eleven": stack.enter_context(ElevenLabsStandIn("bench")),
                 "openai": stack.enter_context(OpenAIAudioStandIn("bench"))}
            for standin in s.values():
                _script(standin, turns)
            srv = stack.enter_context(InProcessServer(None, _local_overrides(_stack(kind, s))))
            target = srv
            if kind == "realtime":
                target = stack.enter_context(InProcessServer(None, {
                    "plugins.voice-call.provider": "openai-realtime", "store.url": "none",
                    "plugins.voice-call.openaiRealtime.apiKey": "sk-bench",
                    "plugins.voice-call.openaiRealtime.baseUrl": srv.http + "/v1"}))
            dones = asyncio.run(_drive(target.http, turns, questions))
        entry: dict[str, Any] = {"turns": len(dones), "seconds": round(time.monotonic() - t0, 1),
                                 "failed": sum(1 for d in dones if d.get("status") != "completed")}
        if kind == "realtime":
            rt = _realtime_cost(dones)
            entry.update(usd_no_cache=rt["usd_no_cache"] * scale, usd=rt["usd_cached"] * scale,
                         tokens={k: v * scale for k, v in rt["tokens"].items()})
        else:
            pc = _pipeline_cost(dones)
            entry.update(usd=pc["usd"] * scale,
                         stages={k: {kk: vv * scale for kk, vv in v.items()} for k, v in pc["stages"].items()})
        results[kind] = entry
        write_json(args.out, {"bench": "cost", "partial": True, "configs": results})  # a long run keeps what it has
    data = {"bench": "cost", "minutes": args.minutes, "turns": len(turns), "call_seconds_replayed": round(call_s, 1),
            "user_speech_seconds": round(user_s * scale, 1), "assistant_speech_seconds": round(answer_s * scale, 1),
            "configs": results, "machine": machine_info()}
    return report(data, args.out, _print, _plot)


def _print(data: dict[str, Any]) -> None:
    print(f"a {data['minutes']:g}-minute call ({data['turns']} turns replayed; user speaks "
          f"{data['user_speech_seconds']:.0f} s, assistant {data['assistant_speech_seconds']:.0f} s):")
    for kind, e in data["configs"].items():
        extra = ""
        if "stages" in e:
            extra = "  (" + ", ".join(f"{k.upper()} ${v['usd']:.3f}" for k, v in e["stages"].items()) + ")"
        if "usd_no_cache" in e:
            extra = f"  (without prompt caching ${e['usd_no_cache']:.2f})"
        print(f"  {kind:9s} ${e['usd']:.3f}{extra}")


def _plot(data: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(data["configs"])
    bottoms = [0.0] * len(names)
    for stage, color in (("stt", "#4c72b0"), ("llm", "#55a868"), ("tts", "#c44e52"), ("realtime", "#8172b2")):
        vals = []
        for kind in names:
            e = data["configs"][kind]
            vals.append(e["usd"] if stage == "realtime" and "stages" not in e
                        else (e.get("stages") or {}).get(stage, {}).get("usd", 0.0))
        ax.bar(names, vals, bottom=bottoms, color=color, label=stage.upper() if stage != "realtime" else "gpt-realtime")
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_ylabel(f"USD per {data['minutes']:g}-minute call")
    ax.set_title("Cost of a scripted call, by configuration and stage")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

