"""Client events: parsing and shape validation, before the engine sees them.

:func:`parse_client_event` turns one WebSocket / data-channel message into a dict whose ``type`` is one of
``CLIENT_EVENT_TYPES`` and whose required fields have the right types, or raises :class:`ProtocolError`.
Deeper checks (does the item exist, is a response active) belong to the engine.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from voicecall.protocol.errors import ProtocolError

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


def client_event_id(event: Any) -> str | None:
    if isinstance(event, dict):
        eid = event.get("event_id")
        if isinstance(eid, str):
            return eid
    return None


def parse_client_event(message: str | bytes) -> dict[str, Any]:
    try:
        event = json.loads(message)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("invalid_json", f"The message is not valid JSON: {exc}.") from None
    if not isinstance(event, dict):
        raise ProtocolError("invalid_event", "Each message must be a JSON object (one event per message).")
    validate_client_event(event)
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
        raise ProtocolError("invalid_value", f"Invalid value: '{etype}'. Supported values are: "
                            + ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES) + ".", "type")
    eid = event.get("event_id")
    if eid is not None and (not isinstance(eid, str) or len(eid) > 512):
        raise ProtocolError("invalid_value", "event_id must be a string of at most 512 characters.", "event_id")
    for key in event:
        if key not in ("type", "event_id") and key not in _KEYS[etype]:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{key}'.", key)
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
