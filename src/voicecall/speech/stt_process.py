"""pocketsphinx decoders in worker processes (``stt: {type: pocketsphinx, processes: N}``).

pocketsphinx holds the GIL inside its decode calls (10–100 ms per ``process_raw``, ~0.3 s to create a decoder),
so in-process recognition stalls every other session's audio (WebRTC pacing, VAD, the event loop). With
``processes: N`` the decoders live in N long-lived worker processes instead; the server process only pickles
audio onto a pipe.

* Workers are started with the ``spawn`` context (never ``fork``: the server process may already run llama.cpp or
  onnxruntime threads). Each one builds an in-process :class:`~voicecall.speech.stt_pocketsphinx.PocketsphinxSTT`
  (its own preloaded decoder pool, noise floor and cepstral-mean-preserving warm-up) and serves many streams,
  multiplexed by stream id over one duplex ``Pipe``, one message at a time.
* A stream goes to the worker with the fewest open streams (round-robin among equals) and stays there.
* :meth:`ProcessStream.feed` sends the audio and returns at once with the newest partial hypothesis the worker
  has reported (so a partial lags one message behind); :meth:`ProcessStream.finish` waits for the true final.
* A reader thread per worker receives replies. When a worker dies, its open streams fail (``finish()`` raises a
  ``RuntimeError`` naming the worker, which the engine reports as ``transcription.failed``) and the worker is
  restarted, with an error in the log.
* Workers exit when the server process exits (an atexit hook stops them before multiprocessing's own exit hook
  would wait for them; a worker whose pipe closes exits on its own).
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing as mp
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .base import PCM16

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
FINISH_TIMEOUT = 30.0


# ------------------------------------------------------------------------------------------ worker side
def _worker_main(conn: Connection, kwargs: dict[str, Any]) -> None:
    """Entry point of a worker process: an in-process recogniser serving streams by id."""
    import signal

    from .stt_pocketsphinx import PocketsphinxSTT

    # Ctrl-C or a SIGTERM to the server's process group is the server's to handle: the worker stops when the server
    # says so, or when its pipe closes because the server is gone (stop() kills it if it must).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    try:
        stt = PocketsphinxSTT(**kwargs, processes=0)
        stt.warm_up()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("failed", 0, f"{type(exc).__name__}: {exc}"))
        return
    pool = stt.pool
    assert pool is not None
    conn.send(("ready", 0, pool.created))
    streams: dict[int, Any] = {}
    partials: dict[int, str] = {}
    broken: dict[int, str] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the server process is gone
        op, sid = msg[0], msg[1]
        try:
            if op == "feed":
                stream = streams.get(sid)
                if stream is None:
                    continue
                text = stream.feed(np.frombuffer(msg[2], dtype=np.int16))
                if text is not None and text != partials.get(sid):
                    partials[sid] = text
                    conn.send(("partial", sid, text))
            elif op == "open":
                try:
                    streams[sid] = stt.new_stream(msg[2])
                except Exception as exc:  # noqa: BLE001 - reported at finish()
                    broken[sid] = str(exc)
            elif op == "finish":
                stream = streams.pop(sid, None)
                partials.pop(sid, None)
                if stream is None:
                    conn.send(("error", sid, broken.pop(sid, "unknown stream")))
                else:
                    conn.send(("final", sid, stream.finish()))
            elif op == "abort":
                stream = streams.pop(sid, None)
                partials.pop(sid, None)
                broken.pop(sid, None)
                if stream is not None:
                    stream.abort()
            elif op == "stats":
                conn.send(("stats", sid, {"open": len(streams), "created": pool.created, "free": pool.free}))
            elif op == "stop":
                return
        except Exception as exc:  # noqa: BLE001 - one stream's failure must not take the worker down
            stream = streams.pop(sid, None)
            if stream is not None:
                try:
                    stream.abort()
                except Exception:
                    log.debug("abort after a failure failed", exc_info=True)
            if op == "finish":
                conn.send(("error", sid, f"{type(exc).__name__}: {exc}"))
            else:
                broken[sid] = f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------ server side
class _Pending:
    """Parent-side state of one stream: the newest partial, and the final (or error) once it arrives."""

    __slots__ = ("done", "error", "final", "partial", "returned")

    def __init__(self) -> None:
        self.partial = ""
        self.returned = ""
        self.done = threading.Event()
        self.final: str | None = None
        self.error: str | None = None


class _Worker:
    """One worker process, its pipe, a send lock and the reader thread dispatching its replies."""

    def __init__(self, pool: ProcessPool, index: int) -> None:
        self._pool = weakref.ref(pool)  # the reader thread must not keep the pool alive (its finalizer stops us)
        self.index = index
        self.send_lock = threading.Lock()
        self.streams: dict[int, _Pending] = {}
        self.ready = threading.Event()
        self.start_error: str | None = None
        self.decoders = 0
        self._stats: dict[str, Any] | None = None
        self._stats_event = threading.Event()
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, pool.worker_kwargs),
                                name=f"voicecall-stt-{index}", daemon=True)
        self.proc.start()
        child.close()
        self.reader = threading.Thread(target=self._read, name=f"voicecall-stt-{index}-reader", daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(msg)

    def _read(self) -> None:
        while True:
            try:
                op, sid, value = self.conn.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a garbled message: treat the worker as broken
                log.exception("pocketsphinx worker %d sent an unreadable message", self.index)
                break
            if op == "partial":
                pending = self.streams.get(sid)
                if pending is not None:
                    pending.partial = value
            elif op in ("final", "error"):
                pending = self.streams.pop(sid, None)
                if pending is not None:
                    if op == "final":
                        pending.final = value
                    else:
                        pending.error = f"pocketsphinx worker {self.index}: {value}"
                    pending.done.set()
            elif op == "ready":
                self.decoders = value
                self.ready.set()
            elif op == "failed":
                self.start_error = value
                self.ready.set()
            elif op == "stats":
                self._stats = value
                self._stats_event.set()
        pool = self._pool()
        if pool is not None:
            pool._worker_died(self)

    def stats(self, timeout: float = 10.0) -> dict[str, Any]:
        self._stats_event.clear()
        self.send(("stats", 0))
        if not self._stats_event.wait(timeout):
            raise TimeoutError("pocketsphinx worker did not answer")
        assert self._stats is not None
        return self._stats

    def fail_all(self, reason: str) -> None:
        streams, self.streams = self.streams, {}
        for pending in streams.values():
            pending.error = reason
            pending.done.set()

    def stop(self) -> None:
        try:
            self.send(("stop", 0))
        except (OSError, ValueError):
            pass
        self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2.0)
        self.conn.close()


def _shutdown(workers: list[_Worker], state: dict[str, bool]) -> None:
    state["closed"] = True
    for w in list(workers):
        w.stop()


class ProcessPool:
    """``processes`` worker processes, each with its own decoder pool; streams assigned to the least busy."""

    def __init__(self, processes: int, worker_kwargs: dict[str, Any],
                 progress: Callable[[str], None] | None = None) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1 here (got {processes})")
        self.worker_kwargs = worker_kwargs
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._rr = itertools.count()
        self._state = {"closed": False}
        self.restarts = 0
        t0 = time.perf_counter()
        self.workers: list[_Worker] = [_Worker(self, i) for i in range(processes)]
        self._finalizer = weakref.finalize(self, _shutdown, self.workers, self._state)
        # Stop the workers at interpreter exit *before* multiprocessing's own exit hook (atexit runs hooks last-in
        # first-out, and that hook was registered when multiprocessing was imported): it would SIGTERM them, which
        # they ignore, then join them forever.
        atexit.register(self._finalizer)
        for w in self.workers:
            self._wait_ready(w)
            if progress:
                progress(f"pocketsphinx worker {w.index} (pid {w.pid}) ready, {w.decoders} decoders, "
                         f"{time.perf_counter() - t0:.1f} s")
        log.info("pocketsphinx: %d worker processes ready in %.2f s", processes, time.perf_counter() - t0)

    def _wait_ready(self, w: _Worker) -> None:
        if not w.ready.wait(START_TIMEOUT) or w.start_error is not None:
            reason = w.start_error or f"no answer within {START_TIMEOUT:.0f} s"
            self.close()
            raise RuntimeError(f"pocketsphinx worker process {w.index} failed to start: {reason}")

    @property
    def closed(self) -> bool:
        return self._state["closed"]

    def close(self) -> None:
        """Stop every worker (also done at exit)."""
        self._finalizer()
        atexit.unregister(self._finalizer)

    def _pick(self) -> _Worker:
        with self._lock:
            alive = [w for w in self.workers if w.ready.is_set() and w.start_error is None]
            if not alive:
                raise RuntimeError("no pocketsphinx worker process is running (restarting)")
            least = min(len(w.streams) for w in alive)
            candidates = [w for w in alive if len(w.streams) == least]
            return candidates[next(self._rr) % len(candidates)]

    def open(self, language: str | None) -> ProcessStream:
        if self.closed:
            raise RuntimeError("the pocketsphinx worker pool is closed")
        worker = self._pick()
        sid = next(self._ids)
        pending = _Pending()
        worker.streams[sid] = pending
        stream = ProcessStream(worker, sid, pending)
        try:
            worker.send(("open", sid, language))
        except (OSError, ValueError) as exc:
            worker.streams.pop(sid, None)
            pending.error = f"pocketsphinx worker {worker.index} is gone: {exc}"
            pending.done.set()
        return stream

    def _worker_died(self, w: _Worker) -> None:
        if self.closed or w not in self.workers or not w.ready.is_set() or w.start_error is not None:
            return  # shutting down, or a worker still starting (its starter reports the failure)
        w.proc.join(1.0)
        code = w.proc.exitcode
        reason = (f"pocketsphinx worker process {w.index} (pid {w.pid}) died (exit code {code}); "
                  "the utterance it was recognising is lost")
        lost = len(w.streams)
        w.fail_all(reason)
        log.error("%s; %d stream(s) failed; restarting it", reason, lost)
        try:
            w.conn.close()
        except OSError:
            pass
        for attempt in range(3):
            if self.closed:
                return
            try:
                new = _Worker(self, w.index)
            except Exception:
                log.exception("cannot start pocketsphinx worker %d", w.index)
                time.sleep(1.0 + attempt)
                continue
            if new.ready.wait(START_TIMEOUT) and new.start_error is None:
                with self._lock:
                    if self.closed:
                        new.stop()
                        return
                    self.workers[self.workers.index(w)] = new
                    self.restarts += 1
                log.warning("pocketsphinx worker process %d restarted (pid %s)", w.index, new.pid)
                return
            log.error("pocketsphinx worker %d failed to restart: %s", w.index, new.start_error or "timeout")
            new.stop()
            time.sleep(1.0 + attempt)
        log.error("pocketsphinx worker %d could not be restarted; running with fewer workers", w.index)


class ProcessStream:
    """One utterance recognised in a worker process (see the module doc)."""

    sample_rate: int = 16000

    def __init__(self, worker: _Worker, sid: int, pending: _Pending) -> None:
        self._worker = worker
        self._sid = sid
        self._pending = pending
        self._open = True
        self._finalizer = weakref.finalize(self, _drop, worker, sid)

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid

    def feed(self, pcm: PCM16) -> str | None:
        """Send audio to the worker; return the newest partial it reported, if not returned before."""
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        p = self._pending
        if pcm.shape[0] and not p.done.is_set():
            data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
            try:
                self._worker.send(("feed", self._sid, data))
            except (OSError, ValueError):
                pass  # the worker died: the reader thread fails this stream; finish() raises
        text = p.partial
        if text != p.returned:
            p.returned = text
            return text
        return None

    def finish(self) -> str:
        """End the utterance and wait for the worker's final transcript."""
        if not self._open:
            raise RuntimeError("this STT stream is finished")
        self._open = False
        self._finalizer.detach()
        p = self._pending
        if not p.done.is_set():
            try:
                self._worker.send(("finish", self._sid))
            except (OSError, ValueError):
                pass
            if not p.done.wait(FINISH_TIMEOUT):
                self._worker.streams.pop(self._sid, None)
                raise RuntimeError(f"pocketsphinx worker {self._worker.index} gave no final transcript within "
                                   f"{FINISH_TIMEOUT:.0f} s")
        if p.error is not None:
            raise RuntimeError(p.error)
        return p.final or ""

    def abort(self) -> None:
        if self._open:
            self._open = False
            self._finalizer()


def _drop(worker: _Worker, sid: int) -> None:
    if worker.streams.pop(sid, None) is not None:
        try:
            worker.send(("abort", sid))
        except (OSError, ValueError):
            pass
