"""A fake LLM that repeats the user: "You said: <last user text>." — for tests and benchmarks.

It loads nothing and costs nothing, so the concurrency benchmark ("engine answering by text echo") measures the
engine and transport rather than a model. The answer is streamed word by word (``delay`` seconds between words,
default 0). When ``tool_choice`` names a function (or is ``"required"``), it emits one call with arguments built
from the function's schema: required strings get the user's text, numbers 0, booleans false, enums their first
value.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from .base import ChatMessage, FunctionTool, LLMChunk, LLMError, LLMUsage, TextDelta, ToolCallDelta, ToolChoice


def _words(text: str) -> int:
    return len(text.split())


def simple_arguments(parameters: dict[str, Any], text: str) -> dict[str, Any]:
    """Minimal arguments that satisfy the ``required`` part of a parameters schema."""
    props: dict[str, Any] = parameters.get("properties") or {}
    out: dict[str, Any] = {}
    for key in parameters.get("required") or []:
        spec = props.get(key) or {}
        if spec.get("enum"):
            out[key] = spec["enum"][0]
        elif "const" in spec:
            out[key] = spec["const"]
        else:
            kind = spec.get("type", "string")
            kind = kind[0] if isinstance(kind, list) and kind else kind
            out[key] = {"integer": 0, "number": 0, "boolean": False, "array": [], "object": {},
                        "null": None}.get(kind, text)
    return out


class EchoLLM:
    """Echo "LLM" (tests/benchmarks). Options: ``delay`` (seconds between streamed words, default 0)."""

    name = "echo"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = float(delay)

    async def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[FunctionTool] | None = None,
        tool_choice: ToolChoice = "auto",
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Yield ``You said: ….`` word by word (or one function call), then an :class:`LLMUsage`."""
        last = next((m.content or "" for m in reversed(messages) if m.role == "user"), "").strip()
        prompt_tokens = sum(_words(m.content or "") for m in messages)
        tools = tools or []
        tool: FunctionTool | None = None
        if isinstance(tool_choice, dict):
            wanted = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
            tool = next((t for t in tools if t.name == wanted), None)
            if tool is None:
                raise LLMError(f"tool_choice names function {wanted!r}, which is not among the session's tools")
        elif tool_choice == "required" and tools:
            tool = tools[0]
        if tool is not None:
            args = json.dumps(simple_arguments(tool.parameters or {}, last))
            yield ToolCallDelta(0, args, tool.name, "call_" + secrets.token_hex(12))
            yield LLMUsage(prompt_tokens, _words(args))
            return
        answer = f"You said: {last.rstrip('.!?')}." if last else "You said nothing."
        words = answer.split(" ")
        if max_tokens is not None and max_tokens > 0:
            words = words[:max_tokens]
        for i, word in enumerate(words):
            if i:
                await asyncio.sleep(self.delay)  # 0 still lets other tasks run
            yield TextDelta(word if i == 0 else " " + word)
        yield LLMUsage(prompt_tokens, len(words))
