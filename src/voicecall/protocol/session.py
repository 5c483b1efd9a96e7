"""The GA session object (``session.created|updated``, ``session.update``, client secrets).

:class:`SessionConfig` is the effective configuration of one session. :func:`apply_session_update` validates a
partial GA ``session`` object and returns a new config, or raises :class:`ProtocolError` naming the offending
``param`` — nothing is applied when anything is wrong. Fields the local engine cannot honour are refused with an
error instead of being silently ignored.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

from voicecall.protocol.errors import ProtocolError
from voicecall.protocol.ids import new_id

AUDIO_FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
TRANSCRIPTION_MODELS = (
    "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
    "gpt-4o-transcribe-diarize", "gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper",
)
# semantic_vad: silence proposes an end of turn and an end-of-turn model decides; engine/endpointing.py holds
# what each eagerness means (when the model is asked, its threshold, the hard maximum wait).
SEMANTIC_EAGERNESS = ("low", "medium", "high", "auto")
BETA_FIELDS = {
    "modalities": "output_modalities", "voice": "audio.output.voice", "input_audio_format": "audio.input.format",
    "output_audio_format": "audio.output.format", "input_audio_transcription": "audio.input.transcription",
    "turn_detection": "audio.input.turn_detection", "input_audio_noise_reduction": "audio.input.noise_reduction",
    "max_response_output_tokens": "max_output_tokens", "speed": "audio.output.speed",
}


@dataclass(slots=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    eagerness: str | None = None  # only for semantic_vad

    def to_dict(self) -> dict[str, Any]:
        if self.type == "semantic_vad":
            return {"type": "semantic_vad", "eagerness": self.eagerness or "auto",
                    "create_response": self.create_response, "interrupt_response": self.interrupt_response}
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "idle_timeout_ms": self.idle_timeout_ms,
                "create_response": self.create_response, "interrupt_response": self.interrupt_response}


@dataclass(slots=True)
class Transcription:
    model: str
    language: str | None = None
    prompt: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.language is not None:
            out["language"] = self.language
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return out


@dataclass(slots=True)
class SessionConfig:
    model: str
    instructions: str
    voice: str
    id: str = field(default_factory=lambda: new_id("sess_"))
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    input_format: str = "audio/pcm"
    output_format: str = "audio/pcm"
    speed: float = 1.0
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    max_output_tokens: int | str = "inf"
    truncation: str | dict[str, Any] = "auto"
    tracing: str | dict[str, Any] | None = None
    """``"auto"``, ``{workflow_name, group_id, metadata}`` or ``None``: kept in the conversation's history."""
    noise_reduction: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: dict[str, Any] | None = None
    expires_at: int = field(default_factory=lambda: int(time.time()) + 3600)

    def to_dict(self) -> dict[str, Any]:
        def fmt(f: str) -> dict[str, Any]:
            return {"type": f, "rate": 24000} if f == "audio/pcm" else {"type": f}

        out: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "tools": copy.deepcopy(self.tools),
            "tool_choice": copy.deepcopy(self.tool_choice),
            "max_output_tokens": self.max_output_tokens,
            "tracing": copy.deepcopy(self.tracing),
            "truncation": copy.deepcopy(self.truncation),
            "prompt": None,
            "expires_at": self.expires_at,
            "audio": {
                "input": {
                    "format": fmt(self.input_format),
                    "transcription": self.transcription.to_dict() if self.transcription else None,
                    "noise_reduction": copy.deepcopy(self.noise_reduction),
                    "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None,
                },
                "output": {"format": fmt(self.output_format), "voice": self.voice, "speed": self.speed},
            },
            "include": None,
        }
        if self.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = self.parallel_tool_calls
        if self.reasoning is not None:
            out["reasoning"] = copy.deepcopy(self.reasoning)
        return out


# ------------------------------------------------------------------------------------ validation
def _err(code: str, message: str, param: str) -> ProtocolError:
    return ProtocolError(code, message, param)


