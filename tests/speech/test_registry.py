"""Stage registry (validation, caching, progress), voice map and the echo LLM."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from voicecall.config import ConfigError, LocalConfig, StageConfig
from voicecall.speech.base import ChatMessage, FunctionTool, LLMUsage, TextDelta, ToolCallDelta
from voicecall.speech.llm_echo import EchoLLM
from voicecall.speech.registry import adapter_types, load_pipeline, load_stage, resolve_stage
from voicecall.speech.voices import OPENAI_VOICES, VoiceMap

TEST_STACK = {"vad": StageConfig(type="energy"), "stt": StageConfig(type="pocketsphinx"),
              "llm": StageConfig(type="echo"), "tts": StageConfig(type="tone")}


def test_same_config_same_objects_and_progress() -> None:
    messages: list[str] = []
    a = load_pipeline(LocalConfig(**TEST_STACK), progress=messages.append)
    b = load_pipeline(LocalConfig(**TEST_STACK))
    assert (a.vad, a.stt, a.llm, a.tts) == (b.vad, b.stt, b.llm, b.tts)
    assert all(x is y for x, y in zip((a.vad, a.stt, a.llm, a.tts), (b.vad, b.stt, b.llm, b.tts)))
    assert any(m.startswith(("loading llm echo", "llm echo")) for m in messages)
    assert a.types == {"vad": "energy", "stt": "pocketsphinx", "llm": "echo", "tts": "tone", "eot": "smart-turn"}
    other = load_stage("llm", StageConfig(type="echo", delay=0.01))
    assert other is not a.llm  # other options, other object
    a.warm_up()


def test_concurrent_loads_build_once() -> None:
    cfg = StageConfig(type="tone", wordMs=77)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(load_stage("tts", cfg))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got)


def test_snake_case_options_are_accepted() -> None:
    _, opts = resolve_stage("tts", StageConfig(type="tone", word_ms=90))
    assert opts == {"wordMs": 90}


@pytest.mark.parametrize("stage, cfg, message", [
    ("llm", StageConfig(type="gpt-5"), "valid types: llama-cpp, openai-compatible, anthropic, echo, fallback"),
    ("tts", StageConfig(type="festival"), "valid types: piper, espeak, tone, elevenlabs, openai-compatible, fallback"),
    ("vad", StageConfig(type="silero", treshold=0.5), "unknown option 'treshold'"),
    ("llm", StageConfig(type="llama-cpp", maxTokens="many"), "maxTokens .* must be a integer|must be an integer"),
    ("llm", StageConfig(type="openai-compatible"), "needs the option 'baseUrl'"),
    ("llm", StageConfig(type="openai-compatible", baseUrl="ftp://x"), "http://"),
    ("tts", StageConfig(type="piper", modelPath="/nowhere/voice.onnx"), "not found"),
])
def test_configuration_errors_are_clear(stage: str, cfg: StageConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stage(stage, cfg)


def test_every_stage_is_validated_before_loading() -> None:
    with pytest.raises(ConfigError, match="local.tts.type"):
        load_pipeline(LocalConfig(**{**TEST_STACK, "tts": StageConfig(type="nope")}))
    assert adapter_types()["stt"] == ["whisper", "moonshine", "pocketsphinx", "deepgram", "openai-compatible",
                                      "fallback"]


def test_voice_maps() -> None:
    piper = VoiceMap("piper", ["en_US-joe-medium"])
    assert {piper.resolve(v).voice for v in OPENAI_VOICES} == {"en_US-joe-medium"}
    assert len({piper.resolve(v).speed for v in OPENAI_VOICES}) > 3
    espeak = VoiceMap("espeak", ["en-us", "en-us+f3", "en-us+m3", "en-us+f2", "en-us+m1", "en-us+f4", "en-us+m7",
                                 "en-us+m2", "en-us+f5", "en+m3"])
    assert espeak.resolve("marin").voice != espeak.resolve("cedar").voice
    assert espeak.resolve("MARIN") == espeak.resolve("marin") and espeak.resolve(None) == espeak.resolve("marin")
    with pytest.raises(ValueError, match="valid voices: alloy, ash"):
        espeak.resolve("darth")
    custom = VoiceMap("espeak", ["en-us", "en-us+f2"], {"marin": "en-us+f2@1.2", "robot": "en-us"})
    assert custom.resolve("marin").voice == "en-us+f2" and custom.resolve("marin").speed == 1.2
    assert "robot" in custom.names()
    with pytest.raises(ValueError, match="has no voice 'en-us\\+f9'"):
        VoiceMap("espeak", ["en-us"], {"marin": "en-us+f9"})


def test_pipeline_voice_helpers() -> None:
    p = load_pipeline(LocalConfig(**TEST_STACK, voice_map={"verse": "tone@1.3"}))
    assert set(OPENAI_VOICES) <= set(p.voice_names())
    assert p.local_voice("verse") == "tone" and p.voice_speed("verse") == 1.3
    with pytest.raises(ConfigError, match="local.voice"):
        load_pipeline(LocalConfig(**TEST_STACK, voice="darth"))


async def test_echo_llm() -> None:
    llm = EchoLLM()
    chunks = [c async for c in llm.stream_chat([ChatMessage("system", "x"), ChatMessage("user", "Turn on the light!")])]
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "You said: Turn on the light."
    assert len(chunks) > 3 and isinstance(chunks[-1], LLMUsage)
    tool = FunctionTool("lamp", "", {"type": "object", "properties": {
        "room": {"type": "string"}, "on": {"type": "boolean"}, "level": {"type": "string", "enum": ["low", "high"]}},
        "required": ["room", "on", "level"]})
    calls = [c async for c in llm.stream_chat([ChatMessage("user", "kitchen")], tools=[tool],
                                               tool_choice={"type": "function", "name": "lamp"})]
    assert isinstance(calls[0], ToolCallDelta) and calls[0].name == "lamp"
    assert calls[0].arguments == '{"room": "kitchen", "on": false, "level": "low"}'
