"""The beta Realtime protocol (``OpenAI-Beta: realtime=v1``), translated to and from GA.

A client asks for beta with the ``OpenAI-Beta: realtime=v1`` header or the ``openai-beta.realtime-v1`` WebSocket
subprotocol (:func:`requested`). Everything behind the connection speaks GA (the local engine, OpenAI through the
gateway); one :class:`BetaSession` per connection translates both ways:

* client -> GA (:meth:`BetaSession.client_event`): the flat beta ``session`` (``modalities``, ``voice``,
  ``input_audio_format``/``output_audio_format`` ``pcm16|g711_ulaw|g711_alaw``, ``input_audio_transcription``,
  ``input_audio_noise_reduction``, ``turn_detection``, ``max_response_output_tokens``, ``speed``, ``temperature``)
  becomes the nested GA session; ``response.create``'s ``modalities``/``voice``/``output_audio_format``;
  assistant content ``text``/``audio`` -> ``output_text``/``output_audio``. GA has no ``temperature``: it is
  checked (0.6-1.2), remembered and reported back, not applied. Other events have the same names in both.
* GA -> client (:meth:`BetaSession.server_event`): ``response.output_text.*`` -> ``response.text.*``,
  ``response.output_audio.*`` -> ``response.audio.*``, ``response.output_audio_transcript.*`` ->
  ``response.audio_transcript.*``, ``conversation.item.added`` -> ``conversation.item.created`` (GA's
  ``conversation.item.done`` has no beta counterpart and is dropped); session objects flattened, response objects
  and items renamed back; ``session.created`` is followed by ``conversation.created`` as beta servers sent it;
  ``error`` params name the beta fields.

The GA path never touches this module: a GA connection has no :class:`BetaSession`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from voicecall.protocol.errors import ProtocolError, from_exception
from voicecall.protocol.ids import event_id, new_id

SUBPROTOCOL = "openai-beta.realtime-v1"
FORMATS_TO_GA: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000}, "g711_ulaw": {"type": "audio/pcmu"}, "g711_alaw": {"type": "audio/pcma"},
}
FORMATS_TO_BETA = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
EVENTS_TO_BETA = {
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "conversation.item.added": "conversation.item.created",
}
DROPPED = frozenset({"conversation.item.done"})
"""GA events with no beta counterpart (the beta client learns an item is complete from ``response.output_item.done``
and the transcription events)."""
_PARAMS_TO_BETA = (  # GA param prefix -> beta param prefix (error events)
    ("session.audio.input.format", "session.input_audio_format"),
    ("session.audio.output.format", "session.output_audio_format"),
    ("session.audio.input.transcription", "session.input_audio_transcription"),
    ("session.audio.input.noise_reduction", "session.input_audio_noise_reduction"),
    ("session.audio.input.turn_detection", "session.turn_detection"),
    ("session.audio.output.voice", "session.voice"),
    ("session.audio.output.speed", "session.speed"),
    ("session.output_modalities", "session.modalities"),
    ("session.max_output_tokens", "session.max_response_output_tokens"),
    ("response.audio.output.voice", "response.voice"),
    ("response.audio.output.format", "response.output_audio_format"),
    ("response.output_modalities", "response.modalities"),
)
_CONTENT_TO_GA = {"text": "output_text", "audio": "output_audio"}
_CONTENT_TO_BETA = {"output_text": "text", "output_audio": "audio"}
_AUDIO_DELTA_GA = b'"response.output_audio.delta"'
_AUDIO_DELTA_BETA = b'"response.audio.delta"'
DEFAULT_TEMPERATURE = 0.8


class BetaRefusal(Exception):
    """A beta client event that cannot be translated; :attr:`event` is the ``error`` event to send back."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event["error"]["message"])
        self.event = event


def requested(headers: Mapping[str, str], subprotocols: Iterable[str]) -> bool:
    """Does this WebSocket handshake ask for the beta protocol?"""
    return headers.get("openai-beta", "").strip().lower().startswith("realtime=") or SUBPROTOCOL in subprotocols


def _err(code: str, message: str, param: str) -> ProtocolError:
    return ProtocolError(code, message, param)


def _format_to_ga(value: Any, param: str) -> Any:
    if isinstance(value, dict):  # already the GA object
        return value
    if not isinstance(value, str) or value not in FORMATS_TO_GA:
        raise _err("invalid_value", f"Invalid value: {value!r}. Supported values are: 'pcm16', 'g711_ulaw', and "
                   "'g711_alaw'.", param)
    return dict(FORMATS_TO_GA[value])


