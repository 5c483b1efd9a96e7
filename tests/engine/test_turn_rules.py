"""Turn-taking rules with stand-in models (no audio models, no clocks): semantic_vad's end-of-turn decision
(engine/endpointing.py) driven frame by frame, the recogniser's pause report it relies on
(speech/stt_redecode.py), and what counts as a backchannel during an answer (engine/interruptions.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from voicecall.engine.endpointing import EAGERNESS, WORDS_FIRST_MS, Endpointer, doubtful
from voicecall.engine.interruptions import classify, is_clear_interruption
from voicecall.speech.base import TailWord
from voicecall.speech.stt_redecode import RedecodeStream, Word

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


def _endpointer(p: float, words: list[str], eagerness: str = "auto",
                tail: TailWord | None = None) -> tuple[Endpointer, list[bool]]:
    ended: list[bool] = []
    ep = Endpointer(_Model(p), lambda: ended.append(True), lambda: words[0], lambda: tail)
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


def test_a_last_word_is_doubted_when_improbable_or_aligned_to_the_very_end_of_speech() -> None:
    said = "what is the capital of france"
    assert not doubtful(TailWord("france", 0.98, 340), said)  # said in full, a few hundred ms before the pause
    assert doubtful(TailWord("france", 0.3, 340), said)  # improbable to the decoder
    assert doubtful(TailWord("france", 0.99, 90), said)  # squeezed into the tail of the word really said
    assert doubtful(TailWord("france", 0.99, -40), said)  # aligned inside the pause
    assert not doubtful(TailWord("paris", 0.1, 0), said)  # evidence about other words (an older decode): ignored
    assert not doubtful(None, said)


async def test_a_doubted_last_word_holds_a_turn_the_model_calls_complete() -> None:
    # "What is the capital of ..." decoded as "what is the capital done": no trailing "of" left, a confident model
    words = ["what is the capital done"]
    ep, ended = _endpointer(0.99, words, tail=TailWord("done", 0.4, 150))
    ep.on_partial()
    assert await _silence(ep, ended, 1100) is None
    ep.on_speech()  # "... France?"
    assert not ended
    # the same verdict on a last word heard in full ends the turn as soon as the words are in
    ep, ended = _endpointer(0.99, ["what is the capital of france"], tail=TailWord("france", 0.98, 340))
    assert await _silence(ep, ended, 400) is None  # the verdict came first; the pause's words end the turn
    ep.on_partial()
    assert ended == [True]
    # a doubt holds less long than a trailing "of" does, and the hard maximum still ends the turn
    ends = {}
    for said, tail in (("what is the capital of", None), ("what is the capital done", TailWord("done", 0.4, 150))):
        ep, ended = _endpointer(0.99, [said], tail=tail)
        ep.on_partial()
        ends[said] = await _silence(ep, ended, EAGERNESS["auto"].max_ms + 2 * FRAME_MS)
    assert ends["what is the capital done"] is not None and ends["what is the capital of"] is not None
    assert ends["what is the capital done"] < ends["what is the capital of"], ends


async def test_words_heard_in_full_end_the_turn_without_waiting_for_the_verdict() -> None:
    said, full = "what is the capital of france", TailWord("france", 0.98, 340)
    ep, ended = _endpointer(0.99, [said], tail=full)
    ep.on_silence(96)
    ep.on_partial()  # the pause's words come before candidate_ms of silence: not yet
    assert not ended
    assert ep.on_silence(224)  # at candidate_ms the words settle it; the model is not even asked
    assert isinstance(ep.model, _Model) and ep.model.calls == 0
    # words coming while the model's call is running end the turn at once
    ep, ended = _endpointer(0.99, [said], tail=full)
    assert not ep.on_silence(224)  # the model is asked
    ep.on_silence(256)
    ep.on_partial()
    assert ended == [True]
    # not settled: a doubted or improbable last word, a trailing "of", no alignment, or an eagerness of low
    for words, tail, eagerness in ((said, TailWord("france", 0.98, 120), "auto"),
                                   (said, TailWord("france", 0.6, 340), "auto"),
                                   ("what is the capital of", TailWord("of", 0.99, 400), "auto"),
                                   (said, None, "auto"), (said, full, "low")):
        ep, ended = _endpointer(0.99, [words], eagerness, tail=tail)
        ep.on_silence(96)
        ep.on_partial()
        assert not ep.on_silence(EAGERNESS[eagerness].candidate_ms + FRAME_MS) and not ended, (words, tail, eagerness)


async def test_the_model_waits_for_the_words_of_a_pause_being_decoded() -> None:
    said = "what is the capital of"
    ended: list[bool] = []
    model = _Model(0.99)
    ep = Endpointer(model, lambda: ended.append(True), lambda: said, lambda: None, lambda: True)
    ep.push(np.zeros(16000, np.int16))
    ep.start_turn(16000)
    candidate = EAGERNESS["auto"].candidate_ms
    ep.on_silence(candidate + FRAME_MS)
    assert model.calls == 0 and ep._task is None  # the recogniser reports every pause: its words come first
    ep.on_partial()  # they do not settle the turn ("of"): the model is asked now
    assert ep._task is not None
    await ep._task
    assert model.calls == 1 and not ended  # a trailing "of" holds the turn whatever the sound says
    # words that never come (a busy recogniser) hold the model back only WORDS_FIRST_MS
    model = _Model(0.99)
    ep = Endpointer(model, lambda: ended.append(True), lambda: "", lambda: None, lambda: True)
    ep.push(np.zeros(16000, np.int16))
    ep.start_turn(16000)
    t = 0.0
    while ep._task is None and t < 2000:
        t += FRAME_MS
        ep.on_silence(t)
    assert candidate + WORDS_FIRST_MS <= t < candidate + WORDS_FIRST_MS + 2 * FRAME_MS


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


def test_a_pause_decode_starts_after_80_ms_of_quiet_and_a_shorter_dip_is_no_pause() -> None:
    dec = _Decoder()
    stream = RedecodeStream(dec, "en", "")
    speech = (np.sin(np.arange(4800) / 3.0) * 8000).astype(np.int16)  # 0.3 s of loud audio
    quiet = np.random.default_rng(0).normal(0, 30, 1600).astype(np.int16)  # 100 ms

    def feed_10ms(pcm: np.ndarray) -> list[str | None]:
        return [stream.feed(pcm[k:k + 160]) for k in range(0, len(pcm), 160)]

    feed_10ms(np.concatenate([speech, speech]))
    assert not stream.pause_reported
    feed_10ms(quiet[:70 * 16])  # a 70 ms dip (a stop consonant's closure): no pause
    assert not stream.pause_reported
    feed_10ms(speech)
    reports = feed_10ms(quiet)  # 100 ms of quiet: the pause's words are reported at the 80th ms
    assert stream.pause_reported
    assert reports.index("what is the capital of france") == RedecodeStream.QUIET_FRAMES - 1 == 7, reports


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


def test_a_hum_made_into_words_the_recogniser_is_unsure_of_does_not_interrupt() -> None:
    # espeak's "Mm-hm" as Whisper tiny hears it: a sentence whose first word it gives 0.08
    hum = "And then they come"
    assert not is_clear_interruption(hum, 700)  # not while a hum could still be going on: wait for its end
    assert classify(hum, 700, least_probability=0.08) == "none"
    # the same words heard with confidence, or a request with an interrupting word, are an interruption
    assert classify(hum, 700, least_probability=0.9) == "words"
    assert classify(hum, 700) == "words"  # a recogniser that does not tell
    assert classify("No, not that", 700, least_probability=0.1) == "words"
    assert classify("Tell me about the weather in Paris instead", 900, least_probability=0.2) == "words"  # long


class _AligningDecoder(_Decoder):
    """A recogniser that also aligns its words: the last one starts 0.25 s before the end of the audio."""

    def __init__(self) -> None:
        super().__init__()
        self.with_words: list[bool] = []

    def transcribe(self, pcm: np.ndarray, language: str | None = None, context: str = "",
                   final: bool = True) -> tuple[str, float]:
        self.with_words.append(False)
        return super().transcribe(pcm, language, context, final)

    def transcribe_words(self, pcm: np.ndarray, language: str | None = None, context: str = "",
                         final: bool = True) -> tuple[str, float, list[Word]]:
        self.with_words.append(True)
        text, cost = super().transcribe(pcm, language, context, final)
        return text, cost, [Word("capital", 0.0, 0.9), Word("of", 0.0, 0.9),
                            Word("france", pcm.shape[0] / 16000 - 0.25, 0.8)]


def test_redecode_stream_tells_how_sure_it_is_of_the_last_word() -> None:
    dec = _AligningDecoder()
    stream = RedecodeStream(dec, "en", "")
    assert stream.tail_evidence and not RedecodeStream(_Decoder(), "en", "").tail_evidence
    speech = (np.sin(np.arange(8000) / 3.0) * 8000).astype(np.int16)
    quiet = np.random.default_rng(0).normal(0, 30, 8000).astype(np.int16)
    tails: list[TailWord | None] = []
    for part in (speech, speech, quiet):
        for k in range(0, len(part), 1600):
            if stream.feed(part[k:k + 1600]) is not None:
                tails.append(stream.tail_word())
    # while speaking, the last word runs to the end of the audio (0.25 s before it: lead 250 ms); at the pause,
    # the quiet run is not speech: the word starts less than 250 ms before the end of speech
    assert all(t is not None and t.word == "france" and t.probability == 0.8 for t in tails), tails
    assert tails[0] is not None and tails[0].lead_ms == 250
    assert tails[-1] is not None and 0 < tails[-1].lead_ms < 250, tails
    assert stream.least_probability() == 0.8
    assert dec.with_words and not any(w is False for w in dec.with_words)


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


def test_bench_turns_matches_each_end_of_turn_with_the_record_at_the_same_point_of_the_audio() -> None:
    from voicecall.bench.turns import ENGINE_RATE, _match

    records = [{"by": "model", "audio_ms": 1990}, {"by": "silence", "audio_ms": 5010}]
    stops = [2 * ENGINE_RATE, 5 * ENGINE_RATE, 9 * ENGINE_RATE]  # the last one has no record (e.g. server_vad)
    assert _match(stops, records) == {stops[0]: records[0], stops[1]: records[1]}


def test_bench_turns_sums_up_how_the_ends_were_decided() -> None:
    from voicecall.bench.turns import _ends_summary

    ends = [{"by": "words", "verdict_at_ms": 64, "words_at_ms": 288, "at_ms": 288},
            {"by": "words", "verdict_at_ms": 96, "words_at_ms": 320, "at_ms": 320},
            {"by": "silence", "verdict_at_ms": 64, "words_at_ms": None, "at_ms": 1376}]
    out = _ends_summary(ends)
    assert out["by"] == {"words": 2, "silence": 1}
    assert out["words_at_ms"]["n"] == 2 and out["words_at_ms"]["p50"] == 304
    assert out["ended_at_ms"]["p50"] == 320


class _PauseStream:
    """A recogniser stream that reports the pause's words at once (as if its levels went quiet first)."""

    sample_rate = 16000
    pause_reported = False

    def feed(self, pcm: np.ndarray) -> str | None:
        if self.pause_reported:
            return None
        self.pause_reported = True
        return "what is the capital of france"

    def finish(self) -> str:
        return "what is the capital of france"

    def abort(self) -> None:
        pass


