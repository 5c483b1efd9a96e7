"""``voicecall bench stages``: each local speech stage measured alone, on this machine.

* VAD — cost per frame; start/end error of the detected speech on 10 Piper sentences with a noise floor.
* STT — pocketsphinx decode cost per second of audio, time from end of speech to final transcript.
* LLM — time to first token (TTFT) for a ~150-token prompt, cold and with the system prompt already cached;
  generation speed with 1 and 2 threads.
* TTS — Piper vs espeak-ng: first-audio latency for first chunks of 2–12 words and for a full sentence (also
  while the LLM is generating, as in a real turn), real-time factor, and intelligibility measured as the
  pocketsphinx word error rate on 10 sentences.

Prints a table and writes everything to JSON. ``main(argv)`` is the entry point (``--out``, ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from voicecall.audio import resample
from voicecall.bench.common import word_edits
from voicecall.bench.signals import mic_like, segments, speech_bounds
from voicecall.config import StageConfig
from voicecall.speech.base import LLMUsage, TextDelta

SENTENCES = [
    "The capital of France is Paris.",
    "It will be sunny tomorrow with a high of twenty degrees.",
    "I have set a timer for ten minutes.",
    "Your next meeting starts at three in the afternoon.",
    "The store closes at nine tonight.",
    "Turn left at the next street and walk two blocks.",
    "I found three restaurants near you.",
    "The train to Boston leaves at half past seven.",
    "Water boils at one hundred degrees.",
    "Please say that again more slowly.",
]
FIRST_CHUNKS = {
    2: "Sure thing.",
    4: "The capital is Paris.",
    6: "I have set your timer now.",
    8: "It will be sunny and warm all day.",
    12: "Your next meeting with the design team starts at three this afternoon.",
}
LONG_SENTENCE = "The quick brown fox jumps over the lazy dog while children play in the park."
SYSTEM = ("You are a helpful voice assistant. Answer in one or two short sentences, in plain words, "
          "without lists or markdown.")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _words(text: str) -> list[str]:
    return "".join(ch.lower() if ch.isalnum() or ch == "'" else " " for ch in text).split()


def wer(ref: str, hyp: str) -> tuple[int, int]:
    """(word edits, reference words) — Levenshtein over words after lowercasing and dropping punctuation."""
    r = _words(ref)
    return word_edits(r, _words(hyp)), len(r)


def _load(stage: str, type_: str, **opts: Any) -> Any:
    from voicecall.speech.registry import load_stage

    return load_stage(stage, StageConfig(type=type_, **opts))


# ------------------------------------------------------------------------------------------ TTS
def tts_first_audio(tts: Any, text: str, reps: int) -> dict[str, float]:
    firsts, totals, audio = [], [], 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        first = None
        n = 0
        for chunk in tts.synthesize(text):
            if first is None:
                first = time.perf_counter() - t0
            n += chunk.shape[0]
        totals.append(time.perf_counter() - t0)
        firsts.append(first or 0.0)
        audio = n / tts.sample_rate
    return {"first_audio_ms": _median(firsts) * 1000, "total_ms": _median(totals) * 1000, "audio_s": audio,
            "rtf": _median(totals) / audio if audio else float("nan")}


def at_level(pcm16k: np.ndarray, rms_dbfs: float = -24.0) -> np.ndarray:
    """Scale speech to a microphone-like RMS level (TTS output is peak-normalised, far louder than a mic)."""
    x = pcm16k.astype(np.float64)
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    return x * (32768 * 10 ** (rms_dbfs / 20) / rms)


def intelligibility(tts: Any, sentences: list[str]) -> dict[str, Any]:
    """pocketsphinx WER on ``tts`` speech at -24 dBFS RMS with a -50 dBFS noise floor, streamed in 32 ms frames.

    A fresh decoder first hears every sentence once (its cepstral mean adapts, as a pooled decoder's does in
    service); the second, freshly synthesized pass is scored.
    """
    from voicecall.speech.stt_pocketsphinx import PocketsphinxSTT

    stt = PocketsphinxSTT(pool_size=1, max_pool_size=1)
    edits = words = 0
    decode_s = audio_s = 0.0
    finals: list[float] = []
    examples = []
    for scored in (False, True):
        for i, text in enumerate(sentences):
            pcm = resample(np.concatenate(list(tts.synthesize(text))), tts.sample_rate, 16000)
            x = mic_like(at_level(pcm), pad_s=0.5, seed=i + 100 * scored)  # type: ignore[arg-type]
            stream = stt.new_stream()
            t0 = time.perf_counter()
            for k in range(0, x.shape[0], 512):  # as the engine does: 32 ms frames while the user speaks
                stream.feed(x[k:k + 512])
            t1 = time.perf_counter()
            hyp = stream.finish()
            if not scored:
                continue
            finals.append(time.perf_counter() - t1)
            decode_s += time.perf_counter() - t0
            audio_s += x.shape[0] / 16000
            e, n = wer(text, hyp)
            edits, words = edits + e, words + n
            examples.append({"ref": text, "hyp": hyp})
    return {"wer": edits / words, "words": words, "stt_decode_per_audio_s": decode_s / audio_s,
            "stt_final_ms": _median(finals) * 1000, "examples": examples}


# ------------------------------------------------------------------------------------------ VAD
def vad_bench(sentences_16k: list[np.ndarray], reps_frames: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for type_ in ("silero", "webrtc", "energy"):
        model = _load("vad", type_)
        stream = model.new_stream()
        n = stream.frame_samples
        frame = np.random.default_rng(0).normal(0, 3000, n).astype(np.int16)
        t0 = time.perf_counter()
        for _ in range(reps_frames):
            stream.probability(frame)
        per_frame = (time.perf_counter() - t0) / reps_frames
        starts, ends, found = [], [], 0
        for i, clean in enumerate(sentences_16k):
            x = mic_like(clean, pad_s=1.0, seed=i)
            truth = speech_bounds(clean)
            s = model.new_stream()
            probs = [s.probability(x[k:k + n]) for k in range(0, x.shape[0] - n + 1, n)]
            segs = segments(probs, n / 16000, keep_open=False)
            if len(segs) == 1:
                found += 1
                starts.append(segs[0][0] - 1.0 - truth[0])
                ends.append(segs[0][1] - 1.0 - truth[1])
        out[type_] = {
            "frame_ms": n / 16, "cost_us_per_frame": per_frame * 1e6,
            "cpu_percent_of_one_core": per_frame / (n / 16000) * 100,
            "utterances_found": f"{found}/{len(sentences_16k)}",
            "start_error_ms_mean": float(np.mean(starts)) * 1000 if starts else None,
            "end_error_ms_mean": float(np.mean(ends)) * 1000 if ends else None,
            "end_error_ms_max": float(np.max(np.abs(ends))) * 1000 if ends else None,
        }
    return out


# ------------------------------------------------------------------------------------------ LLM
def _prompt_messages(user: str) -> list[Any]:
    from voicecall.speech.base import ChatMessage

    history = [
        ChatMessage("user", "Hi, who are you?"),
        ChatMessage("assistant", "I'm your voice assistant. I can answer questions and set timers."),
        ChatMessage("user", "What's a good name for a small orange cat?"),
        ChatMessage("assistant", "How about Pumpkin, Ginger or Mango? They all suit an orange cat."),
        ChatMessage("user", "I like Mango. What should Mango eat at twelve weeks old?"),
        ChatMessage("assistant", "At twelve weeks a kitten needs kitten food, three or four small meals a day."),
    ]
    return [ChatMessage("system", SYSTEM), *history, ChatMessage("user", user)]


async def _ttft(llm: Any, messages: list[Any], max_tokens: int = 60) -> tuple[float, float, Any]:
    t0 = time.perf_counter()
    first = None
    usage = None
    async for chunk in llm.stream_chat(messages, max_tokens=max_tokens):
        if first is None and isinstance(chunk, TextDelta) and chunk.text:
            first = time.perf_counter() - t0
        if isinstance(chunk, LLMUsage):
            usage = chunk
    total = time.perf_counter() - t0
    return first or total, total, usage


def llm_worker(threads: int, reps: int) -> dict[str, Any]:
    """TTFT and token rate of one ``nThreads`` setting (run in its own process: see :func:`llm_bench`)."""
    from voicecall.speech.base import ChatMessage
    from voicecall.speech.llm_llamacpp import LlamaCppLLM

    llm = LlamaCppLLM(n_threads=threads, n_threads_batch=2)
    llm.warm_up()

    async def run() -> dict[str, Any]:
        cold, warm, speeds = [], [], []
        prompt_tokens = 0
        for i in range(reps):
            # cold: a different first token defeats the KV prefix cache
            msgs = _prompt_messages(f"Question {i}: what is the capital of France?")
            msgs[0].content = f"[{i}] {SYSTEM}"
            f, _, usage = await _ttft(llm, msgs)
            cold.append(f)
            prompt_tokens = usage.input_tokens
            # cached: same history, a new last user turn (what a conversation does)
            msgs[-1].content = f"And what is the capital of Italy, number {i}?"
            f, _, _ = await _ttft(llm, msgs)
            warm.append(f)
            story = [ChatMessage("user", f"[{i}] Write a long story about a dragon.")]
            f, total, usage = await _ttft(llm, story, max_tokens=100)
            speeds.append((usage.output_tokens - 1) / max(total - f, 1e-6))
        return {"prompt_tokens": prompt_tokens, "ttft_cold_ms": _median(cold) * 1000,
                "ttft_cached_prefix_ms": _median(warm) * 1000, "tokens_per_s": _median(speeds)}

    return asyncio.run(run())


def llm_bench(reps: int) -> dict[str, Any]:
    """Each thread setting in a fresh process: llama.cpp's OpenMP teams from one setting would slow the other."""
    out: dict[str, Any] = {}
    for threads in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "voicecall.bench.speech_stages", "--llm-worker", str(threads),
                               "--reps", str(reps)], capture_output=True, text=True, check=True)
        out[f"n_threads={threads}"] = json.loads(proc.stdout.strip().splitlines()[-1])
        _log(f"  llm n_threads={threads}: {out[f'n_threads={threads}']}")
    return out


