"""``audio.input.noise_reduction`` through session.update (official openai SDK): on, a noisy spoken turn, off."""

from __future__ import annotations

from tests.conftest import ServerThread, speech_pcm
from tests.engine.sdk_helpers import append_pcm, client_for, collect_until, of_type, recv_json, words


async def test_noise_reduction_on_and_off_through_session_update(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await recv_json(conn)
        assert created["session"]["audio"]["input"]["noise_reduction"] is None  # off by default
        await conn.session.update(session={"type": "realtime", "audio": {"input": {
            "noise_reduction": {"type": "near_field"}, "transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "create_response": False}}}})
        ev = await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"))
        assert ev[-1]["session"]["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
        # -36 dBFS hiss under the speech: RNNoise takes it out before the VAD and the recogniser
        await append_pcm(conn, speech_pcm("What is the capital of France?", lead_s=0.6, tail_s=1.2, noise=500))
        done = await collect_until(conn, lambda e: e["type"] in (
            "conversation.item.input_audio_transcription.completed", "error"))
        assert done[-1]["type"] != "error", done[-1]
        assert {"capital", "france"} <= words(done[-1]["transcript"]), done[-1]["transcript"]
        assert len(of_type(done, "input_audio_buffer.speech_started")) == 1  # the noise alone never opened a turn
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"noise_reduction": None}}})
        ev = await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"))
        assert ev[-1]["session"]["audio"]["input"]["noise_reduction"] is None
        await conn.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "noise_reduction": {"type": "studio"}}}}})
        ev = await collect_until(conn, lambda e: e["type"] in ("session.updated", "error"))
        assert ev[-1]["type"] == "error" and ev[-1]["error"]["param"] == "session.audio.input.noise_reduction.type"
