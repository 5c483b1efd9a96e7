"""``voicecall talk``: one recorded user turn against a running server, the spoken reply saved."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from voicecall.audio import ENGINE_RATE, read_wav, resample, write_wav


@dataclass
class TalkResult:
    user_transcript: str = ""
    answer_transcript: str = ""
    audio: list[bytes] = field(default_factory=list)
    first_audio_ms: float | None = None
    events: list[str] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return sum(len(a) for a in self.audio) / 2 / ENGINE_RATE


async def talk(path: str | Path, *, url: str, out: str | Path | None = None, api_key: str | None = None,
               voice: str | None = None, instructions: str | None = None, realtime: bool = False,
               timeout: float = 60.0) -> TalkResult:
    pcm, rate = read_wav(path)
    pcm = resample(pcm, rate, ENGINE_RATE)
    api_key = api_key or os.environ.get("VOICECALL_API_KEY")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = TalkResult()
    async with websockets.connect(url, additional_headers=headers, subprotocols=["realtime"],  # type: ignore[list-item]
                                  max_size=1 << 24) as ws:
        session: dict[str, Any] = {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
        if not realtime:
            session["audio"]["input"]["turn_detection"] = None
        if voice:
            session["audio"]["output"] = {"voice": voice}
        if instructions:
            session["instructions"] = instructions
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        chunk = ENGINE_RATE // 10
        t_end = 0.0
        for i in range(0, len(pcm), chunk):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(pcm[i:i + chunk].tobytes()).decode()}))
            if realtime:
                await asyncio.sleep(0.1)
        if realtime:  # trailing silence so the server's VAD sees the end of the turn
            silence = np.zeros(chunk, np.int16).tobytes()
            for _ in range(15):
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(silence).decode()}))
                await asyncio.sleep(0.1)
        t_end = time.monotonic()
        if not realtime:
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "response.create"}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete answer within {timeout:.0f} s")
            ev = json.loads(await asyncio.wait_for(ws.recv(), remaining))
            result.events.append(ev["type"])
            if ev["type"] == "error":
                raise RuntimeError(f"server error: {ev['error'].get('message')}")
            if ev["type"] == "conversation.item.input_audio_transcription.completed":
                result.user_transcript = ev["transcript"]
            elif ev["type"] == "response.output_audio.delta":
                if result.first_audio_ms is None:
                    result.first_audio_ms = (time.monotonic() - t_end) * 1000
                result.audio.append(base64.b64decode(ev["delta"]))
            elif ev["type"] == "response.output_audio_transcript.done":
                result.answer_transcript = ev["transcript"]
            elif ev["type"] == "response.output_text.done":
                result.answer_transcript = ev["text"]
            elif ev["type"] == "response.done":
                if not result.user_transcript:
                    # transcription may still be on its way; give it a moment
                    try:
                        while True:
                            ev2 = json.loads(await asyncio.wait_for(ws.recv(), 2))
                            if ev2["type"] == "conversation.item.input_audio_transcription.completed":
                                result.user_transcript = ev2["transcript"]
                                break
                    except TimeoutError:
                        pass
                break
    if out:
        audio = np.frombuffer(b"".join(result.audio), dtype="<i2")
        write_wav(out, audio, ENGINE_RATE)
    return result
