"""The gateway in front of voicecall's own local engine (a real realtime server, not a stub): spoken turns through
the WebSocket relay with the official SDK, and a WebRTC call through the SDP proxy with its sideband recording.

Speech is synthesized at test time by the project's TTS (Piper) and recognised upstream by pocketsphinx, so the
words checked went through the gateway and the real pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import netns_required, speech_pcm
from tests.gateway.gwtools import GATEWAY_KEY, LEAK_KEY, conversations, sdk_client, start_local_upstream, wait_until

QUESTION = "What is the capital of France?"


def words(text: str) -> set[str]:
    return {w.strip(".,!?;:'\"").lower() for w in text.split()}


async def spoken_turn(conn: Any, text: str = QUESTION, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Manual turn: append the speech in 100 ms chunks, commit, ask for a response; events up to response.done
    (and the input transcription)."""
    pcm = speech_pcm(text, lead_s=0.3, tail_s=0.5)
    for i in range(0, len(pcm), 2400):
        await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i:i + 2400].tobytes()).decode())
    await conn.input_audio_buffer.commit()
    await conn.response.create()
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def have(t: str) -> bool:
        return any(e["type"] == t for e in events)

    while not (have("response.done") and have("conversation.item.input_audio_transcription.completed")):
        events.append(json.loads(await asyncio.wait_for(conn.recv_bytes(), max(0.1, deadline - loop.time()))))
    return events


def check_turn(events: list[dict[str, Any]], expect_echo: bool) -> None:
    by = {e["type"]: e for e in events}
    heard = by["conversation.item.input_audio_transcription.completed"]["transcript"]
    assert {"capital", "france"} <= words(heard), heard
    done = by["response.done"]["response"]
    assert done["status"] == "completed", done
    answer = by["response.output_audio_transcript.done"]["transcript"]
    assert answer.strip()
    if expect_echo:
        assert answer.lower().startswith("you said") and "capital" in answer.lower(), answer
    audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
    pcm = np.frombuffer(audio, dtype="<i2")
    assert len(pcm) > 24000 * 0.3 and np.abs(pcm).max() > 1000  # an audible answer came back


async def _turn_through_gateway(gw: Any, expect_echo: bool) -> None:
    async with sdk_client(gw).realtime.connect(model="gpt-realtime") as conn:
        created = json.loads(await asyncio.wait_for(conn.recv_bytes(), 30))
        assert created["type"] == "session.created"
        assert created["session"]["instructions"] == "You are the gateway's assistant."
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "turn_detection": None, "transcription": {"model": "gpt-4o-mini-transcribe"}}}})
        updated = json.loads(await asyncio.wait_for(conn.recv_bytes(), 30))
        assert updated["type"] == "session.updated", updated
        check_turn(await spoken_turn(conn), expect_echo)


async def test_sdk_spoken_turn_through_relay(make_gateway, local_upstream) -> None:
    gw = make_gateway(f"{local_upstream.http}/v1")
    await _turn_through_gateway(gw, expect_echo=True)
    assert await wait_until(lambda: gw.state.sessions.count == 0)
    convs = await conversations(gw)
    assert len(convs) == 1 and convs[0]["transport"] == "relay"
    texts = [i["text"] or "" for i in convs[0]["items"]]
    assert any("capital" in t.lower() for t in texts), texts
    # the upstream engine saw one session from the gateway, authenticated with the server key
    upstream_convs = await conversations(local_upstream, api_key=LEAK_KEY)
    assert upstream_convs and upstream_convs[0]["model"] == "gpt-realtime"


async def test_sdk_spoken_turn_with_the_embedded_stack(make_gateway, tmp_path: Path) -> None:
    """The real default stack upstream (Silero VAD, pocketsphinx, the embedded LLM, Piper)."""
    upstream = start_local_upstream(tmp_path, stack={})
    try:
        gw = make_gateway(f"{upstream.http}/v1")
        await _turn_through_gateway(gw, expect_echo=False)
    finally:
        upstream.stop()


# ------------------------------------------------------------------------------------------ WebRTC
@pytest.mark.webrtc
async def test_aiortc_call_through_the_sdp_proxy(make_gateway, local_upstream) -> None:
    """POST /session -> ek_ -> POST /v1/realtime/calls on the gateway -> the local engine's answer; media flows
    straight to the engine; the gateway's sideband records the turn."""
    netns_required()
    from tests.webrtc.conftest import RtcClient, new_secret, speech

    gw = make_gateway(f"{local_upstream.http}/v1")
    secret = await new_secret(gw.http, GATEWAY_KEY)
    client = RtcClient(gw.http)
    try:
        r = await client.connect(secret)
        assert "127.0.0.1" in r.text  # the engine's ICE candidate: media goes to it, not through the gateway
        assert client.call_id in local_upstream.state.webrtc_calls._calls
        created = await client.wait_type("session.created", 10)
        assert created["session"]["instructions"] == "You are the gateway's assistant."
        await wait_until(lambda: client.call_id in _gateway_calls(gw), timeout=5)
        call = _gateway_calls(gw)[client.call_id]
        assert await wait_until(lambda: call.joined, timeout=10)
        start = len(client.events)
        client.mic.play(speech(QUESTION, lead_s=0.3, tail_s=0.3))
        done = await client.wait_type("response.done", 60, start)
        assert done["response"]["status"] == "completed"
        # transcription is asynchronous: it may come after response.done, as on OpenAI
        heard = (await client.wait_type("conversation.item.input_audio_transcription.completed", 20, start))["transcript"]
        assert {"capital", "france"} <= words(heard), heard
        await client.wait_type("output_audio_buffer.stopped", 30, start)
        assert client.loud_frames() > 5  # the answer was heard on the media track
        assert await wait_until(lambda: call.responses >= 1, timeout=10)
        assert gw.state.sessions.count == 1
    finally:
        await client.close()
    # the engine ends the call when the peer goes; the sideband sees it and frees the slot
    assert await wait_until(lambda: gw.state.sessions.count == 0, timeout=45)
    convs = await conversations(gw)
    assert len(convs) == 1 and convs[0]["transport"] == "sideband"
    texts = " ".join((i["text"] or "") for i in convs[0]["items"]).lower()
    assert "capital" in texts and "you said" in texts, convs[0]["items"]
    assert convs[0]["responses"] and convs[0]["responses"][0]["status"] == "completed"


@pytest.mark.webrtc
async def test_sideband_hangs_up_a_long_call(make_gateway, tmp_path: Path) -> None:
    netns_required()
    from tests.webrtc.conftest import RtcClient, new_secret

    upstream = start_local_upstream(tmp_path)
    try:
        gw = make_gateway(f"{upstream.http}/v1", **{"server.maxSessionSeconds": 2.0})
        client = RtcClient(gw.http)
        try:
            await client.connect(await new_secret(gw.http, GATEWAY_KEY))
            await client.wait_type("session.created", 10)
            assert await wait_until(lambda: gw.state.sessions.count == 0, timeout=10)
            # the engine's call was hung up (by the gateway's POST .../hangup)
            assert await wait_until(lambda: len(upstream.state.webrtc_calls) == 0, timeout=10)
        finally:
            await client.close()
    finally:
        upstream.stop()


def _gateway_calls(gw: Any) -> dict[str, Any]:
    from voicecall.gateway.upstream import gateway_state

    return gateway_state(gw.state).calls