class _PauseSTT:
    name = "pause"

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> _PauseStream:
        return _PauseStream()


async def test_the_pause_words_count_even_when_the_vad_still_hears_the_fading_end_of_speech() -> None:
    import asyncio

    from voicecall.engine.turns import InputAudioBuffer
    from voicecall.protocol.session import TurnDetection

    # two speech frames start the turn; then three frames the VAD still calls speech (0.4 >= threshold - 0.15)
    # while the recogniser has already decoded the pause; then silence
    vad = _ScriptedVAD([1, 1, 0.4, 0.4, 0.4, 0, 0])
    buf = InputAudioBuffer(vad, _PauseSTT(), _Events(), lambda _t: None, eot_model=_Model(0.1))  # type: ignore[arg-type]
    buf.set_turn_detection(TurnDetection(type="semantic_vad"))
    for i in range(7):
        buf.append(np.zeros(768, np.int16))  # one 32 ms VAD frame of engine audio (24 kHz)
        for _ in range(400):  # let the recogniser's worker thread deliver what it has
            stt = buf._stt
            if stt is not None and (not stt._queue.empty() or not stt.at_pause):
                await asyncio.sleep(0.005)
            else:
                break
        if i == 4:  # the VAD still says speech: not yet the pause
            assert buf.speaking and not buf.words_fresh
    assert buf.speaking and buf.words_fresh  # the first silent frame: the words reported at the pause count
    buf.close()


