"""The relay's hot path: audio events recognised from their bytes (voicecall.protocol.peek) and forwarded without
a parse, every other shape of the same event (other key order, whitespace, escapes, duplicate keys) left to the
full-parse path, and both paths giving the same result through a real relay: frames upstream verbatim and in
order, the echoed audio back, history with the right audio lengths. Also the relay over plain ASGI (a server
without voicecall's frame extension)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest

from tests.gateway.gwtools import conversations, wait_until
from tests.gateway.test_gateway_relay import raw_connect, recv_event
from tests.gateway.upstream_recorder import UpstreamRecorder
from voicecall.protocol.peek import DeltaIds, b64_bytes, delta_ids, peek_append, peek_audio_delta, unique_keys

AUDIO = base64.b64encode(bytes(range(256)) * 3).decode()  # holds "/" and "+", ends without padding
assert "/" in AUDIO


def fill(frame: str, audio: str = AUDIO) -> bytes:
    """``frame`` with its ``%s`` replaced by ``audio``, as bytes."""
    return frame.replace("%s", audio).encode()


# ------------------------------------------------------------------------------------------ the peek itself
@pytest.mark.parametrize("frame", [
    '{"type":"input_audio_buffer.append","audio":"%s"}',
    '{"type": "input_audio_buffer.append", "audio": "%s"}',
    '{"type":"input_audio_buffer.append","audio":"%s","event_id":"evt_1"}',
    '{"type": "input_audio_buffer.append", "audio": "%s", "event_id": "evt_1"}\n',
])
def test_usual_appends_are_recognised(frame: str) -> None:
    data = fill(frame)
    hit = peek_append(data)
    assert hit is not None
    assert data[hit[0]:hit[1]].decode() == AUDIO
    assert b64_bytes(data, *hit) == len(base64.b64decode(AUDIO))


@pytest.mark.parametrize("frame", [
    '{"audio":"%s","type":"input_audio_buffer.append"}',  # key order
    '{ "type" : "input_audio_buffer.append" , "audio" : "%s" }',  # whitespace
    '{"event_id":"e","type":"input_audio_buffer.append","audio":"%s"}',  # event_id first
    '{"type":"input_audio_buffer.appen\\u0064","audio":"%s"}',  # an escaped type: the same event
])
def test_odd_but_valid_appends_go_to_the_full_parse(frame: str) -> None:
    data = fill(frame)
    assert json.loads(data)["type"] == "input_audio_buffer.append"  # valid, and an append
    assert peek_append(data) is None  # not recognised: parsed by the slow path, never mis-read


@pytest.mark.parametrize("frame", [
    '{"type":"input_audio_buffer.append","audio":"%s","type":"session.update","session":{}}',  # duplicate key
    '{"type":"input_audio_buffer.append","audio":"%s","event_id":"x"',  # truncated
    '{"type":"input_audio_buffer.append","audio":"%s"}{"type":"session.update"}',  # two objects
    '{"type":"input_audio_buffer.append","audio":"%s\\",\\"type\\":\\"x"}',  # an escape inside the audio
    '{"type":"input_audio_buffer.append_more","audio":"%s"}',
])
def test_not_plain_appends_are_not_recognised(frame: str) -> None:
    assert peek_append(fill(frame)) is None


@pytest.mark.parametrize("tail", ['"event_id":"evt with spaces"', '"event_id":{"nested":1}'])
def test_an_unusual_but_valid_tail_is_parsed_and_accepted(tail: str) -> None:
    """Still exactly one append (no duplicate key): forwarded as it is, as the full-parse path would."""
    assert peek_append(fill('{"type":"input_audio_buffer.append","audio":"%s",' + tail + "}")) is not None


@pytest.mark.parametrize("frame", [
    ('{"type":"response.output_audio.delta","event_id":"e1","response_id":"resp_1","item_id":"item_1",'
     '"output_index":0,"content_index":0,"delta":"%s"}'),
    ('{"type": "response.output_audio.delta", "event_id": "e1", "response_id": "resp_1", "item_id": "item_1", '
     '"output_index": 0, "content_index": 0, "delta": "%s"}'),
    '{"type":"response.output_audio.delta","delta":"%s","response_id":"resp_1","item_id":"item_1"}',  # ids after
])
def test_audio_deltas_are_recognised_with_their_ids(frame: str) -> None:
    data = fill(frame)
    hit = peek_audio_delta(data)
    assert hit is not None and data[hit[0]:hit[1]].decode() == AUDIO
    assert delta_ids(data, hit[0]) == ("resp_1", "item_1")


def test_delta_ids_of_a_stream_of_deltas_follow_each_item() -> None:
    """The relay confirms the ids of an item's next delta with two finds; another item, another response, an id in
    another form or a delta without ids are read again."""
    ids = DeltaIds()
    same = fill('{"type":"response.output_audio.delta","event_id":"e1","response_id":"resp_1","item_id":"item_1",'
                '"output_index":0,"content_index":0,"delta":"%s"}')
    for data, want in ((same, ("resp_1", "item_1")), (same, ("resp_1", "item_1")),
                       (same.replace(b"item_1", b"item_12"), ("resp_1", "item_12")),  # a longer id, same prefix
                       (same.replace(b"resp_1", b"resp_2"), ("resp_2", "item_1")),
                       (same.replace(b'"item_id":"item_1",', b""), ("resp_1", None)),
                       (same, ("resp_1", "item_1")),
                       (fill('{"type": "response.output_audio.delta", "response_id": "resp_3", "item_id": "item_3", '
                             '"delta": "%s"}'), ("resp_3", "item_3"))):
        hit = peek_audio_delta(data)
        assert hit is not None and ids.of(data, hit[0]) == want == delta_ids(data, hit[0]), data[:120]


def test_the_compact_append_fast_path_agrees_with_the_general_one() -> None:
    for frame in ('{"type":"input_audio_buffer.append","audio":"%s"}',
                  '{"type":"input_audio_buffer.append","audio":"%s","event_id":"e_1"}',
                  '{"type":"input_audio_buffer.append","audio":"%s"} ',
                  '{"type":"input_audio_buffer.append","audio":"%s","audio":"AAAA"}',  # duplicate key: parsed, refused
                  '{"type":"input_audio_buffer.append","audio":"%s"}}',
                  '{"type":"input_audio_buffer.append","audio":"%s\\"}'):
        data = fill(frame)
        hit = peek_append(data)
        if frame.endswith(('"%s"}', '"e_1"}', '} ')):
            assert hit is not None and data[hit[0]:hit[1]].decode() == AUDIO, frame
            assert b64_bytes(data, *hit) == len(base64.b64decode(AUDIO))
        else:
            assert hit is None, frame


@pytest.mark.parametrize(("tail", "recognised"), [
    ('","event_id":"evt_1"}', True),  # what the fast check takes
    ('","event_id":""}', True),
    ('","event_id":"' + "a" * 128 + '"}', True),
    ('","event_id":"' + "a" * 129 + '"}', True),  # longer than the fast check takes: parsed, accepted
    ('","event_id":"e 1"}', True),  # a space: parsed, accepted
    ('","event_id":"e\\\\"}', True),  # an escaped backslash: parsed, accepted
    ('","event_id":"e\\"}', False),  # an escaped quote: not JSON
    ('","event_id":"a","event_id":"b"}', False),  # a repeated key: refused
    ('","event_id":"a","type":"session.update"}', False),
    ('","event_id":"a"}}', False),
    ('","event_id":"a"} ', True),
    ('","event_id":"a"', False),
])
def test_append_event_id_tails(tail: str, recognised: bool) -> None:
    """An append's ``event_id`` tail: the usual one is taken without the pattern, every other goes the general way
    and gets the same answer a parser refusing repeated keys gives."""
    data = ('{"type":"input_audio_buffer.append","audio":"' + AUDIO + tail).encode()
    hit = peek_append(data)
    assert (hit is not None) == recognised
    if hit is not None:
        assert data[hit[0]:hit[1]].decode() == AUDIO
        assert json.loads(data, object_pairs_hook=unique_keys)["type"] == "input_audio_buffer.append"


def test_other_server_events_are_not_deltas() -> None:
    for frame in ('{"type":"response.output_audio_transcript.delta","delta":"hi"}',
                  '{"delta":"AAAA","type":"response.output_audio.delta"}',
                  '{"type":"response.output_audio.delta","delta":"AA\\/A"}'):
        assert peek_audio_delta(frame.encode()) is None


# ------------------------------------------------------------------------------------------ through the relay
def _chunks(n: int) -> list[str]:
    rng = np.random.default_rng(5)
    pcm = rng.normal(0, 3000, 2400 * n).astype("<i2")  # 100 ms each at 24 kHz
    return [base64.b64encode(pcm[i * 2400:(i + 1) * 2400].tobytes()).decode() for i in range(n)]


def _shapes(chunks: list[str]) -> list[str]:
    """One append per shape: the recognised ones and the odd-but-valid ones."""
    c = chunks
    return [
        '{"type":"input_audio_buffer.append","audio":"%s"}'.replace("%s", c[0]),
        json.dumps({"type": "input_audio_buffer.append", "audio": c[1]}),
        '{"type":"input_audio_buffer.append","audio":"%s","event_id":"evt_2"}'.replace("%s", c[2]),
        '{"audio":"%s","type":"input_audio_buffer.append"}'.replace("%s", c[3]),
        '{ "type" : "input_audio_buffer.append" ,\n "audio" : "%s" }'.replace("%s", c[4]),
        '{"event_id":"evt_5","type":"input_audio_buffer.append","audio":"%s"}'.replace("%s", c[5]),
        '{"type":"input_audio_buffer.append","audio":"%s"}'.replace("%s", c[6]).replace("/", "\\/"),
        '{"type":"input_audio_buffer.appen\\u0064","audio":"%s"}'.replace("%s", c[7]),
        '{"type":"input_audio_buffer.append","audio":"%s"}'.replace("%s", c[8]),
    ]


@pytest.mark.parametrize("server", ["frames", "asgi"])
async def test_every_shape_is_forwarded_in_order_and_recorded(make_gateway, upstream: UpstreamRecorder,
                                                               server: str) -> None:
    """9 appends of 100 ms in nine shapes: upstream gets each frame verbatim and in order, the echo comes back
    whole, and history holds 900 ms of user audio and 900 ms of answer audio. ``asgi``: the same relay on
    uvicorn's own WebSocket protocol (no frame extension: one reader task, one writer task)."""
    gw = make_gateway(upstream.base_url, ws=None if server == "frames" else "websockets-sansio")
    chunks = _chunks(9)
    frames = _shapes(chunks)
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        for frame in frames:
            await ws.send(frame)
        await ws.send('{"type":"input_audio_buffer.commit"}')
        await ws.send('{"type":"response.create"}')
        events = []
        while not events or events[-1]["type"] != "response.done":
            events.append(await recv_event(ws))
    sent = [t for _, t in upstream.frames]
    assert [t for t in sent if "input_audio_buffer.appen" in t] == frames
    echoed = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    assert echoed == b"".join(base64.b64decode(c) for c in chunks)
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    [conv] = await conversations(gw)
    audio = {i["role"]: i["audio_ms"] for i in conv["items"]}
    assert audio == {"user": 900, "assistant": 900}
    assert (gw.guard.frame_messages > 0) == (server == "frames")


