"""Turn-taking rules with stand-in models (no audio models, no clocks): semantic_vad's end-of-turn decision
(engine/endpointing.py) driven frame by frame, the recogniser's pause report it relies on
(speech/stt_redecode.py), and what counts as a backchannel during an answer (engine/interruptions.py)."""

from __future__ import annotations

import numpy as np

from voicecall.engine.endpointing import EAGERNESS, Endpointer
from voicecall.engine.interruptions import classify, is_clear_interruption
from voicecall.speech.stt_redecode import RedecodeStream

FRAME_MS = 32.0


class _Model:
    """An end-of-turn model that always gives the same verdict."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.calls = 0

    def probability(self, audio16k: np.ndarray) -> float:
        self.calls += 1
        return self.p


async def _silence(ep: Endpointer, ended: list[bool], until_ms: float, start_ms: float = 0.0) -> float | None:
    """Silent frames up to ``until_ms``; each model verdict is awaited before the next frame. Returns the silence
    at which the turn ended (or None)."""
    t = start_ms
    while t < until_ms:
        t += FRAME_MS
        if ep.on_silence(t) or ended:
            return t
        task = ep._task
        if task is not None and not task.done():
            await task
            if ended:
                return t
    return None


def _endpointer(p: float, words: list[str], eagerness: str = "auto") -> tuple[Endpointer, list[bool]]:
    ended: list[bool] = []
    ep = Endpointer(_Model(p), lambda: ended.append(True), lambda: words[0])
    ep.set_eagerness(eagerness)
    ep.push(np.zeros(16000, np.int16))
    ep.start_turn(16000)
    return ep, ended


async def test_a_confident_verdict_ends_the_turn_once_the_pause_words_are_in() -> None:
    words = ["what is the capital of france"]
    ep, ended = _endpointer(0.95, words)
    # the model says "complete" before the recogniser reported the pause: wait for the pause's words
    assert await _silence(ep, ended, 400) is None
    ep.on_partial()  # the pause's decode: the same words as before (the recogniser reports them anyway)
    assert ended == [True]


async def test_a_trailing_function_word_holds_the_turn_through_a_second() -> None:
    for tail in ("of", "the", "and", "to", "a"):
        words = [f"what is the capital {tail}"]
        ep, ended = _endpointer(0.99, words)  # the sound says complete; the words say otherwise
        ep.on_partial()
        assert await _silence(ep, ended, 1100) is None, tail
        ep.on_speech()  # the rest of the sentence comes: the turn goes on
        assert not ended


async def test_hard_maximum_ends_any_pause() -> None:
    words = ["what is the capital of"]
    for name, e in EAGERNESS.items():
        ep, ended = _endpointer(0.0, words, name)
        ep.on_partial()
        at = await _silence(ep, ended, e.max_ms + 2 * FRAME_MS)
        assert at is not None and at >= e.max_ms * 0.5, name


async def test_eagerness_orders_the_wait_on_an_ambiguous_pause() -> None:
    ends: dict[str, float] = {}
    for name in ("high", "auto", "low"):
        ep, ended = _endpointer(0.35, ["tell me about cats"], name)
        ep.on_partial()
        at = await _silence(ep, ended, 4000)
        assert at is not None
        ends[name] = at
    assert ends["high"] <= ends["auto"] <= ends["low"] and ends["high"] < ends["low"], ends


class _Decoder:
    """A whole-utterance recogniser that hears the same words every time."""

    window = 10.0
    partial_interval = 0.5

    def __init__(self) -> None:
        self.decodes = 0

    def transcribe(self, pcm: np.ndarray, language: str | None = None, context: str = "",
                   final: bool = True) -> tuple[str, float]:
        self.decodes += 1
        return "what is the capital of france", 0.0

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> RedecodeStream:
        return RedecodeStream(self, "en", "")


def test_redecode_stream_reports_every_pause_even_with_unchanged_words() -> None:
    dec = _Decoder()
    stream = RedecodeStream(dec, "en", "")
    rng = np.random.default_rng(0)
    speech = (np.sin(np.arange(8000) / 3.0) * 8000).astype(np.int16)  # 0.5 s of loud audio
    quiet = rng.normal(0, 30, 8000).astype(np.int16)
    reports: list[str | None] = []
    for part in (speech, speech, quiet, speech, quiet, quiet):
        for k in range(0, len(part), 1600):  # 100 ms appends
            reports.append(stream.feed(part[k:k + 1600]))
    said = [r for r in reports if r is not None]
    # the first decode, then one report per pause (two pauses), all with the same words
    assert len(said) == 3 and set(said) == {"what is the capital of france"}, reports
    assert stream.finish() == "what is the capital of france"
    assert dec.decodes <= 6  # quiet audio after a pause's decode is not decoded again and again


def test_a_partial_drops_the_final_mark_that_heard_keeps() -> None:
    """A partial's last word may still grow, so it has no final mark; ``heard`` keeps what was decoded (the
    speculative answer answers the question as the final transcript will read)."""
    dec = _Decoder()
    dec.transcribe = lambda *a, **k: ("What is the capital of France?", 0.0)  # type: ignore[method-assign]
    stream = RedecodeStream(dec, "en", "")
    speech = (np.sin(np.arange(8000) / 3.0) * 8000).astype(np.int16)
    quiet = np.random.default_rng(0).normal(0, 30, 8000).astype(np.int16)
    said = [r for part in (speech, quiet) for k in range(0, 8000, 1600) if (r := stream.feed(part[k:k + 1600]))]
    assert said and said[-1] == "What is the capital of France" and stream.heard == "What is the capital of France?"
    assert stream.finish() == "What is the capital of France?"


def test_backchannels_and_hums_do_not_interrupt_but_requests_do() -> None:
    # hums however a recogniser spells them, repeated backchannels, noise: the answer goes on
    for heard in ("MMMM", "Mm-hmm", "hmmm", "mhm", "Yeah... Yeah... Yeah... Yeah... Yeah", "ahh okay", "I see", ""):
        assert classify(heard, 800) in ("backchannel", "none"), heard
        assert not is_clear_interruption(heard, 800), heard
    # a request, even a short one, stops it
    for heard in ("Stop.", "Wait", "No, the other one", "Tell me about Paris instead"):
        assert classify(heard, 800) == "words", heard
    assert is_clear_interruption("Stop", 100) and is_clear_interruption("tell me about Paris", 800)


class _ScriptedVAD:
    """A VAD whose per-frame speech probabilities are given in advance."""

    name = "scripted"
    sample_rate = 16000
    frame_samples = 512

    def __init__(self, script: list[float]) -> None:
        self.script = list(script)

    def new_stream(self) -> _ScriptedVAD:
        return self

    def probability(self, frame: np.ndarray) -> float:
        return self.script.pop(0) if self.script else 0.0

    def reset(self) -> None:
        pass


class _Events:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_speech_started(self, audio_start_ms: int) -> None:
        self.seen.append("started")

    def on_speech_stopped(self, audio_end_ms: int) -> None:
        self.seen.append("stopped")

    def on_speech_paused(self) -> None:
        self.seen.append("paused")

    def on_speech_resumed(self) -> None:
        self.seen.append("resumed")

    def on_speech_onset(self) -> None:
        self.seen.append("onset")

    def on_speech_onset_void(self) -> None:
        self.seen.append("void")


async def test_a_single_speech_frame_is_an_onset_that_is_voided_and_two_start_a_turn() -> None:
    from voicecall.engine.turns import InputAudioBuffer
    from voicecall.protocol.session import TurnDetection

    events = _Events()
    vad = _ScriptedVAD([0, 1, 0, 0, 1, 1, 1])
    buf = InputAudioBuffer(vad, _Decoder(), events, lambda _t: None)  # type: ignore[arg-type]
    buf.set_turn_detection(TurnDetection())
    for _ in range(7):
        buf.append(np.zeros(768, np.int16))  # one 32 ms VAD frame of engine audio (24 kHz)
    # the session pauses an audible answer at the onset and resumes it when the next frame is not speech
    assert events.seen == ["onset", "void", "onset", "started"], events.seen
    buf.close()
