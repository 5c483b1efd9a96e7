"""A generator of hostile client input: malformed, deep, huge and out-of-order events.

Each case is ``(name, message, expected error code or None)``; ``None`` means "any ``error``, or none at all, as long
as the session goes on" (out-of-order events may be legal). Sizes are kept small enough for a quick test run; the
shapes are the ones that broke servers before (deep nesting, huge integers, enormous ids, wrong types).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator

DEEP = 100_000


def hostile_messages(max_bytes: int, seed: int = 7) -> Iterator[tuple[str, str | bytes, str | None]]:
    rng = random.Random(seed)
    yield "not json", "{not json", "invalid_json"
    yield "binary garbage", bytes(rng.randrange(256) for _ in range(200)), "invalid_json"
    yield "deep array", "[" * DEEP + "]" * DEEP, "invalid_json"
    yield "deep object", '{"a":' * 50_000 + "1" + "}" * 50_000, "invalid_json"
    yield "deep inside an event", '{"type":"session.update","session":' + '{"a":' * 2000 + "1" + "}" * 2000 + "}", \
        "invalid_json"
    yield "5000-digit integer", '{"type":"conversation.item.truncate","item_id":"x","content_index":0,' \
        '"audio_end_ms":' + "9" * 5000 + "}", "invalid_json"
    yield "many values", "[" + ",".join(["0"] * 300_000) + "]", "invalid_json"
    yield "json array", "[1,2,3]", "invalid_event"
    yield "huge event_id", json.dumps({"type": "no.such", "event_id": "x" * 900_000}), "invalid_value"
    yield "huge type", json.dumps({"type": "t" * 100_000}), "invalid_value"
    yield "huge unknown key", json.dumps({"type": "input_audio_buffer.clear", "k" * 100_000: 1}), "unknown_parameter"
    yield "over maxMessageBytes", '{"type":"input_audio_buffer.append","audio":"' + "A" * (max_bytes + 8) + '"}', \
        "message_too_large"
    yield "duplicate keys", '{"type":"input_audio_buffer.clear","type":"response.cancel"}', None
    yield "NaN", '{"type":"conversation.item.truncate","item_id":"x","content_index":0,"audio_end_ms":NaN}', \
        "invalid_type"
    yield "bad base64", '{"type":"input_audio_buffer.append","audio":"%%%"}', "invalid_value"
    yield "odd audio bytes", json.dumps({"type": "input_audio_buffer.append",
                                         "audio": base64.b64encode(b"\x01\x02\x03").decode()}), None
    # out of order: things that only make sense later
    yield "cancel before anything", '{"type":"response.cancel"}', "response_cancel_not_active"
    yield "commit empty", '{"type":"input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"
    truncate = '{"type":"conversation.item.truncate","item_id":"item_x","content_index":0,"audio_end_ms":1}'
    yield "truncate unknown", truncate, "item_truncate_invalid_item_id"
    yield "delete twice", '{"type":"conversation.item.delete","item_id":"item_x"}', "item_delete_invalid_item_id"
    for i in range(20):  # random type confusion
        value: object = rng.choice([None, True, 1.5, -1, "", [], {}, "x" * rng.randrange(1, 3000), [[[]]]])
        key = rng.choice(["session", "item", "response", "audio", "item_id", "event_id"])
        etype = rng.choice(["session.update", "conversation.item.create", "response.create",
                            "input_audio_buffer.append", "conversation.item.retrieve"])
        yield f"random {i}", json.dumps({"type": etype, key: value}), None
