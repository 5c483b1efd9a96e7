"""Identifiers shaped like OpenAI's: a prefix and 21 base62 characters (``event_…``, ``item_…``, ``resp_…``)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 21) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def event_id() -> str:
    return new_id("event_")
