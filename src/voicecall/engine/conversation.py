"""The conversation: ordered items (messages, function calls and their outputs) and their audio.

Items are kept in GA shape (``to_dict``) plus what the engine needs privately: the audio, the recognised text of
user audio (used for the LLM even when the client did not ask for transcription events), and for assistant audio
the alignment of spoken text to audio time, so that ``conversation.item.truncate`` keeps exactly what was heard.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicecall.audio import PCM16, AudioCodec
from voicecall.protocol.errors import ProtocolError
from voicecall.protocol.ids import new_id
from voicecall.speech.base import ChatMessage


@dataclass(slots=True)
class SpokenChunk:
    """A piece of assistant text and the audio span (ms from the item's start) it was spoken in."""

    text: str
    start_ms: float
    end_ms: float


@dataclass
class Item:
    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[dict[str, Any]] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    audio: list[PCM16] = field(default_factory=list)
    audio_ms: float = 0.0
    recognized: asyncio.Future[str] | None = None  # user audio: the STT result (LLM input)
    spoken: list[SpokenChunk] = field(default_factory=list)  # assistant audio alignment
    truncated: bool = False

    def to_dict(self, *, with_audio: bool = False, output_format: str = "audio/pcm") -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type, "status": self.status}
        if self.type == "message":
            out["role"] = self.role
            content = copy.deepcopy(self.content)
            if with_audio and self.audio:
                for part in content:
                    if part.get("type") in ("input_audio", "output_audio"):
                        pcm = np.concatenate(self.audio)
                        fmt = "audio/pcm" if part["type"] == "input_audio" else output_format
                        part["audio"] = base64.b64encode(AudioCodec(fmt).encode(pcm)).decode("ascii")
                        part["format"] = fmt
            out["content"] = content
        elif self.type == "function_call":
            out.update(call_id=self.call_id, name=self.name, arguments=self.arguments or "")
        elif self.type == "function_call_output":
            out.update(call_id=self.call_id, output=self.output or "")
        return out

    def text(self) -> str:
        """The words of a message item: text parts and transcripts joined."""
        parts = []
        for part in self.content:
            t = part.get("text") if part.get("type") in ("input_text", "output_text", "text") else part.get("transcript")
            if t:
                parts.append(t)
        return " ".join(parts)


