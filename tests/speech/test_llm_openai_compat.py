"""The OpenAI-compatible LLM adapter against a REAL local server.

``python -m llama_cpp.server`` (llama-cpp-python's OpenAI-compatible server, serving SmolLM2-135M) stands in for
vLLM / Ollama / a hosted endpoint: same ``/v1/chat/completions`` SSE protocol. Everything is on 127.0.0.1. The
error cases use tiny real loopback servers that misbehave on purpose (never answer; answer with broken SSE).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from voicecall.speech.base import LLM, ChatMessage, FunctionTool, LLMError, LLMUsage, TextDelta, ToolCallDelta
from voicecall.speech.llm_llamacpp import default_model_path
from voicecall.speech.llm_openai_compat import OpenAICompatLLM, chat_tool_choice

KEY = "sk-test-SECRET-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """llama_cpp.server on a free loopback port, requiring ``KEY``; yields its base URL (…/v1)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
           "--n_threads_batch", "2", "--api_key", KEY, "--verbose", "False",
           # llama-cpp-python's OpenAI-style tool calling (grammar-constrained calls, streamed as tool_calls deltas)
           "--chat_format", "chatml-function-calling"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "NO_PROXY": "*"})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                if httpx.get(base + "/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not start within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def collect(llm: LLM, messages: list[ChatMessage], **kw: Any) -> list[Any]:
    return [c async for c in llm.stream_chat(messages, **kw)]


async def test_streams_text_and_usage(server: str) -> None:
    llm = OpenAICompatLLM(server, model="smollm2", api_key=KEY, max_tokens=40, temperature=0.2)
    chunks = await collect(llm, [ChatMessage("system", "Answer in one short sentence."),
                                 ChatMessage("user", "What is the capital of France?")])
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert len(texts) > 1 and "paris" in "".join(texts).lower()
    # llama_cpp.server ignores stream_options.include_usage (vLLM, Ollama and OpenAI honour it): no usage is
    # invented then. The mapping of a usage chunk is covered by test_tool_call_deltas_are_mapped.
    assert not any(isinstance(c, LLMUsage) for c in chunks[:-1])
    await llm.aclose()


async def test_streams_a_tool_call_from_the_real_server(server: str) -> None:
    """A forced function call comes back from llama_cpp.server as streamed ``tool_calls`` deltas: the name and id
    first, then the arguments piece by piece, which add up to JSON matching the schema."""
    tool = FunctionTool("get_weather", "Get the weather in a city",
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    llm = OpenAICompatLLM(server, model="smollm2", api_key=KEY, max_tokens=40, temperature=0.2)
    chunks = await collect(llm, [ChatMessage("user", "What is the weather in Paris?")], tools=[tool],
                           tool_choice={"type": "function", "name": "get_weather"})
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert len([c for c in calls if c.arguments]) > 1, "arguments arrive in several deltas"
    assert calls[0].name == "get_weather" and calls[0].call_id
    assert {c.index for c in calls} == {0}
    args = json.loads("".join(c.arguments for c in calls))
    assert isinstance(args.get("city"), str) and args["city"]
    assert not [c for c in chunks if isinstance(c, TextDelta) and c.text.strip()]
    assert chat_tool_choice({"type": "function", "name": "get_time"}) == {
        "type": "function", "function": {"name": "get_time"}}
    assert chat_tool_choice("required") == "required"
    await llm.aclose()


async def test_wrong_port_is_an_llm_error() -> None:
    llm = OpenAICompatLLM(f"http://127.0.0.1:{free_port()}/v1", api_key=KEY, timeout=5)
    with pytest.raises(LLMError, match="cannot connect") as info:
        await collect(llm, [ChatMessage("user", "hi")])
    assert KEY not in str(info.value)


async def test_http_errors_never_show_the_key(server: str) -> None:
    wrong_path = OpenAICompatLLM(server.removesuffix("/v1") + "/nope/v1", api_key=KEY)
    with pytest.raises(LLMError, match="404") as info:
        await collect(wrong_path, [ChatMessage("user", "hi")])
    assert KEY not in str(info.value) and KEY not in repr(wrong_path)
    bad_key = OpenAICompatLLM(server, api_key=KEY + "-wrong")
    with pytest.raises(LLMError, match="401") as info:
        await collect(bad_key, [ChatMessage("user", "hi")])
    assert KEY not in str(info.value)


async def _serve(handler: Any) -> tuple[asyncio.AbstractServer, str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"http://127.0.0.1:{port}/v1"


async def test_timeout_and_malformed_stream() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                     b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\ndata: {not json\n\n')
        await writer.drain()
        writer.close()

    srv, url = await _serve(silent)
    async with srv:
        with pytest.raises(LLMError, match="timed out"):
            await collect(OpenAICompatLLM(url, api_key=KEY, timeout=0.5), [ChatMessage("user", "hi")])
    srv, url = await _serve(broken)
    async with srv:
        got: list[Any] = []
        with pytest.raises(LLMError, match="malformed"):
            async for c in OpenAICompatLLM(url, api_key=KEY).stream_chat([ChatMessage("user", "hi")]):
                got.append(c)
        assert got == [TextDelta("Hi")]


async def test_tool_call_deltas_are_mapped() -> None:
    """Chat-completions tool-call chunks (as vLLM/OpenAI send them) become ToolCallDelta."""
    events = [
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"f","arguments":""}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"x\\": 1"}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}}]}',
        '{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5}}',
    ]

    async def tools(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        body = await reader.readexactly(length)
        assert b'"tool_choice":{"type":"function","function":{"name":"f"}}' in body.replace(b" ", b"")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                     + b"".join(f"data: {e}\n\n".encode() for e in events) + b"data: [DONE]\n\n")
        await writer.drain()
        writer.close()

    srv, url = await _serve(tools)
    async with srv:
        chunks = await collect(OpenAICompatLLM(url), [ChatMessage("user", "hi")],
                               tools=[FunctionTool("f")], tool_choice={"type": "function", "name": "f"})
    assert chunks[0] == ToolCallDelta(0, "", "f", "call_a")
    assert "".join(c.arguments for c in chunks if isinstance(c, ToolCallDelta)) == '{"x": 1}'
    assert chunks[-1] == LLMUsage(12, 5)
