"""The OpenAI Realtime WebRTC flow against a real running server, with aiortc as the client.

POST /session -> ek_ secret -> SDP offer (mic track + ``oai-events``) -> POST /v1/realtime/calls -> answer. The
microphone plays speech synthesized at test time (Piper); the server recognises it (pocketsphinx) and answers
with the echo engine (tone-burst TTS), so what is checked went through the real transport and recogniser.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.webrtc.conftest import BARGE_IN, QUESTION, RtcClient, new_secret, speech

pytestmark = pytest.mark.webrtc


async def _spoken_turn(client: RtcClient, text: str = QUESTION) -> dict:
    """Speak ``text`` and wait for the answer to finish playing; returns the response.done event."""
    start = len(client.events)
    client.mic.play(speech(text, lead_s=0.3, tail_s=0.2))
    done = await client.wait_type("response.done", 60, start)
    await client.wait_type("output_audio_buffer.stopped", 30, start)
    return done


async def test_spoken_turn(rtc_server) -> None:
    secret = await new_secret(rtc_server.http)
    assert secret.startswith("ek_")
    client = RtcClient(rtc_server.http)
    try:
        r = await client.connect(secret)
        assert r.headers["content-type"].startswith("application/sdp")
        assert client.call_id and client.call_id.startswith("rtc_") and len(client.call_id) == 36
        assert client.location == f"/v1/realtime/calls/{client.call_id}"
        assert "a=candidate" in r.text and "127.0.0.1" in r.text
        created = await client.wait_type("session.created", 10)
        assert client.events[0] is created  # queued until the channel opened, and first
        async with httpx.AsyncClient(base_url=rtc_server.http) as http:
            listed = (await http.get("/v1/realtime/calls")).json()["data"]
        assert [c["id"] for c in listed] == [client.call_id]
        assert listed[0]["inline_decoding"] is True  # aiortc internals as expected: mic decoded on the loop
        assert listed[0]["jitter_buffer_frames"] == 0  # the microphone is decoded as it arrives, not 80 ms later
        done = await _spoken_turn(client)
        # transcription is asynchronous: it may come after response.done, as on OpenAI
        await client.wait_type("conversation.item.input_audio_transcription.completed", 20)

        types = [e["type"] for e in client.events]
        assert "response.output_audio.delta" not in types  # audio travels on the track only
        user = client.of_type("conversation.item.input_audio_transcription.completed")
        assert user, types
        heard = user[-1]["transcript"].lower()
        assert "capital" in heard and "france" in heard, heard
        assert client.of_type("response.output_audio_transcript.delta")
        answer = client.of_type("response.output_audio_transcript.done")[-1]["transcript"].lower()
        assert answer.startswith("you said") and "capital" in answer, answer
        assert done["response"]["status"] == "completed"
        rid = done["response"]["id"]
        started = client.of_type("output_audio_buffer.started")
        stopped = client.of_type("output_audio_buffer.stopped")
        assert [e["response_id"] for e in started] == [rid] and [e["response_id"] for e in stopped] == [rid]
        assert types.index("response.content_part.added") < types.index("output_audio_buffer.started")
        assert types.index("response.done") < types.index("output_audio_buffer.stopped")
        # The answer's tone bursts arrived on the track, between started and stopped.
        t_start = client.event_times[types.index("output_audio_buffer.started")]
        t_stop = client.event_times[types.index("output_audio_buffer.stopped")]
        loud = client.loud_frames(t_start, t_stop + 0.3)
        assert loud >= 10, f"only {loud} loud frames of answer audio"
        assert max(r for _, r in client.received) > 0.1
        assert client.loud_frames(0, t_start - 0.3) == 0  # silence while idle
    finally:
        await client.close()


async def test_barge_in(make_rtc_server) -> None:
    # Words stream slowly from the echo LLM, so the response is still running when the user speaks again, and the
    # first chunk ("You said:") plays for 1.3 s, so audio is playing when the barge-in clears it.
    srv = make_rtc_server(**{"plugins.voice-call.local.llm": {"type": "echo", "delay": 0.5},
                             "plugins.voice-call.local.tts": {"type": "tone", "wordMs": 600}})
    client = RtcClient(srv.http)
    try:
        await client.connect(await new_secret(srv.http))
        client.mic.play(speech(QUESTION, lead_s=0.3, tail_s=0.2))
        started = await client.wait_type("output_audio_buffer.started", 60)
        await asyncio.sleep(0.4)  # let some answer audio play
        mark = len(client.events)
        t_speech = asyncio.get_running_loop().time()
        client.mic.play(speech(BARGE_IN, lead_s=0.0, tail_s=0.2))
        cleared = await client.wait_type("output_audio_buffer.cleared", 30, mark)
        t_clear = client.event_times[client.events.index(cleared)]
        assert cleared["response_id"] == started["response_id"]
        done = await client.wait_type("response.done", 30, mark)
        assert done["response"]["id"] == started["response_id"]
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        truncated = await client.wait_type("conversation.item.truncated", 10, mark)
        assert 0 < truncated["audio_end_ms"] < 10_000
        assert not [e for e in client.events[mark:] if e["type"] == "output_audio_buffer.stopped"
                    and e["response_id"] == started["response_id"]]
        # The answer audio stops at once: at most 200 ms of it (10 frames: what was in flight and in aiortc's
        # ~80 ms receive buffer) arrives after the clear, and nothing loud after that until the next answer.
        # Counted in frames rather than by the client's clock, which lags when the recogniser (same process, it
        # holds the GIL) is busy with the barge-in speech.
        await asyncio.sleep(0.6)
        nxt = [client.event_times[i] for i, e in enumerate(client.events)
               if e["type"] == "output_audio_buffer.started" and i > mark]
        until = nxt[0] if nxt else float("inf")
        # With false-interruption handling (on by default) the answer pauses at the speech onset and is cleared once
        # words confirm the interruption: it must have been audible when the user started, silent after the clear.
        after = client.loud_frames(t_clear, until)
        before = client.loud_frames(t_speech - 0.5, t_speech)
        last_loud = max(t for t, r in client.received if t < until and r > 0.02)
        print(f"{after} loud frames after output_audio_buffer.cleared, the last {1000 * (last_loud - t_clear):.0f} ms "
              "after it")
        assert before > 0, "the answer was not audible before the barge-in"
        assert after <= 10
        assert last_loud - t_clear < 0.5
        # The second turn is answered normally.
        second = await client.wait_type("conversation.item.input_audio_transcription.completed", 60, mark)
        assert "stop" in second["transcript"].lower() and "talking" in second["transcript"].lower(), second
    finally:
        await client.close()


async def test_client_clears_output_audio(make_rtc_server) -> None:
    srv = make_rtc_server(**{"plugins.voice-call.local.llm": {"type": "echo", "delay": 0.2}})
    client = RtcClient(srv.http)
    try:
        await client.connect(await new_secret(srv.http))
        client.mic.play(speech(QUESTION, lead_s=0.3, tail_s=0.2))
        started = await client.wait_type("output_audio_buffer.started", 60)
        await asyncio.sleep(0.3)
        mark = len(client.events)
        client.send({"type": "response.cancel", "event_id": "c1"})
        client.send({"type": "output_audio_buffer.clear", "event_id": "c2"})
        cleared = await client.wait_type("output_audio_buffer.cleared", 10, mark)
        t_clear = client.event_times[client.events.index(cleared)]
        assert cleared["response_id"] == started["response_id"]
        done = await client.wait_type("response.done", 10, mark)
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        await client.wait_type("conversation.item.truncated", 10, mark)
        await asyncio.sleep(0.5)
        assert client.loud_frames(t_clear) <= 10  # in flight + aiortc's receive buffer (see test_barge_in)
        assert client.loud_frames(t_clear + 0.5) == 0
        assert not client.of_type("error"), client.of_type("error")
    finally:
        await client.close()


async def test_bad_requests(rtc_server) -> None:
    secret = await new_secret(rtc_server.http)
    async with httpx.AsyncClient(base_url=rtc_server.http, timeout=30) as http:
        async def post(body: str, ctype: str = "application/sdp", token: str | None = secret) -> httpx.Response:
            headers = {"Content-Type": ctype}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            return await http.post("/v1/realtime/calls", content=body, headers=headers)

        r = await post("hello")
        assert r.status_code == 400 and "v=0" in r.json()["error"]["message"]
        client = RtcClient(rtc_server.http)
        offer = await client.offer()
        await client.close()
        no_audio = offer.split("m=audio")[0] + "m=application" + offer.split("m=application")[1]
        r = await post(no_audio.replace("BUNDLE 0 1", "BUNDLE 1"))
        assert r.status_code == 400 and "no audio m-line" in r.json()["error"]["message"]
        no_dc = offer.split("m=application")[0]
        r = await post(no_dc.replace("BUNDLE 0 1", "BUNDLE 0"))
        assert r.status_code == 400 and "no data channel" in r.json()["error"]["message"]
        answer_like = offer.replace("a=setup:actpass", "a=setup:active")
        r = await post(answer_like)
        assert r.status_code == 400 and "not an offer" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "invalid_sdp"
        r = await post(offer, ctype="text/plain")
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
        r = await post(offer, token="ek_" + "0" * 32)
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        assert rtc_server.state.sessions.count == 0


async def test_secrets_and_keys(make_rtc_server) -> None:
    srv = make_rtc_server(**{"server.apiKeys": ["sk-test-key"], "server.clientSecretTtlSeconds": 10})
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as http:
        client = RtcClient(srv.http)
        offer = await client.offer()
        await client.close()
        r = await http.post("/v1/realtime/calls", content=offer, headers={"Content-Type": "application/sdp"})
        assert r.status_code == 401 and "Missing credentials" in r.json()["error"]["message"]
        r = await http.post("/v1/realtime/calls", content=offer,
                            headers={"Content-Type": "application/sdp", "Authorization": "Bearer sk-wrong"})
        assert r.status_code == 401 and "Invalid API key" in r.json()["error"]["message"]
    # An expired secret: signed by this server (as /session does), but its 10 s ran out a minute ago.
    live = srv.state.secrets.get(await new_secret(srv.http, api_key="sk-test-key"))
    secret = srv.state.secrets.signer.sign(live.session, 10, "local", now=time.time() - 60).value
    client = RtcClient(srv.http)
    try:
        r = await client.connect(secret, expect=401)
        assert "expired" in r.json()["error"]["message"]
    finally:
        await client.close()
    # The unified interface: multipart sdp + session with the server key; the session config applies.
    client = RtcClient(srv.http)
    try:
        await client.connect("sk-test-key", multipart_session={
            "type": "realtime", "model": "my-model", "instructions": "Be brief.",
            "audio": {"output": {"voice": "cedar"}}})
        created = await client.wait_type("session.created", 10)
        assert created["session"]["model"] == "my-model"
        assert created["session"]["instructions"] == "Be brief."
        assert created["session"]["audio"]["output"]["voice"] == "cedar"
    finally:
        await client.close()
    client = RtcClient(srv.http)
    try:
        r = await client.connect("sk-test-key", multipart_session={"type": "realtime", "temperature": 0.5},
                                 expect=400)
        assert r.json()["error"]["param"] == "session.temperature"
    finally:
        await client.close()
    assert srv.state.sessions.count == 0


async def test_hangup_releases_the_slot(make_rtc_server) -> None:
    srv = make_rtc_server(**{"server.maxSessions": 1})
    secret = await new_secret(srv.http)
    first = RtcClient(srv.http)
    second = RtcClient(srv.http)
    try:
        await first.connect(secret)
        await first.wait_type("session.created", 10)
        assert srv.state.sessions.count == 1
        r = await second.connect(secret, expect=503)
        assert r.json()["error"]["code"] == "session_limit_reached"
        async with httpx.AsyncClient(base_url=srv.http, timeout=30) as http:
            url = f"/v1/realtime/calls/{first.call_id}/hangup"
            other = await new_secret(srv.http)
            r = await http.post(url, headers={"Authorization": f"Bearer {other}"})
            assert r.status_code == 403
            r = await http.post(url, headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 200, r.text
            assert srv.state.sessions.count == 0
            # Hanging up an ended call again is done, not an error (a browser's disconnect() closes the peer
            # connection and posts the hang-up at once; either may arrive first) — still only with its own secret.
            r = await http.post(url, headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 200 and r.json() == {}, r.text
            r = await http.post(url, headers={"Authorization": f"Bearer {other}"})
            assert r.status_code == 403
            r = await http.post("/v1/realtime/calls/rtc_0123456789abcdef/hangup",
                                headers={"Authorization": f"Bearer {secret}"})
            assert r.status_code == 404 and r.json()["error"]["code"] == "call_not_found"
        # The data channel closes on the client side too.
        for _ in range(50):
            if first.dc.readyState == "closed":
                break
            await asyncio.sleep(0.1)
        assert first.dc.readyState == "closed"
        third = RtcClient(srv.http)
        try:
            await third.connect(secret)
            await third.wait_type("session.created", 10)
        finally:
            await third.close()
    finally:
        await first.close()
        await second.close()


async def test_vanished_client_is_cleaned_up(make_rtc_server) -> None:
    srv = make_rtc_server()
    client = RtcClient(srv.http)
    await client.connect(await new_secret(srv.http))
    await client.wait_type("session.created", 10)
    assert srv.state.sessions.count == 1
    await client.close()  # the peer closes: DTLS close_notify / SCTP abort reach the server
    for _ in range(100):
        if srv.state.sessions.count == 0:
            break
        await asyncio.sleep(0.1)
    assert srv.state.sessions.count == 0
    assert len(srv.state.webrtc_calls) == 0
    # A client that posts an offer but never connects is dropped when its data channel does not open.
    srv2 = make_rtc_server(**{"server.maxSessions": 2})
    ghost = RtcClient(srv2.http)
    offer = await ghost.offer()
    async with httpx.AsyncClient(base_url=srv2.http, timeout=30) as http:
        r = await http.post("/v1/realtime/calls", content=offer, headers={"Content-Type": "application/sdp"})
    assert r.status_code == 201
    await ghost.close()  # never applies the answer
    assert srv2.state.sessions.count == 1
    call = next(iter(srv2.state.webrtc_calls))
    call.peer.open_timeout = 0.5  # instead of 20 s
    for _ in range(50):
        if srv2.state.sessions.count == 0:
            break
        await asyncio.sleep(0.1)
    assert srv2.state.sessions.count == 0
    assert "did not open" in call.peer.close_reason


async def test_data_channel_validation_and_history(make_rtc_server) -> None:
    srv = make_rtc_server(**{"server.maxMessageBytes": 1024})
    client = RtcClient(srv.http)
    try:
        await client.connect(await new_secret(srv.http))
        await client.wait_type("session.created", 10)
        client.dc.send("{not json")
        bad = await client.wait_type("error", 10)
        assert bad["error"]["type"] == "invalid_request_error"
        mark = len(client.events)
        client.send({"type": "session.update", "event_id": "big", "session": {"type": "realtime",
                                                                              "instructions": "x" * 2000}})
        big = await client.wait_type("error", 10, mark)
        assert big["error"]["code"] == "message_too_large", big
        mark = len(client.events)
        client.send({"type": "conversation.item.create", "event_id": "t1", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}})
        client.send({"type": "response.create", "event_id": "t2"})
        done = await client.wait_type("response.done", 30, mark)
        assert done["response"]["status"] == "completed"
        await client.wait_type("output_audio_buffer.stopped", 30, mark)
        assert not [e for e in client.events[mark:] if e["type"] == "error"]
    finally:
        await client.close()
    for _ in range(50):
        if srv.state.sessions.count == 0:
            break
        await asyncio.sleep(0.1)
    # The call was recorded in the history with its transport.
    async with httpx.AsyncClient(base_url=srv.http, timeout=30) as http:
        convs = (await http.get("/api/conversations")).json()["data"]
        assert convs and convs[0]["transport"] == "webrtc", convs
        conv = (await http.get(f"/api/conversations/{convs[0]['id']}")).json()
        texts = " ".join(str(i.get("text") or "") for i in conv["items"]).lower()
        assert "hello there" in texts and "you said" in texts, conv["items"]


async def test_session_time_limit(make_rtc_server) -> None:
    srv = make_rtc_server(**{"server.maxSessionSeconds": 1.5})
    client = RtcClient(srv.http)
    try:
        await client.connect(await new_secret(srv.http))
        err = await client.wait_type("error", 10)
        assert err["error"]["code"] == "session_expired"
        for _ in range(50):
            if srv.state.sessions.count == 0 and client.dc.readyState == "closed":
                break
            await asyncio.sleep(0.1)
        assert srv.state.sessions.count == 0
        assert client.dc.readyState == "closed"
    finally:
        await client.close()


async def test_g711_call(rtc_server) -> None:
    """An offer with only PCMU (as apps that force G.711 do): 8 kHz both ways, still a complete turn."""
    from aiortc import RTCRtpSender

    client = RtcClient(rtc_server.http)
    try:
        pcmu = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/PCMU"]
        for t in client.pc.getTransceivers():
            if t.kind == "audio":
                t.setCodecPreferences(pcmu)
        r = await client.connect(await new_secret(rtc_server.http))
        assert "PCMU/8000" in r.text and "opus" not in r.text.lower()
        done = await _spoken_turn(client)
        assert done["response"]["status"] == "completed"
        # transcription is asynchronous: it may come after response.done, as on OpenAI
        heard = (await client.wait_type("conversation.item.input_audio_transcription.completed", 20))["transcript"].lower()
        assert heard.startswith("what"), heard  # narrowband audio: the 16 kHz recogniser gets the gist only
        assert client.loud_frames() >= 10
    finally:
        await client.close()
