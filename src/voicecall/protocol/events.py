"""Client events: parsing and shape validation, before the engine sees them.

:func:`parse_client_event` turns one WebSocket / data-channel message into a dict whose ``type`` is one of
``CLIENT_EVENT_TYPES`` and whose required fields have the right types, or raises :class:`ProtocolError`.
Deeper checks (does the item exist, is a response active) belong to the engine.

Before a message is parsed, :func:`json_limits_problem` checks its shape cheaply: nesting deeper than
:data:`MAX_JSON_DEPTH`, more than :data:`MAX_JSON_CONTAINERS` objects/arrays or :data:`MAX_JSON_VALUES` values, and
integers longer than :data:`MAX_INT_DIGITS` digits are refused with ``invalid_json`` (the session goes on) instead
of reaching the parser (deep nesting would raise ``RecursionError``, huge integers ``ValueError``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from voicecall.protocol.errors import MAX_EVENT_ID_CHARS, ProtocolError, clip

CLIENT_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
BETA_CLIENT_EVENTS = {"transcription_session.update": "session.update with session.type 'transcription'"}

# Allowed top-level keys per event type (``type`` and ``event_id`` are always allowed).
_KEYS: dict[str, set[str]] = {
    "session.update": {"session"},
    "input_audio_buffer.append": {"audio"},
    "input_audio_buffer.commit": set(),
    "input_audio_buffer.clear": set(),
    "conversation.item.create": {"item", "previous_item_id"},
    "conversation.item.retrieve": {"item_id"},
    "conversation.item.truncate": {"item_id", "content_index", "audio_end_ms"},
    "conversation.item.delete": {"item_id"},
    "response.create": {"response"},
    "response.cancel": {"response_id"},
    "output_audio_buffer.clear": set(),
}
_REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "session.update": {"session": dict},
    "input_audio_buffer.append": {"audio": str},
    "conversation.item.create": {"item": dict},
    "conversation.item.retrieve": {"item_id": str},
    "conversation.item.truncate": {"item_id": str, "content_index": int, "audio_end_ms": int},
    "conversation.item.delete": {"item_id": str},
}


MAX_JSON_DEPTH = 32
"""Deepest nesting of objects/arrays accepted in a client event (GA events nest about 6 deep)."""
MAX_JSON_CONTAINERS = 20_000
"""Most objects + arrays in one client event."""
MAX_JSON_VALUES = 200_000
"""Most values (counted by their separating commas) in one client event."""
MAX_INT_DIGITS = 30
"""Longest integer literal accepted (larger ones cannot be a count, an index or a duration)."""
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def client_event_id(event: Any) -> str | None:
    """The client's ``event_id``, to echo in an ``error`` (clipped to :data:`MAX_EVENT_ID_CHARS`)."""
    if isinstance(event, dict):
        eid = event.get("event_id")
        if isinstance(eid, str):
            return eid[:MAX_EVENT_ID_CHARS]
    return None


