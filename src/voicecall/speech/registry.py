"""Builds the local speech pipeline (VAD → STT → LLM → TTS) from :class:`voicecall.config.LocalConfig`.

Each stage's ``type`` selects an adapter (one module per adapter, imported only when used); the stage's other
keys are that adapter's options, validated here (unknown types and unknown option keys are configuration
errors that list what is valid). Models are cached process-wide: the same stage configuration always returns
the same object, loaded once, even when several threads ask at the same time.

Adapter types::

    vad: silero | webrtc | energy
    stt: whisper | moonshine | pocketsphinx | deepgram | openai-compatible | fallback
    llm: llama-cpp | openai-compatible | anthropic | echo | fallback
    tts: piper | espeak | tone | elevenlabs | openai-compatible | fallback
    eot: smart-turn | fixed          (semantic_vad's end-of-turn model)

Cloud adapters name the environment variable their key comes from (``Adapter.key_env``); a missing key is a
configuration error found by :func:`check_stages` before anything loads (``voicecall serve`` calls it first).
``fallback`` (any stage but VAD) wraps a ``chain`` of other stage configurations, see :mod:`.fallback`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, LocalConfig, StageConfig
from .base import LLM, EOTModel, STTModel, TTSModel, VADModel
from .prices import StagePrices
from .voices import VoiceMap

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

STAGES = ("vad", "stt", "llm", "tts", "eot")


@dataclass(frozen=True, slots=True)
class Option:
    """One adapter option: its Python type(s), the constructor keyword, and whether it is required."""

    kind: type | tuple[type, ...]
    kwarg: str
    required: bool = False
    default: Any = None
    """Applied by the registry when the option is not given (``None``: the constructor's own default)."""


@dataclass(frozen=True, slots=True)
class Adapter:
    """How to build one adapter: ``target`` is ``"module:Class"`` relative to ``voicecall.speech``."""

    stage: str
    type: str
    target: str
    options: dict[str, Option]
    label: Callable[[dict[str, Any]], str] = field(default=lambda opts: "")
    key_env: str | None = None
    """Environment variable holding the API key (the ``apiKey`` option wins)."""
    key_needed: Callable[[dict[str, Any]], bool] = field(default=lambda opts: True)
    """Whether these options need a key (OpenAI-compatible servers only need one at api.openai.com)."""


def _stem(key: str, default: str) -> Callable[[dict[str, Any]], str]:
    return lambda opts: Path(opts[key]).name.removesuffix(".onnx").removesuffix(".gguf") if opts.get(key) else default


def _o(kind: type | tuple[type, ...], kwarg: str, required: bool = False, default: Any = None) -> Option:
    return Option(kind, kwarg, required, default)


_NUM = (int, float)
_OPENAI = "https://api.openai.com/v1"


def _at_openai(opts: dict[str, Any]) -> bool:
    return "api.openai.com" in str(opts.get("baseUrl", _OPENAI))


STT_PROCESSES_DEFAULT = 2
"""pocketsphinx worker processes when ``stt.processes`` is not given (0 = decode in the server process)."""
ADAPTERS: dict[str, dict[str, Adapter]] = {
    "vad": {
        "silero": Adapter("vad", "silero", "vad_silero:SileroVAD",
                          {"modelPath": _o(str, "model_path"), "threads": _o(int, "threads")},
                          _stem("modelPath", "silero_vad.onnx")),
        "webrtc": Adapter("vad", "webrtc", "vad_webrtc:WebRTCVAD", {"mode": _o(int, "mode")},
                          lambda o: f"mode {o.get('mode', 3)}"),
        "energy": Adapter("vad", "energy", "vad_energy:EnergyVAD",
                          {"thresholdDbfs": _o(_NUM, "threshold_dbfs"), "frameSamples": _o(int, "frame_samples")},
                          lambda o: "test only"),
    },
    "stt": {
        "whisper": Adapter("stt", "whisper", "stt_whisper:WhisperSTT", {
            "model": _o(str, "model"), "device": _o(str, "device"), "computeType": _o(str, "compute_type"),
            "threads": _o(int, "threads"), "workers": _o(int, "workers"), "language": _o(str, "language"),
            "beamSize": _o(int, "beam_size"), "window": _o(_NUM, "window"),
            "partialInterval": _o(_NUM, "partial_interval"), "noSpeechThreshold": _o(_NUM, "no_speech_threshold"),
        }, lambda o: f"{Path(o['model']).name if o.get('model') else 'tiny.en'}, {o.get('device', 'cpu')}"
                     + (f", {o['computeType']}" if o.get("computeType") else "")),
        "moonshine": Adapter("stt", "moonshine", "stt_moonshine:MoonshineSTT", {
            "model": _o(str, "model"), "arch": _o(str, "arch"), "instances": _o(int, "instances"),
            "window": _o(_NUM, "window"), "partialInterval": _o(_NUM, "partial_interval"),
        }, lambda o: f"{Path(o['model']).name if o.get('model') else 'tiny-en'}"),
        "pocketsphinx": Adapter("stt", "pocketsphinx", "stt_pocketsphinx:PocketsphinxSTT", {
            "language": _o(str, "language"), "hmm": _o(str, "hmm"), "lm": _o(str, "lm"), "dict": _o(str, "dictionary"),
            "poolSize": _o(int, "pool_size"), "maxPoolSize": _o(int, "max_pool_size"),
            "noiseFloor": _o(_NUM, "noise_floor"), "acquireTimeout": _o(_NUM, "acquire_timeout"),
            "speed": _o(str, "speed"),
            # Decoders in worker processes by default: in-process, pocketsphinx holds the GIL for 10-100 ms per
            # decode call and stalls every other session's audio (docs/speech.md, docs/webrtc.md "Capacity").
            "processes": _o(int, "processes", default=STT_PROCESSES_DEFAULT),
        }, lambda o: f"{o.get('language', 'en-us')}, {o.get('speed', 'accurate')}, {o.get('poolSize', 2)} decoders"
                     + (f" in {o['processes']} worker processes" if o.get("processes") else "")),
        "deepgram": Adapter("stt", "deepgram", "stt_deepgram:DeepgramSTT", {
            "model": _o(str, "model"), "apiKey": _o(str, "api_key"), "baseUrl": _o(str, "base_url"),
            "language": _o(str, "language"), "endpointing": _o(int, "endpointing"),
            "utteranceEndMs": _o(int, "utterance_end_ms"), "smartFormat": _o(bool, "smart_format"),
            "keyterms": _o(list, "keyterms"), "keepAlive": _o(_NUM, "keep_alive"), "timeout": _o(_NUM, "timeout"),
        }, lambda o: f"{o.get('model', 'nova-3')} at {o.get('baseUrl', 'wss://api.deepgram.com')}", "DEEPGRAM_API_KEY"),
        "openai-compatible": Adapter("stt", "openai-compatible", "stt_openai_compat:OpenAICompatSTT", {
            "baseUrl": _o(str, "base_url"), "model": _o(str, "model"), "apiKey": _o(str, "api_key"),
            "language": _o(str, "language"), "prompt": _o(str, "prompt"), "timeout": _o(_NUM, "timeout"),
        }, lambda o: f"{o.get('model', 'gpt-4o-mini-transcribe')} at {o.get('baseUrl', _OPENAI)}", "OPENAI_API_KEY",
            _at_openai),
    },
    "llm": {
        "llama-cpp": Adapter("llm", "llama-cpp", "llm_llamacpp:LlamaCppLLM", {
            "modelPath": _o(str, "model_path"), "nCtx": _o(int, "n_ctx"), "nThreads": _o(int, "n_threads"),
            "nThreadsBatch": _o(int, "n_threads_batch"), "temperature": _o(_NUM, "temperature"),
            "topP": _o(_NUM, "top_p"), "repeatPenalty": _o(_NUM, "repeat_penalty"),
            "maxTokens": _o(int, "max_tokens"), "poolSize": _o(int, "pool_size"), "seed": _o(int, "seed"),
            "toolStringMax": _o(int, "tool_string_max"), "promptStyle": _o(str, "prompt_style"),
            "toolRouter": _o(bool, "tool_router"), "primeAnswers": _o(bool, "prime_answers"),
            "arithmetic": _o(bool, "arithmetic"), "qaInstruction": _o(str, "qa_instruction"),
        }, _stem("modelPath", "SmolLM2-135M-Instruct.Q4_1")),
        "openai-compatible": Adapter("llm", "openai-compatible", "llm_openai_compat:OpenAICompatLLM", {
            "baseUrl": _o(str, "base_url", required=True), "model": _o(str, "model"), "apiKey": _o(str, "api_key"),
            "maxTokens": _o(int, "max_tokens"), "temperature": _o(_NUM, "temperature"),
            "timeout": _o(_NUM, "timeout"),
        }, lambda o: f"{o.get('model', 'default')} at {o.get('baseUrl')}", "OPENAI_API_KEY", _at_openai),
        "anthropic": Adapter("llm", "anthropic", "llm_anthropic:AnthropicLLM", {
            "model": _o(str, "model"), "apiKey": _o(str, "api_key"), "baseUrl": _o(str, "base_url"),
            "maxTokens": _o(int, "max_tokens"), "temperature": _o(_NUM, "temperature"), "timeout": _o(_NUM, "timeout"),
            "anthropicVersion": _o(str, "anthropic_version"),
        }, lambda o: f"{o.get('model', 'claude-haiku-4-5')} at {o.get('baseUrl', 'https://api.anthropic.com')}",
            "ANTHROPIC_API_KEY"),
        "echo": Adapter("llm", "echo", "llm_echo:EchoLLM", {"delay": _o(_NUM, "delay")}, lambda o: "test only"),
    },
    "tts": {
        "piper": Adapter("tts", "piper", "tts_piper:PiperTTS", {
            "modelPath": _o(str, "model_path"), "threads": _o(int, "threads"), "spinning": _o(bool, "spinning"),
            "volume": _o(_NUM, "volume"),
            "noiseScale": _o(_NUM, "noise_scale"), "noiseWScale": _o(_NUM, "noise_w_scale"),
        }, _stem("modelPath", "en_US-joe-medium")),
        "espeak": Adapter("tts", "espeak", "tts_espeak:EspeakTTS",
                          {"wpm": _o(int, "wpm"), "defaultVoice": _o(str, "default_voice")},
                          lambda o: f"espeak-ng, {o.get('wpm', 175)} wpm"),
        "tone": Adapter("tts", "tone", "tts_tone:ToneTTS", {
            "sampleRate": _o(int, "sample_rate"), "wordMs": _o(int, "word_ms"), "gapMs": _o(int, "gap_ms"),
            "amplitude": _o(_NUM, "amplitude"),
        }, lambda o: "test only"),
        "elevenlabs": Adapter("tts", "elevenlabs", "tts_elevenlabs:ElevenLabsTTS", {
            "voiceId": _o(str, "voice_id"), "voices": _o(dict, "voices"), "model": _o(str, "model"),
            "apiKey": _o(str, "api_key"), "baseUrl": _o(str, "base_url"), "outputFormat": _o(str, "output_format"),
            "stability": _o(_NUM, "stability"), "similarityBoost": _o(_NUM, "similarity_boost"),
            "timeout": _o(_NUM, "timeout"),
        }, lambda o: f"{o.get('model', 'eleven_flash_v2_5')} at {o.get('baseUrl', 'wss://api.elevenlabs.io')}",
            "ELEVENLABS_API_KEY"),
        "openai-compatible": Adapter("tts", "openai-compatible", "tts_openai_compat:OpenAICompatTTS", {
            "baseUrl": _o(str, "base_url"), "model": _o(str, "model"), "apiKey": _o(str, "api_key"),
            "instructions": _o(str, "instructions"), "sampleRate": _o(int, "sample_rate"),
            "timeout": _o(_NUM, "timeout"),
        }, lambda o: f"{o.get('model', 'gpt-4o-mini-tts')} at {o.get('baseUrl', _OPENAI)}", "OPENAI_API_KEY",
            _at_openai),
    },
    "eot": {
        "smart-turn": Adapter("eot", "smart-turn", "eot_smartturn:SmartTurnEOT",
                              {"modelPath": _o(str, "model_path"), "threads": _o(int, "threads")},
                              _stem("modelPath", "smart-turn-v3.2-cpu")),
        "fixed": Adapter("eot", "fixed", "eot_fixed:FixedEOT", {"probability": _o(_NUM, "probability")},
                         lambda o: f"p = {o.get('probability', 0.6)}"),
    },
}


def adapter_types() -> dict[str, list[str]]:
    """Valid ``type`` values per stage."""
    return {stage: list(table) + (["fallback"] if stage != "vad" else []) for stage, table in ADAPTERS.items()}


# ------------------------------------------------------------------------------------ validation
def _camel(key: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)


_KIND_NAMES = {int: "integer", str: "string", bool: "boolean", list: "list", dict: "mapping"}
FALLBACK_OPTIONS: dict[str, type | tuple[type, ...]] = {"chain": list, "firstByteTimeout": _NUM, "retryAfter": _NUM}


def _check_type(stage: str, type_: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        name = "number" if float in kinds else " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise ConfigError(
            f"local.{stage}.{key} (type {type_}) must be a {name}, not {type(value).__name__} {value!r}"
        )
    return value


def _fallback_entries(stage: str, opts: dict[str, Any]) -> list[StageConfig]:
    chain = opts.get("chain")
    if not isinstance(chain, list) or not chain:
        raise ConfigError(f"local.{stage} type 'fallback' needs a non-empty 'chain' list of {stage} configurations")
    entries: list[StageConfig] = []
    for n, raw in enumerate(chain):
        if not isinstance(raw, dict) or "type" not in raw:
            raise ConfigError(f"local.{stage}.chain[{n}] must be a mapping with a 'type' (got {raw!r})")
        if raw["type"] == "fallback":
            raise ConfigError(f"local.{stage}.chain[{n}]: a fallback chain cannot contain another fallback chain")
        entries.append(StageConfig.model_validate(raw))
    return entries


def _resolve_fallback(stage: str, cfg: StageConfig) -> tuple[Adapter, dict[str, Any]]:
    if stage == "vad":
        raise ConfigError("local.vad cannot be a fallback chain (VAD runs on this machine)")
    opts: dict[str, Any] = {}
    for raw_key, value in cfg.options().items():
        key = _camel(raw_key)
        if key not in FALLBACK_OPTIONS:
            raise ConfigError(f"local.{stage}: unknown option {raw_key!r} for type 'fallback'; valid options: "
                              f"{', '.join(FALLBACK_OPTIONS)}")
        if value is not None:
            opts[key] = _check_type(stage, "fallback", key, value, FALLBACK_OPTIONS[key])
    for n, entry in enumerate(_fallback_entries(stage, opts)):
        try:
            resolve_stage(stage, entry)
        except ConfigError as exc:
            raise ConfigError(f"in local.{stage}.chain[{n}]: {exc}") from None
    names = " → ".join(str(e.get("type")) for e in opts["chain"])
    return Adapter(stage, "fallback", "fallback:Fallback", {}, lambda o: names), opts


def resolve_stage(stage: str, cfg: StageConfig) -> tuple[Adapter, dict[str, Any]]:
    """Validate a stage configuration; return its adapter and its options (camelCase keys, ``None`` dropped).

    A cloud adapter's missing API key (neither ``apiKey`` nor its environment variable) is a ``ConfigError``."""
    table = ADAPTERS.get(stage)
    if table is None:
        raise ConfigError(f"unknown speech stage {stage!r}; stages are: {', '.join(STAGES)}")
    if cfg.type == "fallback":
        return _resolve_fallback(stage, cfg)
    adapter = table.get(cfg.type)
    if adapter is None:
        raise ConfigError(
            f"local.{stage}.type {cfg.type!r} is not a known {stage} adapter; valid types: "
            f"{', '.join(adapter_types()[stage])}"
        )
    opts: dict[str, Any] = {}
    for raw_key, value in cfg.options().items():
        key = _camel(raw_key)
        if key not in adapter.options:
            valid = ", ".join(adapter.options) or "(none)"
            raise ConfigError(f"local.{stage}: unknown option {raw_key!r} for type {cfg.type!r}; valid options: {valid}")
        if value is None:
            continue
        opts[key] = _check_type(stage, cfg.type, key, value, adapter.options[key].kind)
    for key, opt in adapter.options.items():
        if opt.default is not None and key not in opts:
            opts[key] = opt.default
        if opt.required and key not in opts:
            raise ConfigError(f"local.{stage} type {cfg.type!r} needs the option {key!r}")
    if adapter.key_env and not opts.get("apiKey") and adapter.key_needed(opts) and not os.environ.get(adapter.key_env):
        raise ConfigError(f"local.{stage} type {cfg.type!r} needs an API key: set the {adapter.key_env} environment "
                          f"variable (or local.{stage}.apiKey)")
    return adapter, opts


def stage_prices(local_cfg: LocalConfig) -> StagePrices:
    try:
        return StagePrices(local_cfg.prices)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_stages(local_cfg: LocalConfig) -> None:
    """Validate every stage (types, options, API keys) and the prices without loading anything. Raises
    ``ConfigError``."""
    for stage in STAGES:
        resolve_stage(stage, getattr(local_cfg, stage))
    stage_prices(local_cfg)


# ------------------------------------------------------------------------------------ model cache
_CACHE: dict[tuple[str, str, str], Any] = {}
_KEY_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_CACHE_LOCK = threading.Lock()


def _build(adapter: Adapter, opts: dict[str, Any], progress: Progress | None = None) -> Any:
    module_name, cls_name = adapter.target.split(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    cls = getattr(module, cls_name)
    kwargs = {adapter.options[k].kwarg: v for k, v in opts.items()}
    if progress is not None and "progress" in inspect.signature(cls).parameters:
        kwargs["progress"] = progress  # long loads (worker processes) report their steps
    try:
        return cls(**kwargs)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"local.{adapter.stage} ({adapter.type}): {exc}") from exc


def _build_fallback(stage: str, opts: dict[str, Any], progress: Progress | None) -> Any:
    from . import fallback

    entries = _fallback_entries(stage, opts)
    models = [load_stage(stage, e, progress) for e in entries]
    names = [f"{e.type}" + (f" {e.options().get('model')}" if e.options().get("model") else "") for e in entries]
    kw = {k: v for k, v in (("first_byte_timeout", opts.get("firstByteTimeout")),
                            ("retry_after", opts.get("retryAfter"))) if v is not None}
    if stage == "llm":
        return fallback.FallbackLLM(models, names, **kw)
    if stage == "stt":
        return fallback.FallbackSTT(models, names, **kw)
    return fallback.FallbackTTS(models, names, [e.type for e in entries], **kw)


def load_stage(stage: str, cfg: StageConfig, progress: Progress | None = None) -> Any:
    """The model of one stage, loaded once per process per (type, options)."""
    adapter, opts = resolve_stage(stage, cfg)
    key = (stage, adapter.type, json.dumps(opts, sort_keys=True, default=str))
    label = adapter.label(opts)
    what = f"{stage} {adapter.type}" + (f" ({label})" if label else "")
    with _CACHE_LOCK:
        model = _CACHE.get(key)
        if model is not None:
            if progress:
                progress(f"{what}: already loaded")
            return model
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _CACHE_LOCK:
            model = _CACHE.get(key)
        if model is None:
            if progress:
                progress(f"loading {what}…")
            t0 = time.perf_counter()
            model = (_build_fallback(stage, opts, progress) if adapter.type == "fallback"
                     else _build(adapter, opts, progress))
            dt = time.perf_counter() - t0
            with _CACHE_LOCK:
                _CACHE[key] = model
            if progress:
                progress(f"loaded {what} in {dt:.2f} s")
            else:
                log.info("loaded %s in %.2f s", what, dt)
        elif progress:
            progress(f"{what}: already loaded")
    return model


def clear_cache() -> None:
    """Forget every cached model (they are freed once no session uses them). For tests and reloads."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _KEY_LOCKS.clear()


# ------------------------------------------------------------------------------------ pipeline
@dataclass(slots=True)
class Pipeline:
    """The four loaded stages of the local engine plus the voice table of its TTS."""

    vad: VADModel
    stt: STTModel
    llm: LLM
    tts: TTSModel
    voice_map: VoiceMap
    types: dict[str, str] = field(default_factory=dict)
    """Stage → adapter type, e.g. ``{"llm": "llama-cpp", ...}``."""
    prices: StagePrices = field(default_factory=StagePrices)
    """What each provider costs (``local.prices`` over the defaults), for ``response.done``'s cost."""
    eot: EOTModel | None = None
    """semantic_vad's end-of-turn model."""

    def voice_names(self) -> list[str]:
        """Voice names clients may ask for (OpenAI's, plus any added by ``voiceMap``)."""
        return self.voice_map.names()

    def local_voice(self, name: str | None) -> str | None:
        """The TTS voice for an OpenAI voice name (``ValueError`` if unknown). See also :meth:`voice_speed`."""
        return self.voice_map.resolve(name).voice

    def voice_speed(self, name: str | None) -> float:
        """Speed factor of that voice (Piper has one voice, so OpenAI names differ by speaking rate)."""
        return self.voice_map.resolve(name).speed

    def warm_up(self, progress: Progress | None = None) -> None:
        """See :func:`warm_up`."""
        warm_up(self, progress)


def load_pipeline(local_cfg: LocalConfig, progress: Progress | None = None) -> Pipeline:
    """Build (or fetch from the process cache) every stage of ``local_cfg``. Raises ``ConfigError``."""
    check_stages(local_cfg)  # validate everything before loading anything
    models = {stage: load_stage(stage, getattr(local_cfg, stage), progress) for stage in STAGES}
    tts = models["tts"]
    try:
        voice_map = VoiceMap(local_cfg.tts.type, tts.voices(), local_cfg.voice_map,
                             getattr(tts, "default_voices", lambda: None)())
    except ValueError as exc:
        raise ConfigError(f"local.voiceMap: {exc}") from exc
    try:
        voice_map.resolve(local_cfg.voice)
    except ValueError as exc:
        raise ConfigError(f"local.voice: {exc}") from exc
    return Pipeline(models["vad"], models["stt"], models["llm"], tts, voice_map,
                    {stage: getattr(local_cfg, stage).type for stage in STAGES}, stage_prices(local_cfg),
                    eot=models["eot"])


def warm_up(pipeline: Pipeline, progress: Progress | None = None) -> None:
    """Run one tiny inference per stage so that the first real turn does not pay first-call costs.

    Remote LLMs (``openai-compatible``) are not contacted. Blocking: call it from a worker thread.
    """
    t0 = time.perf_counter()
    vad = pipeline.vad.new_stream()
    vad.probability(np.zeros(vad.frame_samples, dtype=np.int16))
    vad.reset()
    stt_warm = getattr(pipeline.stt, "warm_up", None)
    if callable(stt_warm):
        stt_warm()
    else:
        stt = pipeline.stt.new_stream()
        stt.feed(np.random.default_rng(0).normal(0, 100, 3200).astype(np.int16))
        stt.finish()
    llm_warm = getattr(pipeline.llm, "warm_up", None)
    if callable(llm_warm):
        llm_warm()
    eot_warm = getattr(pipeline.eot, "warm_up", None)
    if callable(eot_warm):
        eot_warm()
    tts_warm = getattr(pipeline.tts, "warm_up", None)
    if callable(tts_warm):
        tts_warm()
    else:
        for _ in pipeline.tts.synthesize("Hi."):
            pass
    if progress:
        progress(f"warm-up… {time.perf_counter() - t0:.1f} s")
