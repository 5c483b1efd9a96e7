"""Stand-in for Anthropic's Messages API (``POST /v1/messages``), written from Anthropic's public API reference:

* auth: ``x-api-key`` header, plus a required ``anthropic-version`` header;
* request: ``model``, ``max_tokens``, ``messages`` (``user``/``assistant``, string or content blocks: ``text``,
  ``tool_use`` {id, name, input}, ``tool_result`` {tool_use_id, content}), optional ``system``, ``tools``
  ({name, description, input_schema}), ``tool_choice`` ({type: auto|any|tool|none, name}), ``stream``;
* streaming: SSE with ``event: <type>`` + ``data: <json>``: ``message_start`` → ``content_block_start`` /
  ``content_block_delta`` (``text_delta`` | ``input_json_delta``) / ``content_block_stop`` → ``message_delta``
  (stop_reason, usage.output_tokens) → ``message_stop``, with ``ping`` events;
* errors: ``{"type": "error", "error": {"type": "authentication_error" | "rate_limit_error" | "api_error" |
  "invalid_request_error", "message": ...}}`` with HTTP 401 / 429 (+ ``retry-after``) / 500 / 400.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voicecall.speech.llm_echo import simple_arguments

from . import Dropped, StandIn, stall, tokens_of, words_of


def _error(status: int, etype: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": etype, "message": message}}, status_code=status,
                        headers={"request-id": "req_" + secrets.token_hex(8), **(headers or {})})


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")


def validate(body: Any) -> str | None:
    """What is wrong with a Messages request, as Anthropic would say it (or ``None``)."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            return f"{key}: Field required"
    msgs = body["messages"]
    if not isinstance(msgs, list) or not msgs:
        return "messages: at least one message is required"
    if msgs[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    tool_ids: set[str] = set()
    for n, m in enumerate(msgs):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{n}.role: Input should be 'user' or 'assistant'"
        content = m.get("content")
        if isinstance(content, list):
            for b in content:
                if b.get("type") == "tool_use":
                    if not isinstance(b.get("input"), dict):
                        return f"messages.{n}: tool_use.input must be an object"
                    tool_ids.add(b.get("id"))
                if b.get("type") == "tool_result" and b.get("tool_use_id") not in tool_ids:
                    return f"messages.{n}: tool_result block(s) provided when previous message does not have tool_use"
    for t in body.get("tools") or []:
        if "name" not in t or "input_schema" not in t:
            return "tools: each tool needs name and input_schema"
    choice = body.get("tool_choice")
    if choice is not None and choice.get("type") not in ("auto", "any", "tool", "none"):
        return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
    return None


@dataclass
class AnthropicStandIn(StandIn):
    version_seen: str | None = None

    def reply(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The scripted answer: a forced tool call, an answer to a tool result, or a short text answer."""
        msgs = body["messages"]
        last = msgs[-1]
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        content = last.get("content")
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] \
            if isinstance(content, list) else []
        text = _text_of(content).strip()
        if results:
            return [{"type": "text", "text": f"The tool answered {results[-1].get('content')}."}]
        wanted = None
        if choice.get("type") == "tool":
            wanted = next((t for t in tools if t["name"] == choice.get("name")), None)
        elif choice.get("type") == "any" and tools:
            wanted = tools[0]
        elif choice.get("type") == "auto":
            wanted = next((t for t in tools if t["name"].split("_")[-1] in text.lower()), None)
        if wanted is not None:
            args = simple_arguments(wanted.get("input_schema") or {}, text or "Paris")
            return [{"type": "tool_use", "id": "toolu_" + secrets.token_hex(12), "name": wanted["name"], "input": args}]
        if self.answers:
            return [{"type": "text", "text": self.answers.popleft()}]
        if "capital" in text.lower() and "france" in text.lower():
            answer = "The capital of France is Paris."
        else:
            answer = f"Claude heard you say: {text.rstrip('.?!') or 'nothing'}."
        return [{"type": "text", "text": answer}]

    async def events(self, body: dict[str, Any], drop: bool) -> AsyncIterator[bytes]:
        def ev(etype: str, data: dict[str, Any]) -> bytes:
            return f"event: {etype}\ndata: {json.dumps({'type': etype, **data})}\n\n".encode()

        in_tokens = sum(tokens_of(json.dumps(m.get("content"))) for m in body["messages"])
        in_tokens += tokens_of(body.get("system") or ".")
        msg = {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant", "content": [],
               "model": body["model"], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": in_tokens, "output_tokens": 1}}
        yield ev("message_start", {"message": msg})
        yield ev("ping", {})
        out_tokens = 0
        blocks = self.reply(body)
        for idx, block in enumerate(blocks):
            if block["type"] == "text":
                yield ev("content_block_start", {"index": idx, "content_block": {"type": "text", "text": ""}})
                words = block["text"].split(" ")
                for n, w in enumerate(words):
                    yield ev("content_block_delta", {"index": idx, "delta": {"type": "text_delta",
                                                                           "text": w if n == 0 else " " + w}})
                    out_tokens += 1
                    await asyncio.sleep(0.005)
                    if drop and n == 2:
                        raise Dropped("stand-in dropped the stream")
            else:
                yield ev("content_block_start", {"index": idx, "content_block": {**block, "input": {}}})
                raw = json.dumps(block["input"])
                for piece in (raw[: len(raw) // 2], raw[len(raw) // 2:]):
                    yield ev("content_block_delta", {"index": idx, "delta": {"type": "input_json_delta",
                                                                           "partial_json": piece}})
                out_tokens += words_of(raw)
            yield ev("content_block_stop", {"index": idx})
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        yield ev("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": out_tokens}})
        yield ev("message_stop", {})

    async def messages(self, request: Request) -> Response:
        failure = self.take_failure()
        if failure == "stall":
            await stall(request.is_disconnected)
            return Response(status_code=504)
        if request.headers.get("x-api-key") != self.key or failure == "401":
            return _error(401, "authentication_error", "invalid x-api-key")
        self.version_seen = request.headers.get("anthropic-version")
        if not self.version_seen:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if failure == "429":
            return _error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
                          {"retry-after": "7"})
        if failure == "500":
            return _error(500, "api_error", "Internal server error")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "request body is not valid JSON")
        self.requests.append(body)
        problem = validate(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        if not body.get("stream"):
            return _error(400, "invalid_request_error", "this stand-in only streams")
        return StreamingResponse(self.events(body, failure == "drop"), media_type="text/event-stream",
                                 headers={"request-id": "req_" + secrets.token_hex(8)})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self.messages, methods=["POST"])])
