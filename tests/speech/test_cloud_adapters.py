"""The cloud speech adapters (Anthropic, Deepgram, ElevenLabs, OpenAI-compatible STT/TTS) and fallback chains.

Cloud services cannot be reached from here: every test runs against a local stand-in server written from the
vendor's public API reference (voicecall/bench/standins/: endpoint paths, auth headers, message shapes, streaming framing,
error bodies), on 127.0.0.1, which can also fail on demand (401, 429 + retry-after, 500, a stream dropped
mid-answer, a first byte that never comes). The recognisers behind the STT stand-ins are the embedded
pocketsphinx, so transcripts come from real audio.

Every failure must surface as a clear error (kind, vendor, what happened) within 2 s of the adapter's timeout,
and the API key must never appear in an error, a repr or a log record (checked for every test by ``no_key_in_logs``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import fixed_piper
from voicecall.audio import resample
from voicecall.bench.signals import mic_like
from voicecall.bench.standins.anthropic import AnthropicStandIn
from voicecall.bench.standins.deepgram import DeepgramStandIn
from voicecall.bench.standins.elevenlabs import ElevenLabsStandIn
from voicecall.bench.standins.openai_audio import OpenAIAudioStandIn
from voicecall.config import ConfigError, LocalConfig, StageConfig
from voicecall.speech.base import (
    ChatMessage,
    EndOfTurnHints,
    FunctionTool,
    LLMError,
    LLMUsage,
    Served,
    TextDelta,
    ToolCallDelta,
)
from voicecall.speech.cloud import ProviderError
from voicecall.speech.fallback import FallbackLLM, FallbackSTT, FallbackTTS
from voicecall.speech.llm_anthropic import AnthropicLLM, anthropic_tool_choice, to_anthropic
from voicecall.speech.llm_echo import EchoLLM
from voicecall.speech.llm_openai_compat import OpenAICompatLLM
from voicecall.speech.prices import StagePrices, StageUse, cost_report
from voicecall.speech.registry import check_stages, resolve_stage
from voicecall.speech.stt_deepgram import DeepgramSTT
from voicecall.speech.stt_openai_compat import OpenAICompatSTT
from voicecall.speech.tts_elevenlabs import ElevenLabsTTS
from voicecall.speech.tts_openai_compat import OpenAICompatTTS
from voicecall.speech.tts_tone import ToneTTS

KEY = "sk-cloud-SECRET-7f3a9c"
QUESTION = "What is the capital of France?"
FAILS = ["401", "429", "500", "drop", "stall"]
TIMEOUT = 1.0


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert KEY not in caplog.text


@pytest.fixture(scope="module")
def question16k() -> np.ndarray:
    piper = fixed_piper()
    pcm = np.concatenate(list(piper.synthesize(QUESTION)))
    return mic_like(resample(pcm, piper.sample_rate, 16000), pad_s=0.4, noise_sd=60)


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicStandIn]:
    with AnthropicStandIn(KEY) as s:
        yield s


@pytest.fixture(scope="module")
def deepgram() -> Iterator[DeepgramStandIn]:
    with DeepgramStandIn(KEY) as s:
        yield s


@pytest.fixture(scope="module")
def eleven() -> Iterator[ElevenLabsStandIn]:
    with ElevenLabsStandIn(KEY) as s:
        yield s


@pytest.fixture(scope="module")
def oai() -> Iterator[OpenAIAudioStandIn]:
    with OpenAIAudioStandIn(KEY) as s:
        yield s


def check_failure(exc: BaseException, mode: str, elapsed: float) -> None:
    """A failure is a ProviderError of the right kind, keyless, and comes within 2 s of the timeout."""
    assert isinstance(exc, ProviderError), repr(exc)
    kind = {"401": "auth", "429": "rate_limit", "500": "server", "drop": "dropped", "stall": "timeout"}[mode]
    assert exc.kind == kind, (mode, exc.kind, str(exc))
    assert KEY not in str(exc)
    if mode == "429":
        assert exc.retry_after is not None and exc.retry_after > 0
    assert elapsed < TIMEOUT + 2.0, (mode, elapsed)  # the bound: an error within 2 s of the timeout


async def collect(llm: Any, messages: list[ChatMessage], **kw: Any) -> list[Any]:
    return [c async for c in llm.stream_chat(messages, **kw)]


# ------------------------------------------------------------------------------------------ Anthropic
async def test_anthropic_streams_text_and_usage(anthropic: AnthropicStandIn) -> None:
    """Against a stand-in of the Messages API written from Anthropic's public reference."""
    llm = AnthropicLLM(api_key=KEY, base_url=anthropic.http, model="claude-haiku-4-5")
    chunks = await collect(llm, [ChatMessage("system", "Be brief."), ChatMessage("user", QUESTION)])
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert len(texts) > 1 and "".join(texts) == "The capital of France is Paris."
    assert isinstance(chunks[-1], LLMUsage) and chunks[-1].input_tokens > 5 and chunks[-1].output_tokens == 6
    body = anthropic.requests[-1]
    assert body["system"] == "Be brief." and body["stream"] is True and body["model"] == "claude-haiku-4-5"
    assert anthropic.version_seen == "2023-06-01"
    assert KEY not in repr(llm)
    await llm.aclose()