class Conversation:
    def __init__(self, max_items: int | None = None, max_audio_samples: int | None = None) -> None:
        self.id = new_id("conv_")
        self._order: list[str] = []
        self._items: dict[str, Item] = {}
        self.max_items = max_items
        """Past this many items the oldest are forgotten (``server.maxConversationItems``)."""
        self.max_audio_samples = max_audio_samples
        """Past this much audio the oldest items lose theirs (``server.maxConversationAudioSeconds``)."""

    @property
    def full(self) -> bool:
        return self.max_items is not None and len(self._order) >= self.max_items

    def trim(self) -> int:
        """Enforce the bounds: forget the oldest items past ``max_items``, drop the audio of the oldest items past
        ``max_audio_samples`` (transcripts stay). Returns the number of items forgotten."""
        forgotten = 0
        if self.max_items is not None:
            while len(self._order) > self.max_items:
                del self._items[self._order.pop(0)]
                forgotten += 1
        if self.max_audio_samples is not None:
            total = sum(len(chunk) for item in self._items.values() for chunk in item.audio)
            for item_id in self._order:
                if total <= self.max_audio_samples:
                    break
                item = self._items[item_id]
                if item.audio:
                    total -= sum(len(chunk) for chunk in item.audio)
                    item.audio = []
        return forgotten

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._order)

    def items(self) -> list[Item]:
        return [self._items[i] for i in self._order]

    def last_id(self) -> str | None:
        return self._order[-1] if self._order else None

    def get(self, item_id: str, code: str = "item_not_found", param: str = "item_id") -> Item:
        item = self._items.get(item_id)
        if item is None:
            raise ProtocolError(code, f"The item with id '{item_id}' does not exist.", param)
        return item

    def add(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Insert ``item``; returns the id of the item before it (``None`` at the start)."""
        if item.id in self._items:
            raise ProtocolError("item_create_duplicate_id", f"An item with id '{item.id}' already exists.", "item.id")
        if previous_item_id is None:
            idx = len(self._order)
        elif previous_item_id == "root":
            idx = 0
        else:
            if previous_item_id not in self._items:
                raise ProtocolError("item_create_invalid_previous_item_id",
                                    f"The previous_item_id '{previous_item_id}' does not exist.", "previous_item_id")
            idx = self._order.index(previous_item_id) + 1
        self._order.insert(idx, item.id)
        self._items[item.id] = item
        prev = self._order[idx - 1] if idx > 0 else None
        if self.max_items is not None and len(self._order) > self.max_items:
            self.trim()
        return prev

    def previous_of(self, item_id: str) -> str | None:
        idx = self._order.index(item_id)
        return self._order[idx - 1] if idx > 0 else None

    def delete(self, item_id: str) -> None:
        self.get(item_id, "item_delete_invalid_item_id")
        self._order.remove(item_id)
        del self._items[item_id]


# ------------------------------------------------------------------------------------ item creation
def item_from_client(obj: dict[str, Any]) -> Item:
    """Validate a client ``conversation.item.create`` item (GA shape) and build an :class:`Item`."""
    allowed = {"id", "type", "object", "status", "role", "content", "call_id", "name", "arguments", "output"}
    for key in obj:
        if key not in allowed:
            raise ProtocolError("unknown_parameter", f"Unknown parameter: 'item.{key}'.", f"item.{key}")
    itype = obj.get("type", "message")
    iid = obj.get("id") or new_id("item_")
    if not isinstance(iid, str) or len(iid) > 64:
        raise ProtocolError("invalid_value", "item.id must be a string of at most 64 characters.", "item.id")
    if itype == "message":
        role = obj.get("role")
        if role not in ("user", "assistant", "system"):
            raise ProtocolError("invalid_value", f"Invalid value: {role!r}. Supported values are: 'user', 'assistant', 'system'.",
                                "item.role")
        content = obj.get("content")
        if not isinstance(content, list) or not content:
            raise ProtocolError("invalid_value", "item.content must be a non-empty array.", "item.content")
        allowed_parts = {"user": {"input_text", "input_audio"}, "system": {"input_text"},
                         "assistant": {"output_text", "text", "output_audio"}}[role]
        parts: list[dict[str, Any]] = []
        item = Item(id=iid, type="message", role=role)
        for i, part in enumerate(content):
            p = f"item.content[{i}]"
            if not isinstance(part, dict):
                raise ProtocolError("invalid_type", f"Invalid type for '{p}': expected an object.", p)
            ptype = part.get("type")
            if ptype == "input_image":
                raise ProtocolError("unsupported_parameter", "Image input is not supported by the local engine.", p + ".type")
            if ptype not in allowed_parts:
                raise ProtocolError("invalid_value", f"Invalid value: {ptype!r}. A {role} message accepts: "
                                    + ", ".join(sorted(allowed_parts)) + ".", p + ".type")
            if ptype in ("input_text", "output_text", "text"):
                text = part.get("text")
                if not isinstance(text, str):
                    raise ProtocolError("invalid_type", f"Invalid type for '{p}.text': expected a string.", p + ".text")
                parts.append({"type": "output_text" if ptype == "text" else ptype, "text": text})
            elif ptype == "input_audio":
                audio_b64 = part.get("audio")
                transcript = part.get("transcript")
                if not isinstance(audio_b64, str):
                    raise ProtocolError("missing_required_parameter", f"'{p}.audio' (base64 PCM16 24 kHz) is required.",
                                        p + ".audio")
                try:
                    raw = base64.b64decode(audio_b64, validate=True)
                except ValueError:
                    raise ProtocolError("invalid_value", "The audio is not valid base64.", p + ".audio") from None
                pcm = AudioCodec("audio/pcm").decode(raw)
                item.audio.append(pcm)
                item.audio_ms += len(pcm) / 24
                parts.append({"type": "input_audio", "transcript": transcript if isinstance(transcript, str) else None})
            elif ptype == "output_audio":
                if part.get("audio"):
                    raise ProtocolError("invalid_value", "Assistant audio messages cannot be populated with audio; "
                                        "send the transcript only.", p + ".audio")
                transcript = part.get("transcript")
                if not isinstance(transcript, str):
                    raise ProtocolError("invalid_type", f"'{p}.transcript' must be a string.", p + ".transcript")
                parts.append({"type": "output_audio", "transcript": transcript})
        item.content = parts
        return item
    if itype == "function_call":
        for key in ("call_id", "name"):
            if not isinstance(obj.get(key), str):
                raise ProtocolError("missing_required_parameter", f"'item.{key}' is required for function_call items.",
                                    f"item.{key}")
        args = obj.get("arguments", "")
        if not isinstance(args, str):
            raise ProtocolError("invalid_type", "item.arguments must be a JSON string.", "item.arguments")
        return Item(id=iid, type="function_call", call_id=obj["call_id"], name=obj["name"], arguments=args)
    if itype == "function_call_output":
        if not isinstance(obj.get("call_id"), str):
            raise ProtocolError("missing_required_parameter", "'item.call_id' is required for function_call_output items.",
                                "item.call_id")
        output = obj.get("output")
        if not isinstance(output, str):
            raise ProtocolError("invalid_type", "item.output must be a string.", "item.output")
        return Item(id=iid, type="function_call_output", call_id=obj["call_id"], output=output)
    if isinstance(itype, str) and itype.startswith("mcp_"):
        raise ProtocolError("unsupported_parameter", "MCP items are not supported by this server.", "item.type")
    raise ProtocolError("invalid_value", f"Invalid value: {itype!r}. Supported values are: 'message', 'function_call', "
                        "'function_call_output'.", "item.type")


async def to_chat_messages(instructions: str, items: list[Item], stt_timeout: float = 10.0) -> list[ChatMessage]:
    """Render items as chat messages for the LLM (waiting for pending speech recognition)."""
    msgs: list[ChatMessage] = []
    if instructions:
        msgs.append(ChatMessage("system", instructions))
    for item in items:
        if item.type == "message":
            text = item.text()
            if item.role == "user" and item.recognized is not None and not any(
                    p.get("type") == "input_text" or p.get("transcript") for p in item.content):
                try:
                    text = await asyncio.wait_for(asyncio.shield(item.recognized), stt_timeout)
                except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - no words, no message
                    text = ""
            if not text.strip():
                continue
            role = "system" if item.role == "system" else ("assistant" if item.role == "assistant" else "user")
            # One message per item, never merged: truncation drops whole messages, oldest first, so a long run
            # of user items must stay droppable one by one (adapters whose templates need alternating roles merge
            # after truncation).
            msgs.append(ChatMessage(role, text))  # type: ignore[arg-type]
        elif item.type == "function_call":
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments or "{}"}}
            if msgs and msgs[-1].role == "assistant" and msgs[-1].tool_calls is not None:
                msgs[-1].tool_calls.append(call)
            else:
                msgs.append(ChatMessage("assistant", None, tool_calls=[call]))
        elif item.type == "function_call_output":
            msgs.append(ChatMessage("tool", item.output or "", tool_call_id=item.call_id))
    return msgs