async def test_history_audio_of_several_turns_with_many_deltas_each(make_gateway, upstream: UpstreamRecorder) -> None:
    """Two turns, compact deltas of 200 ms (the relay adds an item's deltas up itself and hands the recorder the sum
    before any other event): every item's audio length in the history is exact."""
    upstream.compact_deltas, upstream.delta_seconds = True, 0.2
    gw = make_gateway(upstream.base_url)
    chunks = _chunks(12)
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        for turn in (chunks[:7], chunks[7:]):
            for chunk in turn:
                await ws.send('{"type":"input_audio_buffer.append","audio":"' + chunk + '","event_id":"e_1"}')
            await ws.send('{"type":"input_audio_buffer.commit"}')
            await ws.send('{"type":"response.create"}')
            deltas = 0
            while (event := await recv_event(ws))["type"] != "response.done":
                deltas += event["type"] == "response.output_audio.delta"
            assert deltas == (4 if len(turn) == 7 else 3)
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    [conv] = await conversations(gw)
    audio = sorted((i["role"], i["audio_ms"]) for i in conv["items"])  # (the stand-in gives no previous_item_id)
    assert audio == [("assistant", 500), ("assistant", 700), ("user", 500), ("user", 700)]


async def test_many_appends_keep_their_order(make_gateway, upstream: UpstreamRecorder) -> None:
    """500 appends sent back to back (faster than real time) arrive upstream complete and in order."""
    gw = make_gateway(upstream.base_url)
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        await asyncio.gather(*(ws.send('{"type":"input_audio_buffer.append","audio":"AAAA","event_id":"e'
                                       + str(i) + '"}') for i in range(500)))
        assert await wait_until(lambda: sum('"e499"' in t for _, t in upstream.frames) == 1)
    ids = [json.loads(t)["event_id"] for _, t in upstream.frames if "input_audio_buffer.append" in t]
    assert ids == [f"e{i}" for i in range(500)]