async def test_anthropic_tool_use_round_trip(anthropic: AnthropicStandIn) -> None:
    """tool_use blocks become Realtime function-call deltas; a function output goes back as a tool_result."""
    tool = FunctionTool("get_weather", "Weather in a city",
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    llm = AnthropicLLM(api_key=KEY, base_url=anthropic.http)
    chunks = await collect(llm, [ChatMessage("user", "Paris")], tools=[tool],
                           tool_choice={"type": "function", "name": "get_weather"})
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].name == "get_weather" and calls[0].call_id and calls[0].call_id.startswith("toolu_")
    assert "".join(c.arguments for c in calls) == '{"city": "Paris"}'
    assert anthropic.requests[-1]["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert anthropic.requests[-1]["tools"][0]["input_schema"]["required"] == ["city"]
    history = [ChatMessage("user", "Paris"),
               ChatMessage("assistant", None, tool_calls=[{"id": calls[0].call_id, "type": "function",
                                                           "function": {"name": "get_weather",
                                                                        "arguments": '{"city": "Paris"}'}}]),
               ChatMessage("tool", "sunny, 21 C", tool_call_id=calls[0].call_id)]
    chunks = await collect(llm, history, tools=[tool])
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "The tool answered sunny, 21 C."
    sent = anthropic.requests[-1]["messages"]  # the stand-in validated the tool_use → tool_result pairing
    assert sent[1]["content"][0] == {"type": "tool_use", "id": calls[0].call_id, "name": "get_weather",
                                     "input": {"city": "Paris"}}
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].call_id,
                                                    "content": "sunny, 21 C"}]}
    await llm.aclose()


def test_anthropic_request_mapping() -> None:
    assert anthropic_tool_choice("auto") == {"type": "auto"}
    assert anthropic_tool_choice("required") == {"type": "any"}
    assert anthropic_tool_choice("none") == {"type": "none"}
    system, msgs = to_anthropic([ChatMessage("system", "A"), ChatMessage("assistant", "Hello!"),
                                 ChatMessage("user", "Hi"), ChatMessage("user", "there")])
    assert system == "A"
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]  # user first, same roles merged
    assert len(msgs[2]["content"]) == 2


@pytest.mark.parametrize("mode", FAILS)
async def test_anthropic_failures(anthropic: AnthropicStandIn, mode: str) -> None:
    anthropic.fail(mode, 1)
    llm = AnthropicLLM(api_key=KEY, base_url=anthropic.http, timeout=TIMEOUT)
    t0 = time.monotonic()
    with pytest.raises(LLMError) as info:
        await collect(llm, [ChatMessage("user", "Tell me a long story please")])
    check_failure(info.value, mode, time.monotonic() - t0)
    await llm.aclose()