def piper_under_llm_load(piper: Any, llm: Any, reps: int) -> dict[str, float]:
    """First-audio latency of a 6-word chunk while the LLM generates (a real turn overlaps the two)."""
    from voicecall.speech.base import ChatMessage

    stop = threading.Event()

    def generate() -> None:
        async def loop() -> None:
            while not stop.is_set():
                async for _ in llm.stream_chat([ChatMessage("user", "Write a long story about a dragon.")],
                                               max_tokens=200):
                    if stop.is_set():
                        break
        asyncio.run(loop())

    th = threading.Thread(target=generate, daemon=True)
    th.start()
    time.sleep(0.3)
    try:
        r = tts_first_audio(piper, FIRST_CHUNKS[6], reps)
    finally:
        stop.set()
        th.join(10)
    return r


# ------------------------------------------------------------------------------------------ main
def measure(quick: bool = False) -> dict[str, Any]:
    reps = 2 if quick else 5
    sentences = SENTENCES[:3] if quick else SENTENCES
    results: dict[str, Any] = {"quick": quick}

    _log("loading models…")
    t0 = time.perf_counter()
    piper = _load("tts", "piper")
    results["load_s"] = {"piper": time.perf_counter() - t0}
    t0 = time.perf_counter()
    espeak = _load("tts", "espeak")
    results["load_s"]["espeak"] = time.perf_counter() - t0

    _log("TTS…")
    tts: dict[str, Any] = {}
    for name, model in (("piper", piper), ("espeak", espeak)):
        for _ in model.synthesize("Warm up."):
            pass
        entry: dict[str, Any] = {
            "first_chunk": {str(n): tts_first_audio(model, text, reps) for n, text in FIRST_CHUNKS.items()},
            "sentence_15_words": tts_first_audio(model, LONG_SENTENCE, reps),
        }
        entry["intelligibility"] = intelligibility(model, sentences)
        tts[name] = entry
        _log(f"  {name}: 6 words {entry['first_chunk']['6']['first_audio_ms']:.0f} ms, sentence "
             f"{entry['sentence_15_words']['first_audio_ms']:.0f} ms, WER {entry['intelligibility']['wer']:.1%}")
    results["tts"] = tts

    _log("VAD…")
    clean16 = [resample(np.concatenate(list(piper.synthesize(s))), piper.sample_rate, 16000) for s in sentences]
    results["vad"] = vad_bench(clean16, 300 if quick else 2000)

    _log("LLM…")
    results["llm"] = llm_bench(1 if quick else 4)
    llm = _load("llm", "llama-cpp")
    llm.warm_up()
    results["tts"]["piper"]["first_chunk_6_words_while_llm_generates"] = piper_under_llm_load(piper, llm, reps)
    return results


