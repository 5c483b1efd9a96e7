"""Anthropic Claude as the LLM (``llm: {type: anthropic}``): the Messages API with streaming server-sent events.

``POST {baseUrl}/v1/messages`` with ``stream: true``, headers ``x-api-key`` and ``anthropic-version``. The SSE
stream is ``message_start`` (input usage) → per content block ``content_block_start`` / ``content_block_delta`` /
``content_block_stop`` → ``message_delta`` (stop reason, output usage) → ``message_stop``, with ``ping`` and
``error`` events possible anywhere. Mapping:

* ``text_delta`` → :class:`TextDelta`;
* a ``tool_use`` block → :class:`ToolCallDelta` (its ``id`` becomes the Realtime ``call_id``, the block index the
  delta index), each ``input_json_delta.partial_json`` → more arguments;
* ``message_start.usage.input_tokens`` (+ cache reads/writes) and ``message_delta.usage.output_tokens`` →
  :class:`LLMUsage`.

Requests: chat-style messages are converted to the Messages shape: system messages → ``system``; an assistant
message's ``tool_calls`` → ``tool_use`` blocks (arguments parsed as JSON); a ``tool`` message → a user
``tool_result`` block; consecutive messages of one role are merged (the API wants alternation), and a user turn
is put first when the conversation starts with the assistant. Realtime ``tool_choice`` maps ``auto``→``auto``,
``required``→``any``, ``none``→``none``, ``{"type": "function", "name": X}``→``{"type": "tool", "name": X}``.

Failures (HTTP 401/429/5xx with the vendor's JSON error body, an ``error`` event, a stream that ends before
``message_stop``, no data for ``timeout`` seconds) raise :class:`~voicecall.speech.cloud.CloudLLMError` with the
key scrubbed; a 429 carries its ``retry-after``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import ChatMessage, FunctionTool, LLMChunk, LLMUsage, TextDelta, ToolCallDelta, ToolChoice
from .cloud import CloudLLMError, LoopClients, http_failure, resolve_key, transport_failure

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-haiku-4-5"
API_VERSION = "2023-06-01"


def anthropic_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    """Realtime ``tool_choice`` → Messages API ``tool_choice``."""
    if isinstance(choice, dict):
        name = choice.get("name") or (choice.get("function") or {}).get("name") or ""
        return {"type": "tool", "name": name}
    return {"type": {"required": "any", "none": "none"}.get(choice, "auto")}


def _blocks(msg: ChatMessage) -> list[dict[str, Any]]:
    if msg.role == "tool":
        return [{"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.content or ""}]
    out: list[dict[str, Any]] = []
    if msg.content:
        out.append({"type": "text", "text": msg.content})
    for call in msg.tool_calls or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = {"_raw": fn.get("arguments")}
        out.append({"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name") or "",
                    "input": args if isinstance(args, dict) else {"value": args}})
    return out


def to_anthropic(messages: list[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    """Chat messages → ``(system, messages)`` in the Messages API shape (alternating roles, user first)."""
    system = "\n\n".join(m.content or "" for m in messages if m.role == "system" and m.content)
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": "(The call has started.)"}]})
    return system, out


class AnthropicLLM:
    """Streaming client for Claude. Options: ``model`` (default ``claude-haiku-4-5``), ``apiKey`` (default: the
    ``ANTHROPIC_API_KEY`` environment variable; required), ``baseUrl`` (default ``https://api.anthropic.com``),
    ``maxTokens`` (300), ``temperature`` (0.7), ``timeout`` (seconds to connect and between stream reads, 10),
    ``anthropicVersion`` (``2023-06-01``)."""

    name = "anthropic"
    vendor = "Anthropic"

    def __init__(self, model: str = DEFAULT_MODEL, api_key: str | None = None,
                 base_url: str = "https://api.anthropic.com", max_tokens: int = 300, temperature: float = 0.7,
                 timeout: float = 10.0, anthropic_version: str = API_VERSION) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"llm.baseUrl must start with http:// or https:// (got {base_url!r})")
        self._key = resolve_key(api_key, "ANTHROPIC_API_KEY", "llm type 'anthropic'")
        assert self._key is not None
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + ("/messages" if self.base_url.endswith("/v1") else "/v1/messages")
        self.model = model
        self.billing = f"anthropic/{model}"
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.timeout = float(timeout)
        self._http = LoopClients({"x-api-key": self._key.get(), "anthropic-version": anthropic_version,
                                  "content-type": "application/json", "accept": "text/event-stream"}, self.timeout)

    def __repr__(self) -> str:
        return f"AnthropicLLM(base_url={self.base_url!r}, model={self.model!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    def body(self, messages: list[ChatMessage], tools: list[FunctionTool] | None, tool_choice: ToolChoice,
             max_tokens: int | None) -> dict[str, Any]:
        system, msgs = to_anthropic(messages)
        body: dict[str, Any] = {
            "model": self.model, "messages": msgs, "stream": True, "temperature": self.temperature,
            "max_tokens": max_tokens if max_tokens and max_tokens > 0 else self.max_tokens,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description,
                              "input_schema": t.parameters or {"type": "object", "properties": {}}} for t in tools]
            body["tool_choice"] = anthropic_tool_choice(tool_choice)
        return body

    async def stream_chat(self, messages: list[ChatMessage], *, tools: list[FunctionTool] | None = None,
                          tool_choice: ToolChoice = "auto", max_tokens: int | None = None) -> AsyncIterator[LLMChunk]:
        """Stream Claude's reply. Raises :class:`CloudLLMError` on any failure."""
        body = self.body(messages, tools, tool_choice, max_tokens)
        try:
            async with self._http.get().stream("POST", self.url, json=body) as resp:
                if resp.status_code >= 400:
                    raise http_failure(self.vendor, f"POST {self.url}", resp.status_code, await resp.aread(),
                                       resp.headers, self._key, llm=True)
                async for chunk in self._parse(resp):
                    yield chunk
        except CloudLLMError:
            raise
        except httpx.HTTPError as exc:
            raise transport_failure(self.vendor, exc, self._key, self.timeout, llm=True) from None

    async def _parse(self, resp: httpx.Response) -> AsyncIterator[LLMChunk]:
        usage = LLMUsage()
        tool_blocks: set[int] = set()
        event = ""
        stopped = False
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                continue
            if not line.startswith("data:"):
                continue
            try:
                obj = json.loads(line[5:].strip())
            except ValueError:
                raise CloudLLMError(f"{self.vendor} sent malformed JSON in its event stream", "protocol") from None
            etype = obj.get("type", event) if isinstance(obj, dict) else event
            if etype == "message_start":
                u = (obj.get("message") or {}).get("usage") or {}
                usage.input_tokens = sum(int(u.get(k) or 0) for k in (
                    "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
                usage.output_tokens = int(u.get("output_tokens") or 0)
            elif etype == "content_block_start":
                block = obj.get("content_block") or {}
                idx = int(obj.get("index") or 0)
                if block.get("type") == "tool_use":
                    tool_blocks.add(idx)
                    yield ToolCallDelta(idx, "", block.get("name") or "", block.get("id") or None)
                elif block.get("type") == "text" and block.get("text"):
                    yield TextDelta(block["text"])
            elif etype == "content_block_delta":
                delta = obj.get("delta") or {}
                idx = int(obj.get("index") or 0)
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextDelta(delta["text"])
                elif delta.get("type") == "input_json_delta" and idx in tool_blocks and delta.get("partial_json"):
                    yield ToolCallDelta(idx, delta["partial_json"])
            elif etype == "message_delta":
                u = obj.get("usage") or {}
                if u.get("output_tokens") is not None:
                    usage.output_tokens = int(u["output_tokens"])
            elif etype == "message_stop":
                stopped = True
                break
            elif etype == "error":
                err = obj.get("error") or {}
                kind = {"overloaded_error": "server", "api_error": "server", "rate_limit_error": "rate_limit",
                        "authentication_error": "auth"}.get(err.get("type", ""), "server")
                raise CloudLLMError(self._key_scrub(f"{self.vendor} reported an error mid-stream: "
                                                    f"{err.get('type', 'error')}: {err.get('message', '')}"), kind)
        if not stopped:
            raise CloudLLMError(f"{self.vendor} dropped the stream before message_stop", "dropped")
        yield usage

    def _key_scrub(self, text: str) -> str:
        return self._key.scrub(text) if self._key else text