def test_wrong_key_is_an_auth_error(anthropic: AnthropicStandIn, deepgram: DeepgramStandIn) -> None:
    wrong = KEY + "-wrong"
    with pytest.raises(LLMError, match="401") as info:
        asyncio.run(collect(AnthropicLLM(api_key=wrong, base_url=anthropic.http), [ChatMessage("user", "hi")]))
    assert wrong not in str(info.value)
    with pytest.raises(ProviderError, match="401") as info2:
        DeepgramSTT(api_key=wrong, base_url=deepgram.ws).new_stream()
    assert wrong not in str(info2.value)


# ------------------------------------------------------------------------------------------ Deepgram
def feed_paced(stream: Any, pcm: np.ndarray, step: int = 3200) -> list[str]:
    partials = []
    for i in range(0, len(pcm), step):
        p = stream.feed(pcm[i:i + step])
        if p:
            partials.append(p)
        time.sleep(0.01)
    return partials


def test_deepgram_interim_final_and_end_of_turn_hint(deepgram: DeepgramStandIn, question16k: np.ndarray) -> None:
    """Against a stand-in of Deepgram's live listen WebSocket written from Deepgram's public reference."""
    stt = DeepgramSTT(api_key=KEY, base_url=deepgram.ws, endpointing=300, timeout=15)  # generous: a busy machine
    stream = stt.new_stream("en")
    assert isinstance(stream, EndOfTurnHints) and stream.end_of_turn() is None
    partials = feed_paced(stream, question16k)
    deadline = time.monotonic() + 5
    while stream.end_of_turn() is None and time.monotonic() < deadline:  # speech_final after 300 ms of silence
        stream.feed(np.zeros(1600, np.int16))
        time.sleep(0.05)
    assert stream.end_of_turn() is not None
    assert partials, "interim results become partial hypotheses"
    text = stream.finish()
    assert {"capital", "france"} <= set(text.lower().split()), text
    q = deepgram.queries[-1]
    assert q["model"] == "nova-3" and q["interim_results"] == "true" and q["endpointing"] == "300"
    assert q["vad_events"] == "true" and q["language"] == "en"
    assert deepgram.closed_streams >= 1  # finished with CloseStream, Metadata, a normal close


def test_deepgram_keepalive_while_idle(deepgram: DeepgramStandIn) -> None:
    before = deepgram.keepalives
    stream = DeepgramSTT(api_key=KEY, base_url=deepgram.ws, keep_alive=0.2).new_stream()
    time.sleep(0.7)
    assert stream.finish() == ""
    assert deepgram.keepalives > before


