"""The ``error`` server event and the exception that produces it.

Every client mistake raises :class:`ProtocolError`; the transport turns it into an ``error`` event that echoes
the client's ``event_id`` and keeps the session open. Codes follow OpenAI's where OpenAI's are known
(``invalid_event``, ``invalid_value``, ``unknown_parameter``, ``input_audio_buffer_commit_empty``,
``conversation_already_has_active_response``, ``response_cancel_not_active``, ``beta_api_shape_disabled``); the full
list we emit is in docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

from voicecall.protocol.ids import event_id

MAX_MESSAGE_CHARS = 1000
"""Longest ``error.message`` sent: whatever a message quotes from the client is cut (see :func:`clip`)."""
MAX_PARAM_CHARS = 200
MAX_EVENT_ID_CHARS = 512


def clip(value: object, limit: int = 64) -> str:
    """``value`` as text for an error message, cut to ``limit`` characters (with the length it had)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None,
                 type: str = "invalid_request_error") -> None:  # `type`: the protocol field name
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.event_id: str | None = None
        """The offending event's ``event_id``, when the event could be read."""


def error_event(code: str, message: str, *, param: str | None = None, client_event_id: str | None = None,
                type: str = "invalid_request_error") -> dict[str, Any]:
    """An ``error`` event; message, param and the echoed ``event_id`` are cut to bounded lengths whatever the
    caller passes (the client controls much of what they quote)."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    if param is not None and len(param) > MAX_PARAM_CHARS:
        param = param[:MAX_PARAM_CHARS]
    if client_event_id is not None and len(client_event_id) > MAX_EVENT_ID_CHARS:
        client_event_id = client_event_id[:MAX_EVENT_ID_CHARS]
    return {
        "type": "error",
        "event_id": event_id(),
        "error": {"type": type, "code": code, "message": message, "param": param, "event_id": client_event_id},
    }


def from_exception(exc: ProtocolError, client_event_id: str | None) -> dict[str, Any]:
    return error_event(exc.code, exc.message, param=exc.param, client_event_id=client_event_id or exc.event_id,
                       type=exc.type)
