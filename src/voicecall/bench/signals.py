"""Test signals and their ground truth, shared by ``voicecall bench stages`` and the speech-stage tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def mic_like(pcm16k: np.ndarray | Any, pad_s: float = 1.0, noise_sd: float = 100.0, seed: int = 0) -> np.ndarray:
    """Speech with ``pad_s`` of silence each side and a Gaussian noise floor (about -50 dBFS at sd 100)."""
    pad = np.zeros(int(16000 * pad_s), dtype=np.float64)
    x = np.concatenate([pad, pcm16k.astype(np.float64), pad])
    x += np.random.default_rng(seed).normal(0.0, noise_sd, x.shape[0])
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def speech_bounds(clean: np.ndarray, rate: int = 16000, dbfs: float = -40.0) -> tuple[float, float]:
    """First and last 10 ms frame above ``dbfs`` (seconds)."""
    hop = rate // 100
    n = clean.shape[0] // hop
    frames = clean[: n * hop].astype(np.float64).reshape(n, hop)
    level = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) / 32768 + 1e-9)
    loud = np.flatnonzero(level > dbfs)
    return loud[0] / 100, (loud[-1] + 1) / 100


def segments(probs: list[float], frame_s: float, threshold: float = 0.5, start_frames: int = 2,
             hangover_s: float = 0.3, min_s: float = 0.25, keep_open: bool = True) -> list[tuple[float, float]]:
    """The probe's decision logic: start after ``start_frames`` speech frames, end after ``hangover_s`` of
    non-speech (the hangover is taken off the end), drop segments shorter than ``min_s``. A segment still open at
    the end of ``probs`` ends there (``keep_open``) or is dropped."""
    out: list[tuple[float, float]] = []
    run, quiet, start = 0, 0, None
    hang = round(hangover_s / frame_s)
    for i, p in enumerate(probs):
        if p >= threshold:
            run += 1
            quiet = 0
            if start is None and run >= start_frames:
                start = (i - start_frames + 1) * frame_s
        else:
            run = 0
            if start is not None:
                quiet += 1
                if quiet >= hang:
                    end = (i - quiet + 1) * frame_s
                    if end - start >= min_s:
                        out.append((start, end))
                    start, quiet = None, 0
    if start is not None and keep_open:
        out.append((start, len(probs) * frame_s))
    return out