def test_a_final_mark_restarts_a_speculative_answer_only_when_it_changes_the_answer() -> None:
    from voicecall.engine.session import _same_question

    # the mark makes it a question that the answer restates: answer again
    assert not _same_question("What is the capital of France", "What is the capital of France?")
    # the same answer with or without it: keep the answer already started
    assert _same_question("How are you today", "How are you today?")
    assert _same_question("Tell me a fun fact about the ocean", "Tell me a fun fact about the ocean.")
    assert _same_question("What is the capital of France?", "what is the capital of france?")
    assert not _same_question("Tell me a fun fact about the", "Tell me a fun fact about the ocean.")


def _frames_until_stopped(script: list[float], audio: list[np.ndarray]) -> int | None:
    """Feed one 32 ms frame of engine audio per scripted VAD probability; the frame index at which speech stopped."""
    from voicecall.engine.turns import InputAudioBuffer
    from voicecall.protocol.session import TurnDetection

    events = _Events()
    buf = InputAudioBuffer(_ScriptedVAD(script), _Decoder(), events, lambda _t: None)  # type: ignore[arg-type]
    buf.set_turn_detection(TurnDetection(silence_duration_ms=320))  # 10 VAD frames
    try:
        for i, frame in enumerate(audio):
            buf.append(frame)
            if "stopped" in events.seen:
                return i
        return None
    finally:
        buf.close()