def json_limits_problem(message: str | bytes) -> str | None:
    """Why ``message`` is refused before parsing (too deep, too many values), or ``None``.

    Cheap for real events: three C-speed counts over the text. Only a message with many brackets or commas has its
    strings blanked out (one regular-expression pass) and its brackets walked, the walk stopping at the first
    excess."""
    text = message.decode("utf-8", "replace") if isinstance(message, (bytes, bytearray)) else message
    opened = text.count("{") + text.count("[")
    if opened <= MAX_JSON_DEPTH and text.count(",") <= MAX_JSON_VALUES:
        return None
    skeleton = _STRING.sub('""', text)
    if skeleton.count(",") > MAX_JSON_VALUES:
        return f"it holds more than {MAX_JSON_VALUES} values"
    opened = skeleton.count("{") + skeleton.count("[")
    if opened > MAX_JSON_CONTAINERS:
        return f"it holds more than {MAX_JSON_CONTAINERS} objects and arrays"
    if opened > MAX_JSON_DEPTH:
        depth = 0
        for m in _BRACKET.finditer(skeleton):
            if m.group() in "[{":
                depth += 1
                if depth > MAX_JSON_DEPTH:
                    return f"it nests objects/arrays more than {MAX_JSON_DEPTH} deep"
            else:
                depth -= 1
    return None


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def loads_limited(message: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` behind :func:`json_limits_problem`; any failure is a :class:`ProtocolError` ``invalid_json``
    whose message echoes nothing of the input."""
    problem = json_limits_problem(message)
    if problem is not None:
        raise ProtocolError("invalid_json", f"The message was not parsed: {problem}.")
    try:
        return json.loads(message, parse_int=_parse_int, **kwargs)
    except json.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"The message is not valid JSON: {exc.msg} (at character {exc.pos}).") \
            from None
    except UnicodeDecodeError:
        raise ProtocolError("invalid_json", "The message is not valid UTF-8.") from None
    except (ValueError, RecursionError, OverflowError) as exc:  # parse_int, duplicate keys, nesting past the check
        raise ProtocolError("invalid_json", f"The message was not parsed: {str(exc)[:120]}.") from None


def parse_client_event(message: str | bytes) -> dict[str, Any]:
    """One client event, validated. A :class:`ProtocolError` carries the event's ``event_id`` when it had one."""
    event = loads_limited(message)
    if not isinstance(event, dict):
        raise ProtocolError("invalid_event", "Each message must be a JSON object (one event per message).")
    try:
        validate_client_event(event)
    except ProtocolError as exc:
        exc.event_id = client_event_id(event)
        raise
    return event


def validate_client_event(event: dict[str, Any]) -> None:
    etype = event.get("type")
    if etype is None:
        raise ProtocolError("invalid_event", "The 'type' field is missing.", "type")
    if not isinstance(etype, str):
        raise ProtocolError("invalid_type", "The 'type' field must be a string.", "type")
    if etype in BETA_CLIENT_EVENTS:
        raise ProtocolError("invalid_value", f"'{etype}' is a beta event; use {BETA_CLIENT_EVENTS[etype]}.", "type")
    if etype not in _KEYS:
        raise ProtocolError("invalid_value", f"Invalid value: '{clip(etype)}'. Supported values are: "
                            + ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES) + ".", "type")
    eid = event.get("event_id")
    if eid is not None and (not isinstance(eid, str) or len(eid) > MAX_EVENT_ID_CHARS):
        raise ProtocolError("invalid_value", f"event_id must be a string of at most {MAX_EVENT_ID_CHARS} characters.",
                            "event_id")
    for key in event:
        if key not in ("type", "event_id") and key not in _KEYS[etype]:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{clip(key)}'.", clip(key))
    for key, kind in _REQUIRED.get(etype, {}).items():
        if key not in event:
            raise ProtocolError("missing_required_parameter", f"Missing required parameter: '{key}'.", key)
        value = event[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ProtocolError("invalid_type", f"Invalid type for '{key}'.", key)
    if etype == "conversation.item.truncate" and (event["audio_end_ms"] < 0 or event["content_index"] < 0):
        raise ProtocolError("invalid_value", "audio_end_ms and content_index must not be negative.", "audio_end_ms")
    if etype == "response.create" and "response" in event and not isinstance(event["response"], dict):
        raise ProtocolError("invalid_type", "Invalid type for 'response': expected an object.", "response")
    if etype == "response.cancel" and event.get("response_id") is not None and not isinstance(event["response_id"], str):
        raise ProtocolError("invalid_type", "Invalid type for 'response_id': expected a string.", "response_id")
    if etype == "conversation.item.create":
        prev = event.get("previous_item_id")
        if prev is not None and not isinstance(prev, str):
            raise ProtocolError("invalid_type", "Invalid type for 'previous_item_id'.", "previous_item_id")


def decode_audio(b64: str, param: str = "audio") -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_value", "The audio is not valid base64.", param) from None
