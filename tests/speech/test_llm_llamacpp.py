"""SmolLM2-135M on llama.cpp: streaming, grammar-forced function calls, cancellation, tool history."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from voicecall.speech.base import LLM, ChatMessage, FunctionTool, LLMUsage, TextDelta, ToolCallDelta
from voicecall.speech.llm_llamacpp import (
    AutoToolParser,
    RequiredCallParser,
    StopScanner,
    bound_strings,
    qa_prompt,
    render_messages,
)

SYSTEM = ChatMessage("system", "You are a helpful voice assistant. Answer in one short sentence.")
WEATHER = FunctionTool(
    "get_weather", "Get the current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"},
                                      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
     "required": ["city"]},
)
TIMER = FunctionTool(
    "set_timer", "Start a countdown timer",
    {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
)


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """Enough of JSON schema for these tests (type, properties, required, enum)."""
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    checks = {"object": dict, "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list}
    if kind and not isinstance(value, checks[kind]):
        return False
    if kind == "integer" and isinstance(value, bool):
        return False
    if kind == "object":
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        return all(k in props and conforms(v, props[k]) for k, v in value.items())
    return True


async def collect(llm: LLM, messages: list[ChatMessage], **kw: Any) -> list[Any]:
    return [chunk async for chunk in llm.stream_chat(messages, **kw)]


async def test_streams_an_answer_with_usage(llama: Any) -> None:
    assert isinstance(llama, LLM)
    chunks = await collect(llama, [SYSTEM, ChatMessage("user", "What is the capital of France?")])
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert len([c for c in chunks if isinstance(c, TextDelta)]) > 1  # streamed, not one block
    assert "paris" in text.lower(), text
    usage = chunks[-1]
    assert isinstance(usage, LLMUsage) and usage.input_tokens > 20 and 0 < usage.output_tokens <= 120


async def test_named_function_call_is_valid_json(llama: Any) -> None:
    chunks = await collect(llama, [SYSTEM, ChatMessage("user", "What's the weather like in Paris?")],
                           tools=[WEATHER, TIMER], tool_choice={"type": "function", "name": "get_weather"})
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls and not any(isinstance(c, TextDelta) for c in chunks)
    assert calls[0].name == "get_weather" and calls[0].call_id and calls[0].call_id.startswith("call_")
    assert all(c.index == 0 and c.name is None and c.call_id is None for c in calls[1:])
    args = json.loads("".join(c.arguments for c in calls))
    assert conforms(args, WEATHER.parameters), args
    assert isinstance(chunks[-1], LLMUsage)


async def test_required_function_call_picks_a_declared_tool(llama: Any) -> None:
    chunks = await collect(llama, [SYSTEM, ChatMessage("user", "Set a timer for ten minutes.")],
                           tools=[WEATHER, TIMER], tool_choice="required")
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].name in ("get_weather", "set_timer")
    tool = WEATHER if calls[0].name == "get_weather" else TIMER
    args = json.loads("".join(c.arguments for c in calls))
    assert conforms(args, tool.parameters), args


async def test_closing_the_stream_stops_generation(llama: Any) -> None:
    stream = llama.stream_chat([ChatMessage("user", "Write a very long story about a dragon and a knight.")],
                               max_tokens=1000)
    got = 0
    async for chunk in stream:
        got += isinstance(chunk, TextDelta)
        if got == 3:
            break
    t0 = time.perf_counter()
    await stream.aclose()
    while llama._pool.free < llama._pool.size:  # the worker gives the context back when it stops
        # ~10 ms when idle. 1000 tokens take ~8 s on an idle machine and longer on a busy one, so a generation that
        # did not stop cannot free its slot within 5 s, however loaded the machine is.
        assert time.perf_counter() - t0 < 5.0, "generation did not stop"
        await asyncio.sleep(0.002)
    # and the model is immediately usable again
    chunks = await collect(llama, [ChatMessage("user", "Say hello.")], max_tokens=8)
    assert isinstance(chunks[-1], LLMUsage) and chunks[-1].output_tokens <= 8


async def test_cancelling_the_consumer_stops_generation(llama: Any) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in llama.stream_chat([ChatMessage("user", "Count from one to five hundred.")], max_tokens=1000):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 60)  # generous: the first token waits for a free core on a busy machine
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = time.perf_counter()
    while llama._pool.free < llama._pool.size:
        # ~10 ms when idle. 1000 tokens take ~8 s on an idle machine and longer on a busy one, so a generation that
        # did not stop cannot free its slot within 5 s, however loaded the machine is.
        assert time.perf_counter() - t0 < 5.0, "generation did not stop"
        await asyncio.sleep(0.002)


async def test_tool_results_in_history_become_words(llama: Any) -> None:
    history = [
        SYSTEM,
        ChatMessage("user", "What's the weather in Paris?"),
        ChatMessage("assistant", None, tool_calls=[{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]),
        ChatMessage("tool", '{"temperature_c": 21, "sky": "sunny"}', tool_call_id="call_1"),
    ]
    turns = render_messages(history)
    # no tool syntax for the model to copy: the result is words in the user's turn
    assert [t["role"] for t in turns] == ["system", "user"]
    assert turns[1]["content"].endswith("(get_weather result: temperature c: 21; sky: sunny)")
    prompt = qa_prompt(turns)
    assert prompt.endswith("Facts: temperature c: 21; sky: sunny.\nQuestion: What's the weather in Paris?\nAnswer:")
    assert "<" not in prompt and "{" not in prompt
    chunks = await collect(llama, history, tools=[WEATHER], tool_choice="auto")  # after a result: words, no call
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text.strip() and not any(isinstance(c, ToolCallDelta) for c in chunks)
    assert "Question:" not in text and "\n" not in text.strip()  # the qa prompt's stop strings end the answer


async def test_qa_prompt_lays_out_instructions_history_and_the_primed_answer(llama: Any) -> None:
    """The session's instructions first, then the example exchange, the conversation in order, the new question and
    the restated start of its answer, which is streamed first and completed by the model."""
    history = [
        ChatMessage("system", "You are Ada, a ship's computer. Answer briefly."),
        ChatMessage("user", "Hello there."),
        ChatMessage("assistant", "Hello, I am Ada."),
        ChatMessage("user", "What is the capital of Italy?"),
    ]
    plan = llama._plan(history, None, "auto", None)
    prompt = llama._counter.detokenize(plan.prompt_tokens).decode()
    assert prompt.startswith("You are Ada, a ship's computer. Answer briefly. Give the correct fact.\n\n"
                             "Question: What is the capital of France?")
    assert prompt.endswith("Question: Hello there.\nAnswer: Hello, I am Ada.\n\n"
                           "Question: What is the capital of Italy?\nAnswer: The capital of Italy is")
    assert plan.prefix == "The capital of Italy is"
    chunks = await collect(llama, history)
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert texts[0] == "The capital of Italy is" and texts[1].startswith(" ")
    assert "rome" in "".join(texts).lower()
    # spoken arithmetic reaches the model as a fact, like a function result
    plan = llama._plan([SYSTEM, ChatMessage("user", "What is ten minus three?")], None, "auto", None)
    prompt = llama._counter.detokenize(plan.prompt_tokens).decode()
    assert prompt.endswith("Facts: 10 - 3 = 7.\nQuestion: What is ten minus three?\n"
                           "Answer: Ten minus three is 7")


async def test_the_restated_start_comes_before_the_context_is_free(llama: Any) -> None:
    """A primed answer's first words need no model: they are streamed while another generation (a dropped
    speculative answer) still holds the only context, and the model completes them once it is free."""
    held = llama._pool.acquire_nowait()
    assert held is not None and llama._pool.free == 0
    stream = llama.stream_chat([SYSTEM, ChatMessage("user", "What is the capital of Italy?")])
    try:
        first = await asyncio.wait_for(stream.__anext__(), 30)
        assert first == TextDelta("The capital of Italy is") and llama._pool.free == 0
        rest = asyncio.ensure_future(stream.__anext__())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not rest.done() and len(llama._pool._waiters) == 1  # the model's part waits for the context
    finally:
        llama._pool.release(held)
    chunks = [await rest] + [c async for c in stream]
    text = first.text + "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert "rome" in text.lower() and isinstance(chunks[-1], LLMUsage), text
    # unprimed answers (no question mark, a tool call) wait for the context as before
    held = await asyncio.wait_for(llama._pool.acquire(), 30)  # once the worker has given it back
    stream = llama.stream_chat([SYSTEM, ChatMessage("user", "Say hello.")], max_tokens=8)
    nxt = asyncio.ensure_future(stream.__anext__())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not nxt.done()
    llama._pool.release(held)
    assert isinstance(await nxt, (TextDelta, LLMUsage))
    await stream.aclose()


async def test_a_short_evaluation_after_a_cached_history_runs_on_one_thread(llama: Any) -> None:
    """The usual evaluation (a new question after a cached prefix) takes one thread, leaving the other core to the
    recogniser's pause decode; a long uncached prompt takes ``nThreadsBatch``."""
    await collect(llama, [SYSTEM, ChatMessage("user", "What is the capital of Italy?")], max_tokens=4)
    slot = await asyncio.wait_for(llama._pool.acquire(), 30)
    try:
        same_start = llama._plan([SYSTEM, ChatMessage("user", "What is the capital of Spain?")], None, "auto", None)
        assert llama.eval_threads(slot.llama, same_start.prompt_tokens) == 1
        other = ChatMessage("system", "You are Ada, the ship's computer of the research vessel Meridian. Answer the "
                                      "crew briefly and precisely, in plain words, and never use lists or markup.")
        fresh = llama._plan([other, ChatMessage("user", "What is the capital of Spain?")], None, "auto", None)
        assert llama.eval_threads(slot.llama, fresh.prompt_tokens) == llama.n_threads_batch == 2
    finally:
        llama._pool.release(slot)