def _expect(value: Any, kind: type | tuple[type, ...], param: str, what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise _err("invalid_type", f"Invalid type for '{param}': expected {what}, but got a boolean.", param)
    if not isinstance(value, kind):
        raise _err("invalid_type", f"Invalid type for '{param}': expected {what}, but got {type(value).__name__}.", param)
    return value


def _unknown(obj: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _err("unknown_parameter", f"Unknown parameter: '{prefix}{key}'.", f"{prefix}{key}")


def parse_format(value: Any, param: str) -> str:
    _expect(value, dict, param, "an object like {\"type\": \"audio/pcm\", \"rate\": 24000}")
    _unknown(value, {"type", "rate"}, param + ".")
    ftype = value.get("type")
    if ftype not in AUDIO_FORMATS:
        raise _err("invalid_value", f"Invalid value: {ftype!r}. Supported values are: {', '.join(AUDIO_FORMATS)}.",
                   param + ".type")
    if "rate" in value:
        expected = 24000 if ftype == "audio/pcm" else 8000
        if value["rate"] != expected:
            raise _err("invalid_value", f"Invalid value: {value['rate']!r}. {ftype} is only supported at {expected} Hz.",
                       param + ".rate")
    return str(ftype)


def parse_tools(value: Any, param: str) -> list[dict[str, Any]]:
    _expect(value, list, param, "an array")
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(value):
        p = f"{param}[{i}]"
        _expect(tool, dict, p, "an object")
        ttype = tool.get("type", "function")
        if ttype == "mcp":
            raise _err("unsupported_parameter", "MCP tools are not supported by this server; declare function tools.",
                       p + ".type")
        if ttype != "function":
            raise _err("invalid_value", f"Invalid value: {ttype!r}. Supported values are: 'function'.", p + ".type")
        _unknown(tool, {"type", "name", "description", "parameters"}, p + ".")
        name = tool.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise _err("invalid_value", "Each function tool needs a 'name' (1-64 characters).", p + ".name")
        if name in names:
            raise _err("invalid_value", f"Duplicate tool name {name!r}.", p + ".name")
        names.add(name)
        params = tool.get("parameters", {"type": "object", "properties": {}})
        _expect(params, dict, p + ".parameters", "a JSON Schema object")
        desc = tool.get("description", "")
        _expect(desc, str, p + ".description", "a string")
        tools.append({"type": "function", "name": name, "description": desc, "parameters": params})
    return tools


def parse_tool_choice(value: Any, param: str, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            raise _err("invalid_value", f"Invalid value: {value!r}. Supported values are: 'auto', 'none', 'required'.", param)
        return value
    _expect(value, dict, param, "a string or an object")
    if value.get("type") != "function":
        raise _err("invalid_value", "tool_choice objects must be {\"type\": \"function\", \"name\": ...}.", param + ".type")
    _unknown(value, {"type", "name"}, param + ".")
    name = value.get("name")
    if not any(t["name"] == name for t in tools):
        raise _err("invalid_value", f"tool_choice names {name!r}, which is not among the declared tools.", param + ".name")
    return {"type": "function", "name": name}


def parse_max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    _expect(value, int, param, "an integer or 'inf'")
    if not 1 <= value <= 4096:
        raise _err("invalid_value", f"Invalid value: {value}. Expected an integer from 1 to 4096, or 'inf'.", param)
    return int(value)


def parse_truncation(value: Any, param: str) -> str | dict[str, Any]:
    """``"auto"``, ``"disabled"`` or ``{"type": "retention_ratio", "retention_ratio": 0..1,
    "token_limits": {"post_instructions": int}}`` (GA ``RealtimeTruncation``)."""
    if isinstance(value, str):
        if value not in ("auto", "disabled"):
            raise _err("invalid_value", f"Invalid value: {value!r}. Supported values are: 'auto', 'disabled', or a "
                       "retention_ratio object.", param)
        return value
    _expect(value, dict, param, "a string or an object")
    _unknown(value, {"type", "retention_ratio", "token_limits"}, param + ".")
    if value.get("type") != "retention_ratio":
        raise _err("invalid_value", f"Invalid value: {value.get('type')!r}. Supported values are: 'retention_ratio'.",
                   param + ".type")
    ratio = _expect(value.get("retention_ratio"), (int, float), param + ".retention_ratio", "a number")
    if not 0 <= ratio <= 1:
        raise _err("invalid_value", f"Invalid value: {ratio}. Expected a number from 0 to 1.", param + ".retention_ratio")
    out: dict[str, Any] = {"type": "retention_ratio", "retention_ratio": float(ratio)}
    limits = value.get("token_limits")
    if limits is not None:
        _expect(limits, dict, param + ".token_limits", "an object")
        _unknown(limits, {"post_instructions"}, param + ".token_limits.")
        post = limits.get("post_instructions")
        if post is not None:
            _expect(post, int, param + ".token_limits.post_instructions", "an integer")
            if post < 1:
                raise _err("invalid_value", f"Invalid value: {post}. Expected a positive integer.",
                           param + ".token_limits.post_instructions")
        out["token_limits"] = {"post_instructions": post}
    return out


def parse_modalities(value: Any, param: str) -> list[str]:
    _expect(value, list, param, "an array")
    if value not in (["audio"], ["text"]):
        raise _err("invalid_value", "output_modalities must be [\"audio\"] or [\"text\"] (one of them, not both).", param)
    return list(value)


def parse_turn_detection(value: Any, param: str, current: TurnDetection | None, defaults: TurnDetection) -> TurnDetection | None:
    if value is None:
        return None
    _expect(value, dict, param, "an object or null")
    ttype = value.get("type", current.type if current else "server_vad")
    base = replace(current) if current is not None and current.type == ttype else replace(defaults, type=ttype)
    if ttype == "server_vad":
        _unknown(value, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "create_response",
                         "interrupt_response", "idle_timeout_ms"}, param + ".")
        base.eagerness = None
        if "threshold" in value:
            t = _expect(value["threshold"], (int, float), param + ".threshold", "a number")
            if not 0.0 <= t <= 1.0:
                raise _err("invalid_value", f"Invalid value: {t}. threshold must be between 0.0 and 1.0.", param + ".threshold")
            base.threshold = float(t)
        for key, lo, hi in (("prefix_padding_ms", 0, 10000), ("silence_duration_ms", 50, 10000)):
            if key in value:
                v = _expect(value[key], int, f"{param}.{key}", "an integer")
                if not lo <= v <= hi:
                    raise _err("invalid_value", f"Invalid value: {v}. {key} must be between {lo} and {hi}.", f"{param}.{key}")
                setattr(base, key, int(v))
        if "idle_timeout_ms" in value:
            v = value["idle_timeout_ms"]
            if v is not None:
                v = _expect(v, int, param + ".idle_timeout_ms", "an integer or null")
                if not 5000 <= v <= 30000:
                    raise _err("invalid_value", f"Invalid value: {v}. idle_timeout_ms must be between 5000 and 30000, "
                               "or null.", param + ".idle_timeout_ms")
            base.idle_timeout_ms = v
    elif ttype == "semantic_vad":
        if "idle_timeout_ms" in value and value["idle_timeout_ms"] is not None:
            raise _err("invalid_value", "idle_timeout_ms is only supported with server_vad.", param + ".idle_timeout_ms")
        _unknown(value, {"type", "eagerness", "create_response", "interrupt_response", "idle_timeout_ms"}, param + ".")
        eag = value.get("eagerness", base.eagerness or "auto")
        if eag not in SEMANTIC_EAGERNESS:
            raise _err("invalid_value", f"Invalid value: {eag!r}. Supported values are: low, medium, high, auto.",
                       param + ".eagerness")
        base.eagerness = eag
        base.idle_timeout_ms = None
    else:
        raise _err("invalid_value", f"Invalid value: {ttype!r}. Supported values are: 'server_vad', 'semantic_vad'.",
                   param + ".type")
    for key in ("create_response", "interrupt_response"):
        if key in value:
            setattr(base, key, bool(_expect(value[key], bool, f"{param}.{key}", "a boolean")))
    return base


def apply_session_update(cfg: SessionConfig, patch: Any, *, voices: set[str], defaults: TurnDetection,
                         audio_started: bool, stt_models: set[str] = frozenset()) -> SessionConfig:  # type: ignore[assignment]
    """Validate a partial GA session object against ``cfg``; return the updated copy."""
    _expect(patch, dict, "session", "an object")
    for key in patch:
        if key in BETA_FIELDS:
            raise _err("unknown_parameter",
                       f"Unknown parameter: 'session.{key}'. This is the beta session shape; the GA name is "
                       f"'session.{BETA_FIELDS[key]}'.", f"session.{key}")
    if "temperature" in patch:
        raise _err("unknown_parameter", "Unknown parameter: 'session.temperature'. The GA Realtime API has no temperature.",
                   "session.temperature")
    _unknown(patch, {"type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
                     "max_output_tokens", "tracing", "truncation", "prompt", "include", "parallel_tool_calls",
                     "reasoning", "id", "object", "expires_at"}, "session.")
    if patch.get("type", "realtime") != "realtime":
        if patch.get("type") == "transcription":
            raise _err("unsupported_parameter", "Transcription-only sessions are not supported; use type 'realtime' "
                       "with audio.input.transcription set.", "session.type")
        raise _err("invalid_value", f"Invalid value: {patch.get('type')!r}. Supported values are: 'realtime'.", "session.type")
    new = replace(cfg, tools=list(cfg.tools), output_modalities=list(cfg.output_modalities))
    if "model" in patch:
        # The local engine serves the same stack whatever the name (as with ?model=): it reports what was asked.
        new.model = _expect(patch["model"], str, "session.model", "a string") or cfg.model
    if "tracing" in patch:
        new.tracing = parse_tracing(patch["tracing"], cfg.tracing)
    if "parallel_tool_calls" in patch:
        new.parallel_tool_calls = _expect(patch["parallel_tool_calls"], bool, "session.parallel_tool_calls",
                                          "a boolean")
    if "reasoning" in patch:
        new.reasoning = parse_reasoning(patch["reasoning"])
    if "instructions" in patch:
        new.instructions = _expect(patch["instructions"], str, "session.instructions", "a string")
    if "output_modalities" in patch:
        new.output_modalities = parse_modalities(patch["output_modalities"], "session.output_modalities")
    for key, ok in (("prompt", (None,)), ("include", (None, []))):
        if key in patch and patch[key] not in ok:
            raise _err("unsupported_parameter", f"session.{key} = {patch[key]!r} is not supported by this server.",
                       f"session.{key}")
    if "truncation" in patch:
        new.truncation = parse_truncation(patch["truncation"], "session.truncation")
    if "tools" in patch:
        new.tools = parse_tools(patch["tools"], "session.tools")
        if isinstance(new.tool_choice, dict) and "tool_choice" not in patch and not any(
                t["name"] == new.tool_choice["name"] for t in new.tools):
            new.tool_choice = "auto"
    if "tool_choice" in patch:
        new.tool_choice = parse_tool_choice(patch["tool_choice"], "session.tool_choice", new.tools)
    if "max_output_tokens" in patch:
        new.max_output_tokens = parse_max_tokens(patch["max_output_tokens"], "session.max_output_tokens")
    audio = patch.get("audio")
    if audio is not None:
        _expect(audio, dict, "session.audio", "an object")
        _unknown(audio, {"input", "output"}, "session.audio.")
        inp = audio.get("input")
        if inp is not None:
            _expect(inp, dict, "session.audio.input", "an object")
            _unknown(inp, {"format", "transcription", "turn_detection", "noise_reduction"}, "session.audio.input.")
            if "format" in inp:
                new.input_format = parse_format(inp["format"], "session.audio.input.format")
            if "noise_reduction" in inp:
                new.noise_reduction = parse_noise_reduction(inp["noise_reduction"], "session.audio.input.noise_reduction")
            if "transcription" in inp:
                new.transcription = _parse_transcription(inp["transcription"], stt_models)
            if "turn_detection" in inp:
                new.turn_detection = parse_turn_detection(inp["turn_detection"], "session.audio.input.turn_detection",
                                                          cfg.turn_detection, defaults)
        out = audio.get("output")
        if out is not None:
            _expect(out, dict, "session.audio.output", "an object")
            _unknown(out, {"format", "voice", "speed"}, "session.audio.output.")
            if "format" in out:
                new.output_format = parse_format(out["format"], "session.audio.output.format")
            if "voice" in out:
                new.voice = parse_voice(out["voice"], "session.audio.output.voice", voices)
                if audio_started and new.voice != cfg.voice:
                    raise _err("cannot_update_voice", "Cannot update a session's voice after the model has produced audio.",
                               "session.audio.output.voice")
            if "speed" in out:
                s = _expect(out["speed"], (int, float), "session.audio.output.speed", "a number")
                if not 0.25 <= s <= 1.5:
                    raise _err("invalid_value", f"Invalid value: {s}. speed must be between 0.25 and 1.5.",
                               "session.audio.output.speed")
                new.speed = float(s)
    return new


def parse_tracing(value: Any, current: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """``"auto"``, ``{workflow_name, group_id, metadata}`` or ``None``. As on OpenAI, a trace cannot be changed once
    enabled: repeating it (or ``"auto"``, which keeps it) is fine, another one is an error."""
    param = "session.tracing"
    if value is None or value == "auto":
        new: str | dict[str, Any] | None = value
    else:
        _expect(value, dict, param, "'auto', an object or null")
        _unknown(value, {"workflow_name", "group_id", "metadata"}, param + ".")
        for key in ("workflow_name", "group_id"):
            if value.get(key) is not None:
                _expect(value[key], str, f"{param}.{key}", "a string")
        if value.get("metadata") is not None:
            _expect(value["metadata"], dict, param + ".metadata", "an object")
        new = copy.deepcopy(value)
    if new == "auto" and isinstance(current, dict):
        return current
    if current is None or new == current:
        return new
    raise _err("invalid_value", "The session's tracing configuration cannot be changed once tracing is enabled.", param)


def parse_noise_reduction(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    _expect(value, dict, param, "an object or null")
    _unknown(value, {"type"}, param + ".")
    if value.get("type") not in ("near_field", "far_field"):
        raise _err("invalid_value", f"Invalid value: {value.get('type')!r}. Supported values are: 'near_field', "
                   "'far_field'.", param + ".type")
    return {"type": value["type"]}


def parse_reasoning(value: Any) -> dict[str, Any] | None:
    param = "session.reasoning"
    if value is None:
        return None
    _expect(value, dict, param, "an object or null")
    _unknown(value, {"effort"}, param + ".")
    effort = value.get("effort")
    if effort is not None and effort not in ("minimal", "low", "medium", "high", "xhigh"):
        raise _err("invalid_value", f"Invalid value: {effort!r}. Supported values are: 'minimal', 'low', 'medium', "
                   "'high', 'xhigh'.", param + ".effort")
    return {"effort": effort} if effort is not None else {}


def parse_voice(value: Any, param: str, voices: set[str]) -> str:
    if isinstance(value, dict):
        raise _err("unsupported_parameter", "Custom voices ({\"id\": ...}) are not supported by this server.", param)
    _expect(value, str, param, "a string")
    if value not in voices:
        raise _err("invalid_value", f"Invalid value: {value!r}. Supported values are: {', '.join(sorted(voices))}.", param)
    return str(value)


def _parse_transcription(value: Any, stt_models: set[str]) -> Transcription | None:
    param = "session.audio.input.transcription"
    if value is None:
        return None
    _expect(value, dict, param, "an object or null")
    _unknown(value, {"model", "language", "prompt"}, param + ".")
    model = value.get("model", "whisper-1")
    allowed = set(TRANSCRIPTION_MODELS) | set(stt_models)
    if model not in allowed:
        raise _err("invalid_value", f"Invalid value: {model!r}. Supported values are: {', '.join(sorted(allowed))}.",
                   param + ".model")
    lang = value.get("language")
    if lang is not None:
        _expect(lang, str, param + ".language", "a string")
        if lang.split("-")[0].lower() != "en":
            raise _err("unsupported_parameter", f"Language {lang!r} is not supported by the local speech-to-text "
                       "(English only).", param + ".language")
    prompt = value.get("prompt")
    if prompt is not None:
        _expect(prompt, str, param + ".prompt", "a string")
    return Transcription(model=model, language=lang, prompt=prompt)