# ------------------------------------------------------------------------------------------ frame-level parsing
def test_split_frames_takes_whole_data_frames_and_leaves_the_rest_to_the_full_parser() -> None:
    from voicecall.transports.frames import MaskKeys, encode_frame, split_frames

    keys = MaskKeys()
    text = encode_frame(b'{"type":"x"}', True, keys.next())
    binary = encode_frame(b"\x00\x01" * 200, False, keys.next())  # 16-bit length
    ping = bytes([0x89, 0x80]) + keys.next()  # masked ping, empty
    fragment = bytes([0x01, 0x83]) + b"\x00\x00\x00\x00abc"  # text, not final
    stream = text + ping + binary + fragment + text[:5]
    frames, used = split_frames(stream, True, None)
    assert [(op, start) for op, _, start in frames] == [
        (1, 0), (0, len(text)), (2, len(text) + len(ping)), (0, len(text) + len(ping) + len(binary))]
    assert frames[0][1] == b'{"type":"x"}' and frames[2][1] == b"\x00\x01" * 200
    assert frames[1][1] == ping and frames[3][1] == fragment
    assert used == len(stream) - 5  # the partial frame waits for more bytes
    assert split_frames(text, False, None)[0][0][0] == 0  # masked from a server: the full parser refuses it
    assert split_frames(text, True, 4)[0] == [(-1, text, 0)]  # over max_size: the full parser refuses it


