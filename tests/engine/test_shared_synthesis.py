"""A session's answers share the synthesis of a short chunk: a speculative answer dropped for newer words has often
started synthesizing the chunk the next answer begins with, and that answer takes its audio (in flight or done)."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np

from voicecall.engine import response as R


class CountingTTS:
    """A TTS stand-in that counts its syntheses and can be held mid-synthesis."""

    name = "counting"
    sample_rate = 24000

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def synthesize(self, text: str, voice: str | None = None, speed: float = 1.0):  # type: ignore[no-untyped-def]
        self.calls.append(text)
        self.gate.wait(5)
        if text == "fail":
            raise RuntimeError("synthesis failed")
        yield np.full(240 * len(text), 1000, np.int16)


def _runner(session: SimpleNamespace) -> R.ResponseRunner:
    runner = R.ResponseRunner.__new__(R.ResponseRunner)
    runner.s = session  # type: ignore[assignment]
    return runner


async def _audio(runner: R.ResponseRunner, tts: CountingTTS, text: str) -> int:
    chunks, _ = await asyncio.shield(runner._synthesis(tts, text, None, 1.0))  # type: ignore[arg-type]
    return sum(len(c) for c in chunks)


def test_a_dropped_answers_synthesis_in_flight_serves_the_next_answer() -> None:
    async def main() -> None:
        session = SimpleNamespace(recent_syntheses=OrderedDict())
        tts = CountingTTS()
        tts.gate.clear()  # the first answer's synthesis of "No," is still running ...
        first = asyncio.create_task(_audio(_runner(session), tts, "No,"))
        await asyncio.sleep(0.05)
        first.cancel()  # ... when that answer is dropped
        second = asyncio.create_task(_audio(_runner(session), tts, "No,"))
        await asyncio.sleep(0.05)
        tts.gate.set()
        assert await second == 240 * 3
        assert tts.calls == ["No,"]  # one synthesis for both
        assert await _audio(_runner(session), tts, "Yes,") == 240 * 4
        assert tts.calls == ["No,", "Yes,"]

    asyncio.run(main())


def test_the_shared_syntheses_are_bounded_long_chunks_are_not_kept_and_failures_are_retried() -> None:
    async def main() -> None:
        session = SimpleNamespace(recent_syntheses=OrderedDict())
        tts = CountingTTS()
        runner = _runner(session)
        for i in range(R.SHARED_SYNTHESES + 5):
            await _audio(runner, tts, f"chunk {i}")
        assert len(session.recent_syntheses) == R.SHARED_SYNTHESES
        long = "word " * 20
        await _audio(runner, tts, long)
        await _audio(runner, tts, long)
        assert tts.calls.count(long) == 2 and long not in {k[0] for k in session.recent_syntheses}
        for _ in range(2):
            try:
                await _audio(runner, tts, "fail")
            except RuntimeError:
                pass
        assert tts.calls.count("fail") == 2  # a failed synthesis is not served again

    asyncio.run(main())
