"""Moonshine tiny (English) speech recognition — the fast option (``stt: {type: moonshine}``).

The model (``tiny-en``: encoder and merged decoder as ONNX Runtime ``.ort`` files, 43 MB) and its runtime
(``libmoonshine.so`` with its own ONNX Runtime) come inside the ``moonshine-voice==0.0.73`` wheel (MIT), installed
``--no-deps`` and pinned by hash (``requirements-models.txt``). Later releases (0.1.x) download their models at run
time instead, so the pin matters. ``model: /path`` loads another Moonshine model directory (``arch: tiny|base``).

Moonshine decodes as much audio as it is given (no padding to a fixed window): on an idle box about as fast as
Whisper tiny with a 10 s window, with more word errors on our test set (docs/speech.md, ``voicecall bench stt``). Streaming uses the same bounded re-decode
schedule as Whisper (:class:`~voicecall.speech.stt_redecode.RedecodeStream`). The library is called through its
C entry point with the numpy buffer (the package's Python wrapper copies every sample through a Python list).
One transcriber serves every stream, one decode at a time per transcriber (``instances`` transcribers, default
1, for more concurrency). Moonshine writes "to-day"/"to-night": they are normalised to "today"/"tonight".
"""

from __future__ import annotations

import ctypes
import importlib.util
import queue
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .base import PCM16
from .stt_redecode import RedecodeStream

SAMPLE_RATE = 16000
ARCHS = {"tiny": 0, "base": 1}
OPTIONS = {"vad_threshold": "0", "identify_speakers": "false", "return_audio_data": "false"}
"""Moonshine's own VAD off (the engine's VAD already cut the turn; on, it splits off leading noise as a "You"
line), no speaker identification, no audio copied back."""
_HYPHENATED = re.compile(r"\bto-(day|night|morrow)\b", re.IGNORECASE)


def bundled_model_dir() -> Path:
    """``moonshine_voice/assets/tiny-en`` inside the wheel (located without importing the package)."""
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("moonshine is not installed (pip install --no-deps moonshine-voice==0.0.73, "
                                "see requirements-models.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "tiny-en"


class MoonshineSTT:
    """Moonshine on its bundled ONNX Runtime. Options: ``model``, ``arch``, ``instances``, ``window``,
    ``partialInterval``."""

    name = "moonshine"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: str | None = None, arch: str = "tiny", instances: int = 1, window: float = 10.0,
                 partial_interval: float = 0.5) -> None:
        path = Path(model).expanduser() if model else bundled_model_dir()
        if not (path / "encoder_model.ort").is_file():
            raise FileNotFoundError(f"{path} is not a Moonshine model directory (no encoder_model.ort)")
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")
        if instances < 1 or not 1.0 <= window <= 30.0 or partial_interval <= 0:
            raise ValueError("need instances >= 1, 1 <= window <= 30 and partialInterval > 0")
        from moonshine_voice.moonshine_api import TranscriptC
        from moonshine_voice.transcriber import Transcriber

        self._transcript_c = TranscriptC
        self._free: queue.Queue[Any] = queue.Queue()
        for _ in range(instances):
            self._free.put(Transcriber(str(path), model_arch=_arch(arch), options=OPTIONS))
        self.path = path
        self.window = float(window)
        self.partial_interval = float(partial_interval)
        self.language = "en"
        self.decodes = 0
        """Decodes run so far (partials and finals; approximate under concurrency)."""

    def transcribe(self, pcm: PCM16, language: str | None = None, context: str = "",
                   final: bool = True) -> tuple[str, float]:
        """Decode a piece of audio; ``context`` and ``final`` are ignored (no prompt; one decoding mode)."""
        t0 = time.perf_counter()
        audio = np.ascontiguousarray(pcm, dtype=np.float32) / 32768.0
        tr = self._free.get()
        try:
            out = ctypes.POINTER(self._transcript_c)()
            err = tr._lib.moonshine_transcribe_without_streaming(
                tr._handle, audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), audio.shape[0], SAMPLE_RATE, 0,
                ctypes.byref(out))
            if err != 0:
                msg = tr._lib.moonshine_error_to_string(err)
                raise RuntimeError(f"moonshine failed: {msg.decode() if msg else err}")
            lines = []
            if out:
                t = out.contents
                for i in range(t.line_count):
                    if t.lines[i].text:
                        lines.append(ctypes.string_at(t.lines[i].text).decode("utf-8", errors="ignore").strip())
        finally:
            self._free.put(tr)
        self.decodes += 1
        text = _HYPHENATED.sub(lambda m: "to" + m.group(1), " ".join(x for x in lines if x))
        return text, time.perf_counter() - t0

    def warm_up(self) -> None:
        self.transcribe(np.random.default_rng(0).normal(0, 100, SAMPLE_RATE).astype(np.int16))

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> RedecodeStream:
        if language and language.lower().split("-")[0] != "en":
            raise ValueError(f"the Moonshine model recognises English only, not {language!r}")
        return RedecodeStream(self, "en", "")


def _arch(name: str) -> Any:
    from moonshine_voice.moonshine_api import ModelArch

    return ModelArch(ARCHS[name])