async def test_speech_ends_when_the_room_is_back_at_its_noise_floor_though_the_vad_model_lags() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(768) / 24000

    def noise() -> np.ndarray:
        return rng.normal(0, 60, 768).astype(np.int16)  # about -55 dBFS: a microphone's noise floor

    def voice(amplitude: float) -> np.ndarray:
        return (amplitude * np.sin(2 * np.pi * 220 * t) + rng.normal(0, 60, 768)).astype(np.int16)

    # 20 background frames, 15 frames of speech, then background that the VAD model still calls speech for 3
    # frames (silero's lag after the last word) before it calls it silence
    lag = [0.0] * 20 + [1.0] * 15 + [0.95] * 3 + [0.0] * 20
    audio = [noise() for _ in range(20)] + [voice(8000) for _ in range(15)] + [noise() for _ in range(23)]
    stopped = _frames_until_stopped(lag, audio)
    # the 320 ms window counts from the first frame at the floor (frame 35), not from the model's first silent
    # frame (38): 10 frames from frame 35 (the VAD's resampler may carry a little speech into it: 36)
    assert stopped is not None and 35 + 10 <= stopped <= 36 + 10, stopped

    # the model's word alone where levels say nothing: a floor never heard (the turn starts the session) ...
    stopped = _frames_until_stopped(lag[20:], audio[20:])
    assert stopped == 18 + 10, stopped
    # ... or speech that is soft but well above the floor (20 dB under the turn's loudest, 30 dB over the floor)
    soft = [noise() for _ in range(20)] + [voice(8000) for _ in range(15)] + [voice(800) for _ in range(3)] + \
        [noise() for _ in range(20)]
    stopped = _frames_until_stopped(lag, soft)
    assert stopped == 38 + 10, stopped


