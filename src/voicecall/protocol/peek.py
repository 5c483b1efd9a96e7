"""Recognise the two audio events from their bytes, without parsing their audio: the hot paths' peek.

A client streaming microphone audio sends an ``input_audio_buffer.append`` every 20 ms and the server answers with
``response.output_audio.delta`` events: nearly every frame on a realtime socket is one of the two, and nearly all
of its bytes are the base64 audio string. JSON-decoding such a frame builds a 1-2 kB Python string only to find the
type. These functions find the type and the audio string's bounds by comparing prefixes (C speed) and check that
the rest is exactly what they claim.

They only say *yes* for the shapes real clients and servers write (compact ``JSON.stringify`` / ``separators=(",",
":")`` or Python's default ``", "`` / ``": "``, ``type`` first, then ``audio`` / the delta's fields); every other
frame, including odd-but-valid JSON (other key order, other whitespace, escaped characters, duplicate keys), is
*not* recognised and goes to the caller's full-parse path, which handles it correctly. So a peek can be slower
than it could be for an unusual client, never wrong.

Smuggling: for an append the audio string must contain no escape and no quote, and what follows it must be
nothing or an ``event_id`` (checked by a pattern, or parsed with duplicate keys refused), so that what is forwarded
is exactly one append, whichever JSON parser reads it upstream.
"""

from __future__ import annotations

import json
import re
from typing import Any

APPEND_PREFIXES = (b'{"type":"input_audio_buffer.append","audio":"',
                   b'{"type": "input_audio_buffer.append", "audio": "')
DELTA_PREFIXES = (b'{"type":"response.output_audio.delta"', b'{"type": "response.output_audio.delta"')
ERROR_PREFIXES = (b'{"type":"error"', b'{"type": "error"')
_DELTA_MARKERS = (b'"delta":"', b'"delta": "')
_APPEND_COMPACT, _APPEND_SPACED = APPEND_PREFIXES
_ID_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
"""What an ``event_id`` after an append's audio may be made of, for it to be taken without a parse (any longer or
odder tail is parsed)."""
_ID_TAIL = b'","event_id":"'  # (14 bytes)
assert len(_APPEND_COMPACT) == 45 and len(_APPEND_SPACED) == 48 and len(_ID_TAIL) == 14
_SIMPLE_TAIL = re.compile(rb'"(?:\s*,\s*"event_id"\s*:\s*"[A-Za-z0-9_.:\-]{0,128}")?\s*\}\s*')
_ID_PATTERNS = {key: re.compile(rb'"' + key.encode() + rb'"\s*:\s*"([^"\\]{0,256})"') for key in ("response_id",
                                                                                                  "item_id")}
_CLOSE = 0x7D  # }


def b64_bytes(data: bytes, start: int, end: int) -> int:
    """Bytes that the base64 text ``data[start:end]`` decodes to (O(1), no copy)."""
    n = end - start
    return n * 3 // 4 - data.count(b"=", end - 2, end) if n > 1 else 0


def peek_append(data: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the base64 audio of a plain ``input_audio_buffer.append`` (``data[start:end]``), or
    ``None`` when ``data`` is anything else or an append in another shape (the caller parses it)."""
    if data.startswith(_APPEND_COMPACT):
        prefix, start = _APPEND_COMPACT, 45
    elif data.startswith(_APPEND_SPACED):
        prefix, start = _APPEND_SPACED, 48
    else:
        return None
    end = data.find(b'"', start)  # the audio string's end; it may hold no escape
    if end < 0 or data.find(b"\\", start, end) >= 0:
        return None
    last = len(data) - 2
    if end == last and data[-1] == _CLOSE:  # the usual tail, '"}' (what JSON.stringify and the SDKs write)
        return start, end
    if data.startswith(_ID_TAIL, end):  # '","event_id":"<id>"}' compact, checked without the pattern
        q = data.find(b'"', end + 14)
        if q == last and data[-1] == _CLOSE and q - end <= 14 + 128 and not data[end + 14:q].translate(None, _ID_CHARS):
            return start, end
    if _SIMPLE_TAIL.fullmatch(data, end):
        return start, end
    try:  # an unusual tail: it must parse, with no duplicate key, into an append
        event = json.loads(prefix + data[end:], object_pairs_hook=unique_keys)
    except ValueError:
        return None
    if type(event) is dict and event.get("type") == "input_audio_buffer.append":
        return start, end
    return None


def peek_audio_delta(data: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the base64 audio of a ``response.output_audio.delta`` (server -> client), or ``None``."""
    if not data.startswith(DELTA_PREFIXES):
        return None
    for marker in _DELTA_MARKERS:
        i = data.find(marker)
        if i >= 0:
            start = i + len(marker)
            end = data.find(b'"', start)  # the audio string's end; it may hold no escape
            return (start, end) if end >= 0 and data.find(b"\\", start, end) < 0 else None
    return None


def delta_ids(data: bytes, start: int) -> tuple[str | None, str | None]:
    """``(response_id, item_id)`` of a delta recognised by :func:`peek_audio_delta`, read from the bytes around the
    audio (``start``: where the audio begins) without parsing the event."""
    r = data.find(b'"response_id":"', 0, start)
    i = data.find(b'"item_id":"', 0, start)
    if r >= 0 and i >= 0:  # the compact form: two finds
        r_end = data.find(b'"', r + 15, start)
        i_end = data.find(b'"', i + 11, start)
        if r_end > 0 and i_end > 0 and data.find(b"\\", r, r_end) < 0 and data.find(b"\\", i, i_end) < 0:
            return data[r + 15:r_end].decode(), data[i + 11:i_end].decode()
    out: list[str | None] = []
    for key in ("response_id", "item_id"):
        m = _ID_PATTERNS[key].search(data, 0, start)
        if m is None:
            tail = data.find(b'"' + key.encode() + b'"', start)
            m = _ID_PATTERNS[key].search(data, tail) if tail >= 0 else None
        out.append(m.group(1).decode() if m is not None else None)
    return out[0], out[1]


class DeltaIds:
    """:func:`delta_ids` for one socket's stream of deltas: while they belong to one item (an answer's audio), two
    ``find`` calls confirm the ids instead of reading them again."""

    __slots__ = ("_marks", "ids")

    def __init__(self) -> None:
        self._marks: tuple[bytes, bytes] | None = None
        self.ids: tuple[str | None, str | None] = (None, None)

    def same(self, data: bytes, start: int) -> bool:
        """Whether the delta has the ids :meth:`of` read last (two ``find`` calls)."""
        marks = self._marks  # (these bytes cannot occur inside a JSON string: its quotes would be escaped)
        return marks is not None and data.find(marks[0], 0, start) >= 0 and data.find(marks[1], 0, start) >= 0

    def of(self, data: bytes, start: int) -> tuple[str | None, str | None]:
        """``delta_ids(data, start)``."""
        if self.same(data, start):
            return self.ids
        rid, iid = self.ids = delta_ids(data, start)
        self._marks = (b'"response_id":"' + rid.encode() + b'"', b'"item_id":"' + iid.encode() + b'"') \
            if rid is not None and iid is not None else None
        return self.ids


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing duplicate keys (a parser that keeps the first and one that keeps the last
    would see different events)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out