def test_stop_scanner_holds_only_what_could_start_a_stop() -> None:
    s = StopScanner(("\nQuestion:", "\n\n"))
    assert s.feed("\n ") == ("", False)  # leading whitespace is never a stop
    assert s.feed("Paris is") == ("Paris is", False)
    assert s.feed(" nice.\nQue") == (" nice.", False)
    assert s.feed("stion: what") == ("", True) and s.stopped
    t = StopScanner(("\nQuestion:",))
    assert t.feed("a\nQx") == ("a\nQx", False)


def test_ten_thousand_messages_fit_the_context(llama: Any) -> None:
    """Direct callers too: a huge history is cut (oldest first) cheaply, and the newest question stays."""
    history = [SYSTEM] + [ChatMessage("user", f"Note {i}: remember the number {i}.") for i in range(10_000)]
    history.append(ChatMessage("user", "What is the capital of France?"))
    plan = llama._plan(history, None, "none", 24)
    assert len(plan.prompt_tokens) + plan.max_tokens <= llama.n_ctx
    prompt = llama._counter.detokenize(plan.prompt_tokens).decode()
    assert prompt.endswith("What is the capital of France?\nAnswer: The capital of France is") and "Note 9999:" in prompt
    assert "Note 0:" not in prompt
    assert llama.context_budget(None, "none", 24) < llama.n_ctx - 24