def _format_to_beta(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return FORMATS_TO_BETA.get(value["type"], value["type"])
    return value


def _modalities_to_ga(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise _err("invalid_value", "modalities must be [\"text\"] or [\"text\", \"audio\"].", param)
    return ["audio"] if "audio" in value else ["text"]


def _modalities_to_beta(value: Any) -> list[str]:
    return ["text", "audio"] if not isinstance(value, list) or "audio" in value else ["text"]


def _temperature(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.6 <= value <= 1.2:
        raise _err("invalid_value", f"Invalid value: {value!r}. temperature must be a number from 0.6 to 1.2.", param)
    return float(value)


def item_to_ga(item: Mapping[str, Any]) -> dict[str, Any]:
    """A beta item (assistant content ``text``/``audio``) in GA terms (``output_text``/``output_audio``)."""
    out = dict(item)
    content = item.get("content")
    if item.get("role") == "assistant" and isinstance(content, list):
        out["content"] = [{**p, "type": _CONTENT_TO_GA[p["type"]]} if isinstance(p, dict) and p.get("type")
                          in _CONTENT_TO_GA else p for p in content]
    return out


def item_to_beta(item: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(item)
    out.setdefault("object", "realtime.item")
    content = item.get("content")
    if isinstance(content, list):
        out["content"] = [{**p, "type": _CONTENT_TO_BETA[p["type"]]} if isinstance(p, dict) and p.get("type")
                          in _CONTENT_TO_BETA else p for p in content]
    return out


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def param_to_beta(param: str | None) -> str | None:
    if param is None:
        return None
    for ga, beta in _PARAMS_TO_BETA:
        if param == ga or param.startswith((ga + ".", ga + "[")):
            return beta + param[len(ga):]
    return param


class BetaSession:
    """Translation state of one beta connection: the ``temperature`` it set (GA has none, so it is reported from
    here) and the id of its conversation."""

    def __init__(self) -> None:
        self.temperature = DEFAULT_TEMPERATURE
        self.conversation_id = new_id("conv_")

    # ----------------------------------------------------------------------------------- client -> GA
    def client_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """The GA form of a beta client event (the same object when nothing needs renaming). Raises
        :class:`ProtocolError` naming the beta field."""
        etype = event.get("type")
        if etype == "session.update" and isinstance(event.get("session"), dict):
            return {**event, "session": self.session_to_ga(event["session"])}
        if etype == "response.create" and isinstance(event.get("response"), dict):
            return {**event, "response": self.response_to_ga(event["response"])}
        if etype == "conversation.item.create" and isinstance(event.get("item"), dict):
            return {**event, "item": item_to_ga(event["item"])}
        return event

    def session_to_ga(self, session: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "realtime"}
        audio: dict[str, dict[str, Any]] = {"input": {}, "output": {}}
        for key, value in session.items():
            param = f"session.{key}"
            if key == "modalities":
                out["output_modalities"] = _modalities_to_ga(value, param)
            elif key in ("voice", "speed"):
                audio["output"][key] = value
            elif key == "input_audio_format":
                audio["input"]["format"] = _format_to_ga(value, param)
            elif key == "output_audio_format":
                audio["output"]["format"] = _format_to_ga(value, param)
            elif key == "input_audio_transcription":
                audio["input"]["transcription"] = value
            elif key == "input_audio_noise_reduction":
                audio["input"]["noise_reduction"] = value
            elif key == "turn_detection":
                audio["input"]["turn_detection"] = value
            elif key == "max_response_output_tokens":
                out["max_output_tokens"] = value
            elif key == "temperature":
                self.temperature = _temperature(value, param)
            elif key == "audio" and isinstance(value, dict):  # a GA field in a beta event: merged
                for side in ("input", "output"):
                    if isinstance(value.get(side), dict):
                        audio[side] = {**value[side], **audio[side]}
            else:  # same name in both: instructions, tools, tool_choice, tracing, model, type, ...
                out[key] = value
        audio = {side: fields for side, fields in audio.items() if fields}
        if audio:
            out["audio"] = audio
        return out

    def response_to_ga(self, response: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        output: dict[str, Any] = {}
        for key, value in response.items():
            param = f"response.{key}"
            if key == "modalities":
                out["output_modalities"] = _modalities_to_ga(value, param)
            elif key == "voice":
                output["voice"] = value
            elif key == "output_audio_format":
                output["format"] = _format_to_ga(value, param)
            elif key == "temperature":
                _temperature(value, param)  # checked; GA has no per-response temperature
            elif key == "max_response_output_tokens":
                out["max_output_tokens"] = value
            elif key == "input" and isinstance(value, list):
                out["input"] = [item_to_ga(i) if isinstance(i, dict) else i for i in value]
            else:
                out[key] = value
        if output:
            out["audio"] = {"output": output}
        return out

    def client_bytes(self, data: bytes) -> bytes:
        """:meth:`client_event` for a raw message (the relay): the same bytes when nothing changes or the message
        is not an event (upstream reports that). Raises :class:`BetaRefusal`."""
        try:
            event = json.loads(data)
        except ValueError:
            return data
        if type(event) is not dict:
            return data
        try:
            ga = self.client_event(event)
        except ProtocolError as exc:
            eid = event.get("event_id")
            raise BetaRefusal(from_exception(exc, eid if isinstance(eid, str) else None)) from None
        return data if ga is event else json.dumps(ga).encode()

    # ----------------------------------------------------------------------------------- GA -> client
    def server_event(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The beta form of one GA server event: zero, one or two events (never the same object)."""
        etype = event.get("type")
        if etype in DROPPED:
            return []
        out = dict(event)
        if etype in EVENTS_TO_BETA:
            out["type"] = EVENTS_TO_BETA[etype]
        if isinstance(out.get("session"), dict):
            out["session"] = self.session_to_beta(out["session"])
            if etype == "session.created":
                return [out, {"type": "conversation.created", "event_id": event_id(),
                              "conversation": {"id": self.conversation_id, "object": "realtime.conversation"}}]
        elif isinstance(out.get("response"), dict):
            out["response"] = self.response_to_beta(out["response"])
        elif isinstance(out.get("item"), dict):
            out["item"] = item_to_beta(out["item"])
        elif etype == "error" and isinstance(out.get("error"), dict) and out["error"].get("param"):
            out["error"] = {**out["error"], "param": param_to_beta(out["error"]["param"])}
        return [out]

    def session_to_beta(self, session: Mapping[str, Any]) -> dict[str, Any]:
        audio = _mapping(session.get("audio"))
        inp, outp = _mapping(audio.get("input")), _mapping(audio.get("output"))
        beta: dict[str, Any] = {
            "id": session.get("id"), "object": "realtime.session", "model": session.get("model"),
            "modalities": _modalities_to_beta(session.get("output_modalities")),
            "instructions": session.get("instructions"), "voice": outp.get("voice"),
            "input_audio_format": _format_to_beta(inp.get("format", {"type": "audio/pcm"})),
            "output_audio_format": _format_to_beta(outp.get("format", {"type": "audio/pcm"})),
            "input_audio_transcription": copy.deepcopy(inp.get("transcription")),
            "turn_detection": copy.deepcopy(inp.get("turn_detection")),
            "input_audio_noise_reduction": copy.deepcopy(inp.get("noise_reduction")),
            "tools": copy.deepcopy(session.get("tools", [])), "tool_choice": copy.deepcopy(session.get("tool_choice", "auto")),
            "temperature": self.temperature, "max_response_output_tokens": session.get("max_output_tokens", "inf"),
            "speed": outp.get("speed", 1.0), "tracing": copy.deepcopy(session.get("tracing")),
        }
        if "expires_at" in session:
            beta["expires_at"] = session["expires_at"]
        return beta

    def response_to_beta(self, response: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(response)
        if "output_modalities" in out:
            out["modalities"] = _modalities_to_beta(out.pop("output_modalities"))
        audio = out.pop("audio", None)
        output = audio.get("output") if isinstance(audio, dict) else None
        if isinstance(output, dict):
            out["voice"] = output.get("voice")
            out["output_audio_format"] = _format_to_beta(output.get("format"))
        out["temperature"] = self.temperature
        if isinstance(out.get("output"), list):
            out["output"] = [item_to_beta(i) if isinstance(i, dict) else i for i in out["output"]]
        return out

    def server_frames(self, data: bytes, audio_delta: bool = False) -> list[bytes]:
        """:meth:`server_event` for a raw message (the relay). ``audio_delta``: the caller recognised a
        ``response.output_audio.delta`` (its type is renamed in place; the audio is not parsed)."""
        if audio_delta:
            return [data.replace(_AUDIO_DELTA_GA, _AUDIO_DELTA_BETA, 1)]
        try:
            event = json.loads(data)
        except ValueError:
            return [data]
        if type(event) is not dict:
            return [data]
        return [json.dumps(e).encode() for e in self.server_event(event)]
