"""Shared pieces of the benchmarks: an in-process server on a free loopback port, test utterances, statistics."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Self

import numpy as np

from voicecall.audio import ENGINE_RATE, resample
from voicecall.server.thread import ServerThread, free_port

UTTERANCES = [
    "What is the capital of France?",
    "How are you today?",
    "Tell me a fun fact about the ocean.",
    "What time is it in Tokyo?",
    "Can you recommend a good book?",
    "What is the weather like tomorrow?",
]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid``, all its threads (exited ones included), to the nanosecond.

    Read from the process's CPU clock (``clock_getcpuclockid``): /proc/<pid>/stat counts in 10 ms ticks, which
    rounds a short, light measurement to zero. Falls back to /proc; None when the process is gone.
    """
    try:
        return time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED of the whole thread group
    except OSError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def word_edits(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists (substitutions, insertions and deletions): the WER numerator."""
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class InProcessServer(ServerThread):
    """``voicecall serve`` in a background thread, on 127.0.0.1 and a free port."""

    def __init__(self, config_path: str | None, overrides: dict[str, Any] | None = None) -> None:
        from voicecall.config import load_config
        from voicecall.server.app import create_app, uvicorn_options

        port = free_port()
        ov = {"server.host": "127.0.0.1", "server.port": port, "store.url": "none",
              "webrtc.hostAddresses": ["127.0.0.1"]}
        ov.update(overrides or {})
        self.config = load_config(config_path, overrides=ov)
        super().__init__(create_app(self.config), port, name="bench-server", start_timeout=600.0,
                         **uvicorn_options(self.config))

    def start(self) -> Self:
        progress("starting an in-process server (loading models)…")
        return super().start()

    @property
    def ws_url(self) -> str:
        return self.ws

    @property
    def http_url(self) -> str:
        return self.http


def utterance_pcm(text: str, rate: int = ENGINE_RATE, noise: float = 60.0) -> np.ndarray:
    """``text`` spoken by the embedded TTS at ``rate`` with a microphone-like noise floor (no padding)."""
    from voicecall.config import LocalConfig
    from voicecall.speech.registry import load_stage

    tts = load_stage("tts", LocalConfig().tts)  # only the TTS: no LLM, no recogniser processes in the client
    pcm = np.concatenate(list(tts.synthesize(text)))
    pcm = resample(pcm, tts.sample_rate, rate).astype(np.float64)
    pcm += np.random.default_rng(7).normal(0, noise, pcm.shape)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def last_speech_sample(pcm: np.ndarray, rate: int, threshold_dbfs: float = -35.0) -> int:
    """Index just past the last 10 ms window louder than ``threshold_dbfs``."""
    win = rate // 100
    n = len(pcm) // win
    frames = pcm[: n * win].astype(np.float64).reshape(n, win)
    level = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) / 32768 + 1e-9)
    loud = np.nonzero(level > threshold_dbfs)[0]
    return int((loud[-1] + 1) * win) if loud.size else len(pcm)


def percentile(values: list[float], p: float) -> float | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    k = (len(vals) - 1) * p / 100
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def summary(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    return {"p50": percentile(vals, 50), "p95": percentile(vals, 95),
            "mean": statistics.fmean(vals) if vals else None, "n": len(vals)}


def _plain(o: Any) -> Any:
    """numpy scalars (a bool or an int that came out of an array) as plain JSON values."""
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=2, default=_plain))
    return p


def parse_stage_spec(spec: str, option: str) -> tuple[str, dict[str, Any]]:
    """A benchmark's ``LABEL=JSON`` stage (``--llm``, ``bench stt --engines``): the label and the stage object."""
    label, sep, body = spec.partition("=")
    if not sep:
        raise SystemExit(f"{option} expects LABEL=JSON, got {spec!r}")
    try:
        stage = json.loads(body)
    except ValueError as exc:
        raise SystemExit(f"{option} {label}: not JSON: {exc}") from None
    if not isinstance(stage, dict) or "type" not in stage:
        raise SystemExit(f"{option} {label}: expected a stage object with a 'type'")
    return label.strip(), stage


def machine_info() -> dict[str, Any]:
    import os
    import platform

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def report(data: dict[str, Any], out: str | Path, print_table: Any, plot: Any) -> int:
    """Print a benchmark's table, write its JSON to ``out`` and its plot beside it (``.png``)."""
    print_table(data)
    path = write_json(out, data)
    png = path.with_suffix(".png")
    plot(data, png)
    print(f"wrote {path} and {png}")
    return 0