def test_mask_keys_frame_is_encode_frame_with_the_next_key() -> None:
    from voicecall.transports.frames import MaskKeys, apply_mask, encode_frame, split_frames

    keys, seen = MaskKeys(), set()
    sizes = ((b"x" * 300, True), (b"\x00" * 70000, False), (b"short", True), (b"y" * 125, True), (b"z" * 126, False),
             (b"w" * 65535, True), (b"v" * 65536, True))
    for data, text in sizes * 100:  # pool refilled
        framed = keys.frame(data, text)
        head = 2 if len(data) < 126 else 4 if len(data) < 65536 else 10
        key = framed[head:head + 4]
        seen.add(key)
        assert framed == encode_frame(data, text, key)
        frames, used = split_frames(framed, True, None)
        assert used == len(framed) and frames[0][:2] == (1 if text else 2, data)
        assert apply_mask(framed[head + 4:], key) == data
    assert len(seen) > 650  # a fresh key per frame (700 frames, 32-bit keys)


async def test_fragments_and_pings_through_the_fast_path(make_gateway, upstream: UpstreamRecorder) -> None:
    """A fragmented message and pings between data frames: the frame-level parser hands them to websockets whole,
    and the relay still forwards the whole message, in order."""
    gw = make_gateway(upstream.base_url)
    async with raw_connect(gw) as ws:
        assert (await recv_event(ws))["type"] == "session.created"
        await ws.send('{"type":"input_audio_buffer.append","audio":"AAAA","event_id":"a1"}')
        await ws.ping()
        await ws.send(iter(['{"type":"input_audio_buffer.append",', '"audio":"BBBB",', '"event_id":"a2"}']))
        await ws.send('{"type":"input_audio_buffer.append","audio":"CCCC","event_id":"a3"}')
        assert await wait_until(lambda: any('"a3"' in t for _, t in upstream.frames))
    appends = [json.loads(t) for _, t in upstream.frames if "input_audio_buffer.append" in t]
    assert [(a["event_id"], a["audio"]) for a in appends] == [("a1", "AAAA"), ("a2", "BBBB"), ("a3", "CCCC")]
