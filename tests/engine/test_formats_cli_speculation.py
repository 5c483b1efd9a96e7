"""G.711 audio, speculative answers, and the `voicecall` CLI against a real server."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import ServerThread, speech_pcm
from tests.engine.sdk_helpers import append_pcm, client_for, collect_until, index_of, of_type, recv_json, words
from voicecall.audio import read_wav, resample, ulaw_decode, ulaw_encode, write_wav

VOICECALL = [sys.executable, "-m", "voicecall.cli"]


async def test_pcmu_in_and_out(local_server: ServerThread) -> None:
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcmu"}}}})
        ev = await collect_until(conn, lambda e: e["type"] == "session.updated")
        assert ev[-1]["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        pcm8 = resample(speech_pcm("What is the capital of France?", tail_s=0.3), 24000, 8000)
        mulaw = ulaw_encode(pcm8)
        for i in range(0, len(mulaw), 800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(mulaw[i:i + 800]).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        assert events[-1]["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        data = b"".join(base64.b64decode(e["delta"]) for e in of_type(events, "response.output_audio.delta"))
        answer = ulaw_decode(data)
        assert len(answer) > 8000 * 0.3 and np.abs(answer).max() > 1000  # 8 kHz μ-law, audible
        committed = of_type(events, "conversation.item.added")[0]["item"]
        assert committed["role"] == "user"


async def _transcribed_server_vad(conn: Any, silence_ms: int) -> None:
    """server_vad with ``silence_ms`` of end-of-turn silence, and the user's turns transcribed."""
    await conn.session.update(session={"type": "realtime", "audio": {"input": {
        "transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}})


async def test_pause_and_resume_gives_one_answer_with_the_whole_turn(local_server: ServerThread) -> None:
    """A 350 ms pause starts a speculative answer; speaking on must discard it without a trace."""
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        await _transcribed_server_vad(conn, silence_ms=700)
        # Each half is a phrase Whisper hears on its own (a spliced "of France?" alone is sometimes "A friend?"),
        # so the transcript shows whether both halves made it into the one turn.
        first = speech_pcm("Tell me", lead_s=0.4, tail_s=0.35)
        second = speech_pcm("the capital of France.", lead_s=0.0, tail_s=1.2)
        await append_pcm(conn, np.concatenate([first, second]))
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
        if not of_type(events, "conversation.item.input_audio_transcription.completed"):
            await collect_until(conn, lambda e: e["type"] == "conversation.item.input_audio_transcription.completed",
                                into=events, timeout=20)
    assert len(of_type(events, "input_audio_buffer.speech_stopped")) == 1
    assert len(of_type(events, "response.created")) == 1
    assert index_of(events, "response.created") > index_of(events, "input_audio_buffer.speech_stopped")
    heard = of_type(events, "conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert {"tell", "capital"} <= words(heard), heard


async def test_a_speculative_answer_answers_the_question_as_transcribed(local_server: ServerThread) -> None:
    """The held answer starts on the recogniser's words of the pause with their question mark (a partial leaves it
    out), so it is the answer the final transcript gets: primed with the restated question. Unprimed, SmolLM2
    answers "What is the capital of Italy" with "Italy is a country in Europe."."""
    client = client_for(local_server.http)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await recv_json(conn)
        # a long end-of-turn window: the pause's decode is in long before the decision, however busy the machine
        await _transcribed_server_vad(conn, silence_ms=800)
        await append_pcm(conn, speech_pcm("What is the capital of Italy?", lead_s=0.4, tail_s=1.5), pace=0.1)
        events = await collect_until(conn, lambda e: e["type"] == "response.done")
    done = of_type(events, "response.done")[-1]["response"]
    assert done["x_voicecall"]["latency_ms"].get("speculative") == 1.0, done["x_voicecall"]
    answer = of_type(events, "response.output_audio_transcript.done")[0]["transcript"]
    assert answer.startswith("The capital of Italy") and "rome" in words(answer), answer


def test_cli_help_everywhere() -> None:
    for args in ([], ["serve"], ["talk"], ["bench"], ["bench", "latency"], ["bench", "sessions"], ["history"]):
        out = subprocess.run([*VOICECALL, *args, "--help"], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, (args, out.stderr)
        assert "usage:" in out.stdout


def test_cli_serve_rejects_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("plugins:\n  voice-call:\n    provider: openai-realtime\n    openaiRealtime:\n"
                   "      apiKey: sk-test\n      voice: bogus\n")
    out = subprocess.run([*VOICECALL, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2
    assert "openaiRealtime.voice" in out.stderr and "bogus" in out.stderr and "sk-test" not in out.stderr


def test_cli_talk(local_server: ServerThread, tmp_path: Path) -> None:
    question = tmp_path / "q.wav"
    write_wav(question, speech_pcm("What is the capital of France?", rate=16000, lead_s=0.3, tail_s=0.3), 16000)
    reply = tmp_path / "reply.wav"
    out = subprocess.run([*VOICECALL, "talk", str(question), "--url", local_server.ws, "--out", str(reply)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "capital" in out.stdout and "france" in out.stdout.lower()
    pcm, rate = read_wav(reply)
    assert rate == 24000 and len(pcm) > 24000 * 0.3 and np.abs(pcm).max() > 1000
