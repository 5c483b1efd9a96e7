"""Any OpenAI-compatible chat-completions server as the LLM: llama.cpp server, Ollama, vLLM, LM Studio, ...

Streams ``POST {baseUrl}/chat/completions`` with ``stream: true`` and ``stream_options.include_usage`` and maps
the SSE chunks: ``delta.content`` → :class:`TextDelta`, ``delta.tool_calls[]`` → :class:`ToolCallDelta`,
``usage`` → :class:`LLMUsage`. The GA realtime ``tool_choice`` ``{"type": "function", "name": X}`` is converted to
the chat-completions shape ``{"type": "function", "function": {"name": X}}``.

Every failure (connection refused, timeout, HTTP error, malformed stream) raises :class:`LLMError` with a
message that names the server and never contains the API key. One ``httpx.AsyncClient`` is kept per event loop
(connections are bound to the loop that opened them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import ChatMessage, FunctionTool, LLMChunk, LLMError, LLMUsage, TextDelta, ToolCallDelta, ToolChoice

log = logging.getLogger(__name__)


def chat_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    """GA realtime ``tool_choice`` → chat-completions ``tool_choice``."""
    if isinstance(choice, dict):
        if "function" in choice:  # already chat-completions shaped
            return choice
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return choice


class OpenAICompatLLM:
    """Streaming client for an OpenAI-compatible ``/chat/completions`` endpoint.

    Options: ``baseUrl`` (e.g. ``http://127.0.0.1:11434/v1``; required), ``model`` (default ``default``),
    ``apiKey`` (optional; sent as a Bearer token, never logged), ``maxTokens`` (default 200), ``temperature``
    (default 0.7), ``timeout`` (seconds to connect and between stream reads, default 30).
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        max_tokens: int = 200,
        temperature: float = 0.7,
        timeout: float = 30.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"llm.baseUrl must start with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.model_label = model
        self.billing = ("openai/" if "api.openai.com" in self.base_url else "openai-compatible/") + model
        """Price-table key (see :mod:`voicecall.speech.prices`); servers on this machine are not in the table."""
        # OpenAI's own API: the key may come from OPENAI_API_KEY (local servers need none)
        self._key = api_key or (os.environ.get("OPENAI_API_KEY") if "api.openai.com" in base_url else None) or None
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.timeout = float(timeout)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatLLM(base_url={self.base_url!r}, model={self.model!r})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                headers = {"Accept": "text/event-stream"}
                if self._key:
                    headers["Authorization"] = f"Bearer {self._key}"
                client = httpx.AsyncClient(
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                )
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop."""
        with self._clients_lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _body(
        self, messages: list[ChatMessage], tools: list[FunctionTool] | None, tool_choice: ToolChoice,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens if max_tokens and max_tokens > 0 else self.max_tokens,
            "temperature": self.temperature,
        }
        if tools:
            body["tools"] = [t.to_openai() for t in tools]
            body["tool_choice"] = chat_tool_choice(tool_choice)
        return body

    async def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[FunctionTool] | None = None,
        tool_choice: ToolChoice = "auto",
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]:
        """Stream the reply from the server. Raises :class:`LLMError` on any failure."""
        body = self._body(messages, tools, tool_choice, max_tokens)
        where = f"LLM server {self.base_url}"
        try:
            async with self._client().stream("POST", self.url, json=body) as resp:
                if resp.status_code >= 400:
                    raw = (await resp.aread())[:2000].decode("utf-8", "replace")
                    detail = raw
                    try:
                        err = json.loads(raw).get("error", raw)
                        detail = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                    except (ValueError, AttributeError):
                        pass
                    raise LLMError(self._scrub(
                        f"{where} answered HTTP {resp.status_code} to POST {self.url}: {detail.strip()[:500]}"
                    ))
                async for chunk in self._parse(resp, where):
                    yield chunk
        except LLMError:
            raise
        except httpx.ConnectError as exc:
            raise LLMError(self._scrub(f"cannot connect to {where}: {exc or 'connection refused'}")) from None
        except httpx.TimeoutException:
            raise LLMError(f"{where} timed out (no data for {self.timeout:g} s)") from None
        except httpx.HTTPError as exc:
            raise LLMError(self._scrub(f"{where} failed: {type(exc).__name__}: {exc}")) from None

    async def _parse(self, resp: httpx.Response, where: str) -> AsyncIterator[LLMChunk]:
        usage: LLMUsage | None = None
        seen_data = False
        async for line in resp.aiter_lines():
            if not line or line.startswith(":"):
                continue
            if not line.startswith("data:"):
                if line.startswith(("event:", "id:", "retry:")):
                    continue
                raise LLMError(self._scrub(f"{where} sent a malformed event stream line: {line[:200]!r}"))
            data = line[5:].strip()
            if data == "[DONE]":
                break
            seen_data = True
            try:
                obj = json.loads(data)
            except ValueError:
                raise LLMError(self._scrub(f"{where} sent malformed JSON in its stream: {data[:200]!r}")) from None
            if not isinstance(obj, dict):
                raise LLMError(f"{where} sent an unexpected stream event")
            if obj.get("error"):
                err = obj["error"]
                msg = err.get("message", str(err)) if isinstance(err, dict) else str(err)
                raise LLMError(self._scrub(f"{where} reported an error: {msg[:500]}"))
            if obj.get("usage"):
                u = obj["usage"]
                usage = LLMUsage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
            for choice in obj.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content")
                if text:
                    yield TextDelta(text)
                for call in delta.get("tool_calls") or []:
                    fn = call.get("function") or {}
                    yield ToolCallDelta(
                        index=int(call.get("index") or 0),
                        arguments=fn.get("arguments") or "",
                        name=fn.get("name") or None,
                        call_id=call.get("id") or None,
                    )
        if not seen_data:
            raise LLMError(f"{where} closed the stream without sending any data")
        if usage is not None:
            yield usage
