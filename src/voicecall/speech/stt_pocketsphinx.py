"""Streaming speech recognition with pocketsphinx 5 (CMU Sphinx), fully offline.

The wheel bundles the US-English acoustic model, a 27 MB trigram language model and the CMU dictionary, so
``language`` can only be ``en-us`` unless ``hmm``/``lm``/``dict`` point at another model. Audio is decoded
*while the user speaks* (``process_raw(frame, no_search=False, full_utt=False)``), so the final transcript is
ready some 50 ms after the end of speech instead of after a whole-utterance decode.

Loading a ``Decoder`` takes about 0.25–0.35 s and tens of MB, so decoders live in a process-wide pool: ``poolSize``
are loaded up front, more are created on demand up to ``maxPoolSize``; a stream borrows one for a single
utterance and gives it back on :meth:`PocketsphinxStream.finish` / :meth:`PocketsphinxStream.abort` (or when it
is garbage-collected).

Accuracy trap: pocketsphinx's cepstral mean (CMN) is only re-estimated every few seconds and at the end of each
utterance, so a short utterance is decoded with the mean left by the *previous* utterances of that decoder. A
fresh decoder (default prior) and loud input (speech peaking near 0 dBFS, e.g. peak-normalised TTS) do markedly
worse than a decoder that has heard a few utterances at the session's level (measured WER on Piper speech: about
50 % on the first utterance of a fresh decoder at full scale, 20–25 % once adapted). Pooled decoders keep their
adapted mean between sessions.

pocketsphinx holds the GIL while it decodes, so with ``processes`` >= 1 (the registry's default is 2) the decoders
live in worker processes instead (:mod:`voicecall.speech.stt_process`, which runs this class with ``processes=0``
inside each worker).

Trap: pocketsphinx's feature normalisation breaks on *digital* silence (exact zero samples, as produced by
synthetic speech or a muted track); WER doubles. Exact-zero samples therefore get a small Gaussian noise floor
(``noiseFloor``, standard deviation in int16 units; 0 disables). Real microphones never produce exact zeros, so
this costs nothing there.

Importing ``pocketsphinx`` does not import ``sounddevice`` (only ``pocketsphinx.LiveSpeech`` does, and needs the
system PortAudio), so this module is safe on a box without audio devices.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pocketsphinx import Decoder

from .base import PCM16

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
LANGUAGES = ("en-us",)
SPEEDS: dict[str, dict[str, Any]] = {
    # pocketsphinx's own defaults: a fast forward search, then a flat-lexicon second pass and a lattice best path.
    "accurate": {},
    # Half the acoustic frames scored (ds 2), 2 Gaussians per mixture, tighter HMM/word pruning with phonetic
    # lookahead, no second pass: about half the CPU of "accurate" for a higher word error rate (docs/speech.md).
    "fast": {"ds": 2, "topn": 2, "maxhmmpf": 3000, "maxwpf": 5, "pl_window": 5, "fwdflat": False},
}
"""Decoder settings by ``speed`` (the cost/accuracy trade-off for many concurrent speakers on few cores)."""
_LANG_ALIASES = {"en": "en-us", "en-us": "en-us", "en_us": "en-us", "english": "en-us"}


class DecoderPool:
    """Thread-safe pool of identically configured pocketsphinx decoders."""

    def __init__(self, config: dict[str, Any], size: int, max_size: int, acquire_timeout: float) -> None:
        self._config = config
        self._max = max_size
        self._timeout = acquire_timeout
        self._cond = threading.Condition()
        self._free: list[Decoder] = []
        self._created = 0
        self._creating = 0
        for _ in range(size):
            self._free.append(self._new())
            self._created += 1

    def _new(self) -> Decoder:
        return Decoder(**self._config)

    @property
    def created(self) -> int:
        """Decoders loaded so far (free + lent)."""
        return self._created

    @property
    def free(self) -> int:
        return len(self._free)

    def warm_up(self, pcm: PCM16) -> None:
        """Decode ``pcm`` once on every free decoder (first-call costs), then restore each decoder's cepstral mean.

        The CMN estimate carries over from one utterance to the next and dominates the accuracy of short
        utterances, so warm-up audio (noise) must not leave its mean behind.
        """
        with self._cond:
            taken, self._free = self._free, []
        try:
            buf = np.ascontiguousarray(pcm, dtype="<i2").view(np.uint8)
            for dec in taken:
                cmn = dec.get_cmn()
                dec.start_utt()
                dec.process_raw(buf, False, False)
                dec.end_utt()
                dec.set_cmn(cmn)
        finally:
            with self._cond:
                self._free.extend(taken)
                self._cond.notify_all()

    def acquire(self) -> Decoder:
        """Borrow a decoder; load a new one if none is free and the cap allows, else wait for one."""
        with self._cond:
            while True:
                if self._free:
                    return self._free.pop()
                if self._created + self._creating < self._max:
                    self._creating += 1
                    break
                if not self._cond.wait(self._timeout):
                    raise RuntimeError(
                        f"all {self._max} pocketsphinx decoders are busy (raise stt.maxPoolSize for more "
                        "concurrent speakers)"
                    )
        try:
            dec = self._new()  # ~0.3 s, outside the lock
        except BaseException:
            with self._cond:
                self._creating -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._creating -= 1
            self._created += 1
        log.info("pocketsphinx pool grew to %d decoders", self._created)
        return dec

    def release(self, dec: Decoder, in_utterance: bool = False) -> None:
        """Give a decoder back (ending the utterance it may still be in)."""
        if in_utterance:
            dec.end_utt()
        with self._cond:
            self._free.append(dec)
            self._cond.notify()


def _give_back(pool: DecoderPool, dec: Decoder, in_utterance: list[bool]) -> None:
    pool.release(dec, in_utterance[0])


class PocketsphinxStream:
    """One utterance being recognised. Holds a pooled decoder until :meth:`finish` or :meth:`abort`."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, pool: DecoderPool, noise_floor: float, seed: int | None = 0) -> None:
        self._pool = pool
        self._dec: Decoder | None = pool.acquire()
        self._in_utt = [False]  # shared with the finalizer
        # Return the decoder even if the engine drops the stream without finish()/abort().
        self._finalizer = weakref.finalize(self, _give_back, pool, self._dec, self._in_utt)
        self._noise = float(noise_floor)
        # Seeded: the same audio always gives the same transcript (a fresh random floor flips a borderline word
        # in about one utterance in fifteen, which makes results unrepeatable).
        self._rng = np.random.default_rng(seed)
        self._partial = ""
        self._dec.start_utt()
        self._in_utt[0] = True

    def _prepare(self, pcm: PCM16) -> PCM16:
        if self._noise > 0.0:
            zeros = pcm == 0
            n = int(np.count_nonzero(zeros))
            if n:
                pcm = pcm.copy()  # only when the frame holds digital silence
                pcm[zeros] = np.clip(np.rint(self._rng.normal(0.0, self._noise, n)), -32768, 32767).astype(np.int16)
        return pcm

    def feed(self, pcm: PCM16) -> str | None:
        """Decode more audio (any length, 16 kHz); return the partial transcript when it changed."""
        if self._dec is None:
            raise RuntimeError("this STT stream is finished")
        if pcm.shape[0] == 0:
            return None
        buf = np.ascontiguousarray(self._prepare(pcm), dtype="<i2").view(np.uint8)
        self._dec.process_raw(buf, False, False)
        hyp = self._dec.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if text != self._partial:
            self._partial = text
            return text
        return None

    def finish(self) -> str:
        """End the utterance; return the final transcript (lower case, no punctuation; may be empty)."""
        dec = self._dec
        if dec is None:
            raise RuntimeError("this STT stream is finished")
        try:
            self._in_utt[0] = False
            dec.end_utt()
            hyp = dec.hyp()
            return hyp.hypstr if hyp is not None else ""
        finally:
            self._release()

    def abort(self) -> None:
        if self._dec is not None:
            self._release()

    def _release(self) -> None:
        self._dec = None
        self._finalizer()  # gives the decoder back exactly once