@pytest.mark.parametrize("mode", FAILS)
def test_deepgram_failures(deepgram: DeepgramStandIn, question16k: np.ndarray, mode: str) -> None:
    deepgram.fail(mode, 1)
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        stream = DeepgramSTT(api_key=KEY, base_url=deepgram.ws, timeout=TIMEOUT).new_stream()
        t0 = time.monotonic()
        feed_paced(stream, question16k[: 16000 * 2], step=1600)
        t0 = time.monotonic()  # from here, finish() waits at most its timeout
        stream.finish()
    check_failure(info.value, mode, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------ OpenAI STT
def test_openai_transcription(oai: OpenAIAudioStandIn, question16k: np.ndarray) -> None:
    """Against a stand-in of POST /v1/audio/transcriptions written from OpenAI's public reference."""
    stt = OpenAICompatSTT(base_url=oai.http + "/v1", api_key=KEY, language="en")
    stream = stt.new_stream()
    assert stream.feed(question16k) is None  # whole-file endpoint: no partials
    assert {"capital", "france"} <= set(stream.finish().lower().split())
    assert oai.requests[-1] == {"model": "gpt-4o-mini-transcribe", "response_format": "json", "language": "en"}
    assert stt.billing == "openai-compatible/gpt-4o-mini-transcribe"


@pytest.mark.parametrize("mode", FAILS)
def test_openai_transcription_failures(oai: OpenAIAudioStandIn, question16k: np.ndarray, mode: str) -> None:
    oai.fail(mode, 1)
    stream = OpenAICompatSTT(base_url=oai.http + "/v1", api_key=KEY, timeout=TIMEOUT).new_stream()
    stream.feed(question16k)
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        stream.finish()
    check_failure(info.value, mode, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------ TTS
def test_elevenlabs_streams_pcm_with_mapped_voice(eleven: ElevenLabsStandIn) -> None:
    """Against a stand-in of ElevenLabs' stream-input WebSocket written from ElevenLabs' public reference."""
    tts = ElevenLabsTTS(api_key=KEY, base_url=eleven.ws, voices={"marin": "voice-marin-id"})
    assert tts.sample_rate == 24000
    assert tts.default_voices()["marin"] == "voice-marin-id" and tts.default_voices()["cedar"] == tts.voice_id
    chunks = list(tts.synthesize("Hello there. How are you?", "voice-marin-id"))
    assert len(chunks) > 1  # audio arrives in several messages, each yielded as it comes
    assert sum(len(c) for c in chunks) == sum(len(c) for c in ToneTTS(24000, 60, 20).synthesize("Hello there. How are you?"))
    assert eleven.voices_seen[-1] == "voice-marin-id" and eleven.texts[-1] == "Hello there. How are you?"


@pytest.mark.parametrize("mode", FAILS)
def test_elevenlabs_failures(eleven: ElevenLabsStandIn, mode: str) -> None:
    eleven.fail(mode, 1)
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        list(ElevenLabsTTS(api_key=KEY, base_url=eleven.ws, timeout=TIMEOUT).synthesize(
            "A rather long sentence, so that the stream has time to drop in the middle of it."))
    check_failure(info.value, mode, time.monotonic() - t0)


def test_elevenlabs_wrong_key_in_stream(eleven: ElevenLabsStandIn) -> None:
    with pytest.raises(ProviderError, match="Invalid API key") as info:
        list(ElevenLabsTTS(api_key="not-the-key", base_url=eleven.ws).synthesize("Hi."))
    assert info.value.kind == "auth"


def test_openai_speech_streams_pcm(oai: OpenAIAudioStandIn) -> None:
    """Against a stand-in of POST /v1/audio/speech (response_format pcm) written from OpenAI's public reference."""
    tts = OpenAICompatTTS(base_url=oai.http + "/v1", api_key=KEY, instructions="Cheerful.")
    chunks = list(tts.synthesize("Hello there. How are you?", "coral", 1.1))
    assert len(chunks) > 1
    assert sum(len(c) for c in chunks) == sum(len(c) for c in ToneTTS(24000, 60, 20).synthesize("Hello there. How are you?"))
    assert oai.speech_bodies[-1] == {"model": "gpt-4o-mini-tts", "input": "Hello there. How are you?", "voice": "coral",
                                     "response_format": "pcm", "speed": 1.1, "instructions": "Cheerful."}


@pytest.mark.parametrize("mode", FAILS)
def test_openai_speech_failures(oai: OpenAIAudioStandIn, mode: str) -> None:
    oai.fail(mode, 1)
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        list(OpenAICompatTTS(base_url=oai.http + "/v1", api_key=KEY, timeout=TIMEOUT).synthesize(
            "A rather long sentence, so that the stream has time to drop in the middle of it."))
    check_failure(info.value, mode, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------ fallback
async def test_llm_fallback_error_timeout_and_retry_later(anthropic: AnthropicStandIn, oai: OpenAIAudioStandIn) -> None:
    claude = AnthropicLLM(api_key=KEY, base_url=anthropic.http, timeout=5)
    backup = OpenAICompatLLM(oai.http + "/v1", model="gpt-4o-mini", api_key=KEY)
    chain = FallbackLLM([claude, backup], ["anthropic", "openai-compatible"], first_byte_timeout=2.0, retry_after=0.3)
    msgs = [ChatMessage("user", QUESTION)]
    for mode in ("500", "stall"):  # an error, then a first byte that never comes (chain's 2 s, not Claude's 5 s)
        anthropic.fail(mode, 1)
        t0 = time.monotonic()
        chunks = await collect(chain, msgs)
        assert time.monotonic() - t0 < 2.0 + 2.0
        assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "The capital of France is Paris."
        assert chunks[-1].served == Served("openai-compatible", "openai-compatible/gpt-4o-mini")
        await asyncio.sleep(0.35)  # the first entry rests retryAfter, then serves again
        chunks = await collect(chain, msgs)
        assert chunks[-1].served == Served("anthropic", "anthropic/claude-haiku-4-5")
    assert chain.chain.failures == [2, 0]
    await claude.aclose()
    await backup.aclose()


async def test_llm_fallback_continues_a_dropped_stream(anthropic: AnthropicStandIn) -> None:
    anthropic.fail("drop", 1)
    chain = FallbackLLM([AnthropicLLM(api_key=KEY, base_url=anthropic.http), EchoLLM()], ["anthropic", "echo"])
    chunks = await collect(chain, [ChatMessage("user", QUESTION)])
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text.startswith("The capital of")  # what Claude said before the drop was kept...
    assert text.endswith("You said: What is the capital of France.")  # ...and the next entry went on
    assert chunks[-1].served is not None and chunks[-1].served.provider == "echo"


async def test_llm_fallback_all_fail_is_an_llm_error(anthropic: AnthropicStandIn) -> None:
    anthropic.fail("500")
    try:
        chain = FallbackLLM([AnthropicLLM(api_key=KEY, base_url=anthropic.http)] * 2, ["a", "b"])
        with pytest.raises(LLMError, match="every LLM of the fallback chain failed"):
            await collect(chain, [ChatMessage("user", "hi")])
    finally:
        anthropic.fail(None)


def test_stt_fallback_replays_the_utterance(deepgram: DeepgramStandIn, oai: OpenAIAudioStandIn,
                                            question16k: np.ndarray) -> None:
    deepgram.fail("drop", 1)
    chain = FallbackSTT([DeepgramSTT(api_key=KEY, base_url=deepgram.ws, timeout=3),
                         OpenAICompatSTT(base_url=oai.http + "/v1", api_key=KEY)], ["deepgram", "openai-compatible"])
    stream = chain.new_stream()
    feed_paced(stream, question16k, step=1600)
    text = stream.finish()
    assert {"capital", "france"} <= set(text.lower().split()), text
    assert stream.served == Served("openai-compatible", "openai-compatible/gpt-4o-mini-transcribe")


def test_tts_fallback_per_chunk(eleven: ElevenLabsStandIn) -> None:
    tone = ToneTTS(16000)
    chain = FallbackTTS([ElevenLabsTTS(api_key=KEY, base_url=eleven.ws, timeout=5), tone], ["elevenlabs", "tone"],
                        ["elevenlabs", "tone"], first_byte_timeout=0.5, retry_after=0.0)
    assert chain.sample_rate == 24000
    for mode in ("500", "drop", "stall"):
        eleven.fail(mode, 1)
        audio = np.concatenate(list(chain.synthesize("Hello there. How are you?", "marin")))
        assert chain.last_served() == Served("tone", None)
        assert len(audio) == int(sum(len(c) for c in tone.synthesize("Hello there. How are you?")) * 24000 / 16000)
    list(chain.synthesize("Hi.", "marin"))
    assert chain.last_served() == Served("elevenlabs", "elevenlabs/eleven_flash_v2_5")


# ------------------------------------------------------------------------------------------ config
def test_registry_validates_cloud_stages_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "DEEPGRAM_API_KEY", "ELEVENLABS_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        resolve_stage("llm", StageConfig(type="anthropic"))
    with pytest.raises(ConfigError, match="DEEPGRAM_API_KEY"):
        resolve_stage("stt", StageConfig(type="deepgram"))
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        resolve_stage("tts", StageConfig(type="elevenlabs"))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        resolve_stage("tts", StageConfig(type="openai-compatible"))
    resolve_stage("tts", StageConfig(type="openai-compatible", baseUrl="http://127.0.0.1:8880/v1"))  # no key needed
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)
    resolve_stage("stt", StageConfig(type="deepgram", model="nova-2", endpointing=200))
    with pytest.raises(ConfigError, match="in local.llm.chain\\[1\\].*ANTHROPIC_API_KEY"):
        resolve_stage("llm", StageConfig.model_validate({"type": "fallback", "chain": [{"type": "echo"},
                                                                                       {"type": "anthropic"}]}))
    with pytest.raises(ConfigError, match="unknown option 'chian'"):
        resolve_stage("llm", StageConfig.model_validate({"type": "fallback", "chian": []}))
    with pytest.raises(ConfigError, match="cannot contain another fallback"):
        resolve_stage("tts", StageConfig.model_validate({"type": "fallback", "chain": [{"type": "fallback"}]}))
    local = LocalConfig.model_validate({"prices": {"deepgram/nova-3": {"perMinute": -1}}})
    with pytest.raises(ConfigError, match="perMinute must be a number >= 0"):
        check_stages(local)


def test_cost_report_prices_each_stage() -> None:
    prices = StagePrices({"deepgram/nova-3": {"perMinute": 0.01}})
    report = cost_report(prices, {
        "stt": {Served("deepgram", "deepgram/nova-3"): StageUse(audio_seconds=30)},
        "llm": {Served("anthropic", "anthropic/claude-haiku-4-5"): StageUse(input_tokens=1000, output_tokens=100)},
        "tts": {Served("elevenlabs", "elevenlabs/eleven_flash_v2_5"): StageUse(characters=200, audio_seconds=12),
                Served("piper", None): StageUse(characters=50)},
    })
    assert report["stages"]["stt"]["usd"] == pytest.approx(0.005)
    assert report["stages"]["llm"]["usd"] == pytest.approx(0.001 + 0.0005)
    assert report["stages"]["tts"]["usd"] == pytest.approx(0.01)
    assert report["total_usd"] == pytest.approx(0.0165)
    assert [p["priced"] for p in report["stages"]["tts"]["providers"]] == [True, False]
    assert prices.get("anthropic/claude-haiku-4-5-20251001") == prices.get("anthropic/claude-haiku-4-5")


def test_cost_bench_realtime_accounting() -> None:
    """The cost bench bills OpenAI Realtime's context as OpenAI does: earlier assistant audio is input audio again,
    and what the previous response already sent is priced as cached input (or not, in the no-cache figure)."""
    from voicecall.bench.cost import _realtime_cost

    def usage(text_in: int, audio_in: int, audio_out: int) -> dict[str, Any]:
        return {"input_tokens": text_in + audio_in, "output_tokens": audio_out,
                "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in, "cached_tokens": 0},
                "output_token_details": {"text_tokens": 0, "audio_tokens": audio_out}}

    rt = _realtime_cost([{"usage": usage(100, 20, 200)}, {"usage": usage(150, 40, 100)}])
    # gpt-realtime: text in $4, cached $0.40, audio in $32, cached $0.40, audio out $64 (per 1M)
    first = 100 * 4 + 20 * 32 + 200 * 64
    second_plain = 150 * 4 + (40 + 200) * 32 + 100 * 64
    second_cached = 50 * 4 + 100 * 0.4 + (240 - 20) * 32 + 20 * 0.4 + 100 * 64
    assert rt["usd_no_cache"] == pytest.approx((first + second_plain) / 1e6)
    assert rt["usd_cached"] == pytest.approx((first + second_cached) / 1e6)