class _ScriptedStream(_PauseStream):
    """A re-decoding recogniser stream (pause decodes are final-quality, with last-word evidence) that reports
    the scripted (text, tail word, at a pause) one per feed."""

    pause_decode_is_final = True
    tail_evidence = True

    def __init__(self, script: list[tuple[str, TailWord, bool]]) -> None:
        self.script = list(script)
        self.pause_reported = False
        self._tail: TailWord | None = None

    def feed(self, pcm: np.ndarray) -> str | None:
        if not self.script:
            return None
        text, self._tail, self.pause_reported = self.script.pop(0)
        return text

    def tail_word(self) -> TailWord | None:
        return self._tail

    def least_probability(self) -> float | None:
        return self._tail.probability if self._tail is not None else None


class _ScriptedSTT:
    name = "scripted"

    def __init__(self, script: list[tuple[str, TailWord, bool]]) -> None:
        self.script = script

    def new_stream(self, language: str | None = None, prompt: str | None = None) -> _ScriptedStream:
        return _ScriptedStream(self.script)


async def _buffer_after(script: list[tuple[str, TailWord, bool]], vad: list[float]) -> Any:
    import asyncio

    from voicecall.engine.turns import InputAudioBuffer
    from voicecall.protocol.session import TurnDetection

    buf = InputAudioBuffer(_ScriptedVAD(vad), _ScriptedSTT(script), _Events(), lambda _t: None,  # type: ignore[arg-type]
                           eot_model=_Model(0.1))
    buf.set_turn_detection(TurnDetection(type="semantic_vad"))
    for _ in vad:
        buf.append(np.zeros(768, np.int16))  # one 32 ms VAD frame of engine audio (24 kHz)
        for _ in range(400):  # let the recogniser's worker thread deliver what it has
            stt = buf._stt
            if stt is not None and not stt._queue.empty():
                await asyncio.sleep(0.005)
            else:
                break
        await asyncio.sleep(0.02)
    return buf


async def test_no_speculative_answer_to_older_words_the_recogniser_doubts_while_the_pause_is_decoded() -> None:
    """At a pause, the latest partial is often one decode behind ("... the capital and frat", its last word
    improbable and squeezed into the end of speech) and the pause's own decode is under way: an answer to the older
    words would be thrown away ~100-200 ms later, and on two cores it slows that decode. Older words whose last
    word is heard in full are answered at once (they are usually the pause's words already)."""
    doubted = ("what is the capital and frat", TailWord("frat", 0.07, 80), False)
    heard = ("what is the capital of france", TailWord("france", 0.98, 338), False)
    at_pause = ("what is the capital of france", TailWord("france", 0.98, 338), True)
    speech_then_pause = [1, 1, 0, 0]
    buf = await _buffer_after([doubted], speech_then_pause)
    assert buf.speaking and not buf.words_fresh and buf.stale_words_doubtful
    buf.close()
    buf = await _buffer_after([heard], speech_then_pause)
    assert buf.speaking and not buf.words_fresh and not buf.stale_words_doubtful
    buf.close()
    buf = await _buffer_after([doubted, at_pause], speech_then_pause)  # the pause's words came: answer them
    assert buf.words_fresh and not buf.stale_words_doubtful
    buf.close()