class PocketsphinxSTT:
    """pocketsphinx speech-to-text with a process-wide decoder pool.

    Options: ``language`` (``en-us``, the only bundled model), ``hmm``/``lm``/``dict`` (paths to another acoustic
    model, language model and pronunciation dictionary; ``dict`` is the ``dictionary`` argument here), ``poolSize`` (decoders loaded up front, default 2), ``maxPoolSize``
    (cap, default 8), ``noiseFloor`` (default 30, see the module doc), ``acquireTimeout`` (seconds to wait for a
    free decoder at the cap, default 10), ``speed`` (``accurate``, the default, or ``fast``: see :data:`SPEEDS`),
    ``processes`` (0: decode in this process; N >= 1: decode in N worker
    processes, see :mod:`voicecall.speech.stt_process`; ``poolSize``/``maxPoolSize`` are then split between them).
    """

    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        language: str = "en-us",
        hmm: str | None = None,
        lm: str | None = None,
        dictionary: str | None = None,
        pool_size: int = 2,
        max_pool_size: int = 8,
        noise_floor: float = 30.0,
        acquire_timeout: float = 10.0,
        speed: str = "accurate",
        processes: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        lang = _LANG_ALIASES.get(language.lower())
        if lang is None and not hmm:
            raise ValueError(
                f"pocketsphinx has no bundled model for language {language!r}; bundled: {', '.join(LANGUAGES)} "
                "(or give stt.hmm, stt.lm and stt.dict for another model)"
            )
        if pool_size < 0 or max_pool_size < 1 or pool_size > max_pool_size:
            raise ValueError(f"need 0 <= poolSize <= maxPoolSize and maxPoolSize >= 1 (got {pool_size}, {max_pool_size})")
        if processes < 0:
            raise ValueError(f"processes must be >= 0 (got {processes})")
        if speed not in SPEEDS:
            raise ValueError(f"unknown speed {speed!r}; use one of: {', '.join(SPEEDS)}")
        config: dict[str, Any] = {"samprate": SAMPLE_RATE, "logfn": "/dev/null", **SPEEDS[speed]}
        for key, value in (("hmm", hmm), ("lm", lm), ("dict", dictionary)):
            if value:
                if not Path(value).exists():
                    raise FileNotFoundError(f"pocketsphinx {key} not found: {value}")
                config[key] = str(value)
        self.language = lang or language
        self.noise_floor = float(noise_floor)
        self.processes = processes
        self.pool: DecoderPool | None = None
        self.workers: Any = None  # stt_process.ProcessPool when processes >= 1
        if processes == 0:
            self.pool = DecoderPool(config, pool_size, max_pool_size, acquire_timeout)
            return
        from .stt_process import ProcessPool

        per = -(-pool_size // processes), -(-max_pool_size // processes)
        self.workers = ProcessPool(processes, {
            "language": language, "hmm": hmm, "lm": lm, "dictionary": dictionary, "pool_size": per[0],
            "max_pool_size": per[1], "noise_floor": noise_floor, "acquire_timeout": 0.0, "speed": speed,
        }, progress)

    def close(self) -> None:
        """Stop the worker processes, if any (they are also stopped at exit)."""
        if self.workers is not None:
            self.workers.close()

    def warm_up(self) -> None:
        """Run every loaded decoder once on a little noise (keeps their cepstral means unchanged).

        Worker processes warm their decoders up themselves before reporting ready.
        """
        if self.pool is None:
            return
        self.pool.warm_up(np.random.default_rng(0).normal(0, 100, 3200).astype(np.int16))

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> Any:
        """Start an utterance. ``language`` must match the model's; ``prompt`` is ignored (no biasing)."""
        if language and _LANG_ALIASES.get(language.lower(), language.lower()) != self.language:
            raise ValueError(f"this pocketsphinx model recognises {self.language!r} only, not {language!r}")
        if self.workers is not None:
            return self.workers.open(None)
        assert self.pool is not None
        return PocketsphinxStream(self.pool, self.noise_floor)
