"""pocketsphinx in worker processes (``stt.processes``): same results as in-process, many streams, crash recovery."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from voicecall.bench.signals import mic_like
from voicecall.config import ConfigError, StageConfig
from voicecall.speech.registry import resolve_stage
from voicecall.speech.stt_pocketsphinx import PocketsphinxSTT


@pytest.fixture(scope="module")
def procs() -> Iterator[PocketsphinxSTT]:
    stt = PocketsphinxSTT(pool_size=4, max_pool_size=8, processes=2)
    yield stt
    stt.close()


def recognise(stt: Any, pcm: np.ndarray, chunk: int = 512, pace: float = 0.0) -> tuple[str, list[str]]:
    stream = stt.new_stream("en")
    partials = []
    for i in range(0, pcm.shape[0], chunk):
        p = stream.feed(pcm[i:i + chunk])
        if p:
            partials.append(p)
        if pace:
            time.sleep(pace)
    return stream.finish(), partials


def test_same_transcript_as_in_process(procs: PocketsphinxSTT, question_16k: np.ndarray) -> None:
    signal_ = mic_like(question_16k, pad_s=0.3)
    local = PocketsphinxSTT(pool_size=1, max_pool_size=1)
    expected, _ = recognise(local, signal_)
    assert "capital" in expected and "france" in expected, expected
    for _ in range(2):  # a pooled decoder keeps its adapted cepstral mean, like in-process
        got, partials = recognise(procs, signal_, pace=0.01)  # a little like real time: partials come back
        assert got == expected
        assert partials  # partial hypotheses come back while feeding (one message late)


def test_concurrent_streams(procs: PocketsphinxSTT, question_16k: np.ndarray) -> None:
    signal_ = mic_like(question_16k, pad_s=0.3)
    noise = mic_like(np.zeros(8000, np.int16), pad_s=0.0, seed=5)
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            results[k] = recognise(procs, signal_ if k % 2 == 0 else noise, chunk=1600)[0]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for k in range(0, 6, 2):
        assert "capital" in results[k] and "france" in results[k], results
    for k in range(1, 6, 2):
        assert "capital" not in results[k]
    pids = {w.pid for w in procs.workers.workers}
    assert len(pids) == 2 and os.getpid() not in pids


def test_abort_releases(procs: PocketsphinxSTT, question_16k: np.ndarray) -> None:
    streams = [procs.new_stream() for _ in range(8)]  # the cap: 4 decoders per worker
    for s in streams:
        s.feed(question_16k[:3200])
        s.abort()
    with pytest.raises(RuntimeError, match="finished"):
        streams[0].feed(question_16k[:512])
    assert all(not w.streams for w in procs.workers.workers)
    got, _ = recognise(procs, mic_like(question_16k, pad_s=0.3))
    assert "capital" in got
    stats = [w.stats() for w in procs.workers.workers]
    assert all(s["open"] == 0 for s in stats), stats  # every decoder came back


def test_killed_worker_fails_its_streams_and_restarts(question_16k: np.ndarray) -> None:
    stt = PocketsphinxSTT(pool_size=1, max_pool_size=2, processes=1)
    try:
        stream = stt.new_stream()
        stream.feed(question_16k[:8000])
        old = stream.worker_pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"worker process 0 \(pid \d+\) died"):
            stream.finish()
        deadline = time.monotonic() + 60
        while stt.workers.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stt.workers.restarts == 1
        assert stt.workers.workers[0].pid != old
        got, _ = recognise(stt, mic_like(question_16k, pad_s=0.3))
        assert "capital" in got
    finally:
        stt.close()
    assert not stt.workers.workers[0].proc.is_alive()


def test_processes_option_is_registered() -> None:
    _, opts = resolve_stage("stt", StageConfig(type="pocketsphinx", processes=2))
    assert opts["processes"] == 2
    with pytest.raises(ConfigError, match="processes"):
        resolve_stage("stt", StageConfig(type="pocketsphinx", processes="two"))
    with pytest.raises(ValueError, match="processes"):
        PocketsphinxSTT(processes=-1, pool_size=0)


def test_interpreter_exits_with_a_pool_never_closed(tmp_path: Any) -> None:
    """A program that loads the recogniser with worker processes and just ends must exit (multiprocessing's exit
    hook used to SIGTERM the workers, which ignore it, and then wait for them forever)."""
    import subprocess
    import sys

    script = tmp_path / "leave.py"
    script.write_text(
        # Any library that creates a weakref.finalize before multiprocessing is imported puts weakref's exit hook
        # behind multiprocessing's: the pool's own finalizer then runs too late.
        "import weakref\nclass Early: pass\nearly = Early()\nweakref.finalize(early, print)\n"
        "from voicecall.speech.stt_pocketsphinx import PocketsphinxSTT\n"
        "if __name__ == '__main__':\n"
        "    stt = PocketsphinxSTT(pool_size=1, max_pool_size=1, processes=1)\n"
        "    print('loaded', flush=True)\n"
    )
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded" in out.stdout
    assert time.monotonic() - t0 < 60


def test_fast_speed_recognises_with_less_cpu(question_16k: np.ndarray) -> None:
    """``speed: fast`` (for many speakers on few cores) still hears the question, for clearly less decoding CPU
    than ``accurate`` (a ratio measured in one run, not a wall-clock threshold)."""
    from voicecall.speech.registry import load_stage

    signal_ = mic_like(question_16k, pad_s=0.3)
    stts = {speed: PocketsphinxSTT(pool_size=1, max_pool_size=1, speed=speed) for speed in ("accurate", "fast")}
    for stt in stts.values():
        recognise(stt, signal_)  # adapt the cepstral mean once
    # Interleaved rounds, the cheapest of each: CPU time still grows when other processes thrash the caches, and a
    # busy machine must not flip the comparison.
    cost: dict[str, float] = {speed: float("inf") for speed in stts}
    for _ in range(3):
        for speed, stt in stts.items():
            t0 = time.process_time()
            text = recognise(stt, signal_)[0]
            cost[speed] = min(cost[speed], time.process_time() - t0)
            assert "capital" in text, (speed, text)
    assert cost["fast"] < 0.8 * cost["accurate"], cost
    _, opts = resolve_stage("stt", StageConfig(type="pocketsphinx", speed="fast"))
    assert opts["speed"] == "fast"
    with pytest.raises(ConfigError, match="speed"):
        load_stage("stt", StageConfig(type="pocketsphinx", speed="ludicrous", processes=0))