def table(r: dict[str, Any]) -> str:
    p, e = r["tts"]["piper"], r["tts"]["espeak"]
    rows = [
        ("TTS", "piper (joe-medium)", "espeak-ng"),
        ("load", f"{r['load_s']['piper']:.2f} s", f"{r['load_s']['espeak'] * 1000:.0f} ms"),
    ]
    for n in FIRST_CHUNKS:
        rows.append((f"first audio, {n}-word chunk", f"{p['first_chunk'][str(n)]['first_audio_ms']:.0f} ms",
                     f"{e['first_chunk'][str(n)]['first_audio_ms']:.1f} ms"))
    rows += [
        ("first audio, 15-word sentence", f"{p['sentence_15_words']['first_audio_ms']:.0f} ms",
         f"{e['sentence_15_words']['first_audio_ms']:.1f} ms"),
        ("real-time factor (15 words)", f"{p['sentence_15_words']['rtf']:.3f}", f"{e['sentence_15_words']['rtf']:.4f}"),
        ("pocketsphinx WER (intelligibility)", f"{p['intelligibility']['wer']:.1%}", f"{e['intelligibility']['wer']:.1%}"),
        ("6-word chunk while LLM generates",
         f"{p['first_chunk_6_words_while_llm_generates']['first_audio_ms']:.0f} ms", "-"),
    ]
    w0 = max(len(a) for a, _, _ in rows) + 2
    w1 = max(len(b) for _, b, _ in rows) + 2
    lines = [f"{a:<{w0}}{b:<{w1}}{c}" for a, b, c in rows]
    lines.append("")
    lines.append(f"{'VAD':<10}{'frame':>7}{'µs/frame':>10}{'found':>8}{'start err':>11}{'end err':>9}{'end max':>9}")
    for name, v in r["vad"].items():
        lines.append(f"{name:<10}{v['frame_ms']:>5.0f}ms{v['cost_us_per_frame']:>10.1f}{v['utterances_found']:>8}"
                     f"{_ms(v['start_error_ms_mean']):>11}{_ms(v['end_error_ms_mean']):>9}{_ms(v['end_error_ms_max']):>9}")
    lines.append("")
    s = p["intelligibility"]
    lines.append(f"STT pocketsphinx: {s['stt_decode_per_audio_s']:.3f} s of CPU per s of audio while streaming; "
                 f"final transcript {s['stt_final_ms']:.0f} ms after end of speech")
    lines.append("")
    for k, v in r["llm"].items():
        lines.append(f"LLM SmolLM2-135M {k}: {v['prompt_tokens']}-token prompt TTFT {v['ttft_cold_ms']:.0f} ms cold, "
                     f"{v['ttft_cached_prefix_ms']:.0f} ms with the history cached; {v['tokens_per_s']:.0f} tok/s")
    return "\n".join(lines)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:+.0f}"


def run(args: argparse.Namespace) -> int:
    """Entry point used by ``voicecall bench stages``."""
    results = measure(quick=bool(getattr(args, "quick", False)))
    from voicecall.bench.common import machine_info

    results["machine"] = machine_info()
    results["machine"]["loadavg_after"] = os.getloadavg()
    print(table(results))
    out = Path(getattr(args, "out", None) or "bench-results/stages.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    _log(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicecall bench stages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results/stages.json", help="JSON output file")
    parser.add_argument("--quick", action="store_true", help="fewer sentences and repetitions (smoke test)")
    parser.add_argument("--llm-worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.llm_worker:
        print(json.dumps(llm_worker(args.llm_worker, args.reps)))
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