def test_auto_tool_parser_streams_text_and_extracts_calls() -> None:
    p = AutoToolParser({"get_weather"})
    out: list[Any] = []
    # the tag arrives split across pieces; ordinary text must not wait for the end
    out += p.feed("Let me check. <to")
    assert [c.text for c in out] == ["Let me check. "]
    out += p.feed('ol_call>{"name": "get_weather", "argu')
    out += p.feed('ments": {"city": "Paris"}}</tool_call> Done')
    out += p.finish()
    calls = [c for c in out if isinstance(c, ToolCallDelta)]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert "".join(c.text for c in out if isinstance(c, TextDelta)) == "Let me check. Done"
    # a "<" that turns out not to be the tag is released
    q = AutoToolParser({"x"})
    assert [c.text for c in q.feed("a <b")] == ["a <b"]
    assert [c.text for c in q.feed(" <tool")] == [" "] and [c.text for c in q.feed("box")] == ["<toolbox"]
    # unknown functions and junk are dropped, not spoken
    r = AutoToolParser({"x"})
    assert r.feed('<tool_call>{"name": "y", "arguments": {}}</tool_call>') == []
    assert r.feed("<tool_call>not json</tool_call>") == []


def test_required_parser_streams_only_the_arguments() -> None:
    p = RequiredCallParser()
    text = '{"name": "set_timer", "arguments": { "minutes": 10, "note": "a } b" }}'
    out = [c for i in range(0, len(text), 3) for c in p.feed(text[i:i + 3])]
    assert out[0].name == "set_timer" and all(c.name is None for c in out[1:])
    assert json.loads("".join(c.arguments for c in out)) == {"minutes": 10, "note": "a } b"}


def test_free_strings_are_bounded_in_grammars() -> None:
    bounded = bound_strings(WEATHER.parameters, 50)
    assert bounded["properties"]["city"]["maxLength"] == 50
    assert "maxLength" not in bounded["properties"]["unit"]  # enum: already bounded
    assert "maxLength" not in WEATHER.parameters["properties"]["city"]  # the client's schema is untouched
