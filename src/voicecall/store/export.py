"""History records as JSON (the HTTP API's shapes) and as a readable Markdown transcript (API export and
CLI)."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from voicecall.store.base import ConversationDetail, ConversationRecord, ItemRecord, ResponseRecord, to_iso


def iso(dt: datetime | None) -> str | None:
    """ISO-8601 UTC text for JSON (``2026-11-21T05:42:51.123456Z``)."""
    return to_iso(dt)


def conversation_json(c: ConversationRecord) -> dict[str, Any]:
    """The list entry shape of ``GET /api/conversations``."""
    return {
        "id": c.id,
        "provider": c.provider,
        "model": c.model,
        "voice": c.voice,
        "transport": c.transport,
        "client": c.client,
        "started_at": iso(c.started_at),
        "ended_at": iso(c.ended_at),
        "title": c.title,
        "cost_usd": round(c.cost_usd, 6),
        "item_count": c.item_count,
        "metadata": c.metadata,
    }


def item_json(item: ItemRecord, index: int) -> dict[str, Any]:
    """One item; ``position`` is its 0-based index in conversation order."""
    return {
        "id": item.id,
        "position": index,
        "role": item.role,
        "type": item.type,
        "text": item.text,
        "audio_ms": item.audio_ms,
        "truncated": item.truncated,
        "created_at": iso(item.created_at),
        "done_at": iso(item.done_at),
        "extra": item.extra,
    }


def response_json(r: ResponseRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "status": r.status,
        "status_details": r.status_details,
        "usage": r.usage,
        "latency": r.latency,
        "cost_usd": round(r.cost_usd, 6),
        "model": r.model,
        "created_at": iso(r.created_at),
        "done_at": iso(r.done_at),
    }


STAGES = ("stt", "llm", "tts")


def cost_by_stage(responses: list[ResponseRecord]) -> dict[str, dict[str, Any]]:
    """A pipeline conversation's cost split by stage: ``{"stt": {"usd": ..., "providers": [...]}, ...}`` summed over
    its responses (empty when no response carried a split, e.g. a call relayed to OpenAI)."""
    out: dict[str, dict[str, Any]] = {}
    for r in responses:
        stages = ((r.usage or {}).get("x_voicecall") or {}).get("cost", {}).get("stages") or {}
        for stage, block in stages.items():
            acc = out.setdefault(stage, {"usd": 0.0, "providers": []})
            acc["usd"] = round(acc["usd"] + float(block.get("usd") or 0.0), 8)
            for p in block.get("providers") or []:
                if p.get("provider") and p["provider"] not in acc["providers"]:
                    acc["providers"].append(p["provider"])
    return {k: out[k] for k in (*STAGES, *sorted(set(out) - set(STAGES))) if k in out}


def format_stage_costs(split: dict[str, dict[str, Any]]) -> str:
    """``STT $0.0120 (deepgram) · LLM $0.0040 (anthropic) · TTS $0.0800 (elevenlabs)``."""
    return " · ".join(f"{stage.upper()} {format_cost(v['usd'])} ({', '.join(v['providers']) or '-'})"
                      for stage, v in split.items())


def detail_json(d: ConversationDetail) -> dict[str, Any]:
    """The shape of ``GET /api/conversations/{id}`` and of the JSON export."""
    out = conversation_json(d.conversation)
    split = cost_by_stage(d.responses)
    if split:
        out["cost_by_stage"] = split
    out["items"] = [item_json(item, i) for i, item in enumerate(d.items)]
    out["responses"] = [response_json(r) for r in d.responses]
    return out


# ------------------------------------------------------------------------------------------ markdown
def _clock(dt: datetime | None) -> str:
    return dt.strftime("%H:%M:%S") if dt else "--:--:--"


def _when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 12 s``, ``1 h 02 min``."""
    if seconds is None or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_cost(usd: float) -> str:
    return "$0" if usd == 0 else f"${usd:.4f}" if usd >= 0.0001 else f"${usd:.6f}"


def _seconds(ms: int | None) -> str:
    return f"{ms / 1000:.1f} s" if ms is not None else "?"


def format_latency(latency: dict[str, Any]) -> str:
    parts = []
    for key, value in latency.items():
        if isinstance(value, (int, float)):
            name = key.removesuffix("_ms").replace("_", " ")
            parts.append(f"{name} {value:.0f} ms")
    return ", ".join(parts)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines() or [""])


def _fence(text: str, lang: str = "") -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{lang}\n{text}\n{fence}"


def _item_md(item: ItemRecord) -> str:
    stamp = _clock(item.created_at)
    extra = item.extra or {}
    if item.type == "function_call":
        head = f"**{stamp} · Function call** `{extra.get('name', '?')}`"
        if extra.get("call_id"):
            head += f" (call `{extra['call_id']}`)"
        args = extra.get("arguments")
        if isinstance(args, str) and args:
            with contextlib.suppress(ValueError):  # not JSON: shown as it came
                args = json.dumps(json.loads(args), ensure_ascii=False, indent=2)
            return head + "\n\n" + _fence(args, "json")
        return head
    if item.type == "function_call_output":
        head = f"**{stamp} · Function output**"
        if extra.get("call_id"):
            head += f" (call `{extra['call_id']}`)"
        return head + ("\n\n" + _fence(item.text) if item.text else "")
    who = (item.role or item.type or "item").capitalize()
    notes: list[str] = []
    if item.truncated:
        heard = f"heard {_seconds(item.audio_ms)}" if item.audio_ms is not None else "cut short"
        total = extra.get("generated_audio_ms")
        notes.append(
            f"*interrupted: {heard}" + (f" of {_seconds(total)}*" if isinstance(total, int) else "*")
        )
    elif item.audio_ms is not None:
        notes.append(f"{_seconds(item.audio_ms)} of audio")
    if extra.get("status") and not item.truncated:
        notes.append(f"status {extra['status']}")
    if extra.get("transcription_error"):
        notes.append(f"transcription failed: {extra['transcription_error']}")
    if extra.get("images"):
        notes.append(f"{extra['images']} image(s)")
    head = f"**{stamp} · {who}**" + (f" ({'; '.join(notes)})" if notes else "")
    if item.text:
        body = _quote(item.text)
    elif item.role == "user" and item.audio_ms is not None:
        body = "> *(audio, no transcript)*"
    else:
        body = "> *(no text)*"
    return head + "\n" + body


def _response_line(r: ResponseRecord) -> str:
    bits = [f"response `{r.id}`: {r.status}"]
    if r.status_details and r.status_details.get("reason"):
        bits[0] += f" ({r.status_details['reason']})"
    bits.append(format_cost(r.cost_usd))
    lat = format_latency(r.latency)
    if lat:
        bits.append(lat)
    return "*" + " · ".join(bits) + "*"


def detail_markdown(d: ConversationDetail) -> str:
    """A readable transcript: header, the items with timestamps, per-response cost and latency, a summary
    table."""
    c = d.conversation
    duration = (c.ended_at - c.started_at).total_seconds() if c.ended_at else None
    lines = [
        f"# {c.title or 'Conversation'}",
        "",
        "| | |",
        "|---|---|",
        f"| Conversation | `{c.id}` |",
        f"| Started | {_when(c.started_at)} |",
        f"| Ended | {_when(c.ended_at) + f' ({format_duration(duration)})' if c.ended_at else 'not ended'} |",
        f"| Provider / model / voice | {c.provider} / {c.model or '-'} / {c.voice or '-'} |",
        f"| Transport | {c.transport} |",
        f"| Client | {c.client or '-'} |",
        f"| Items | {c.item_count} |",
        f"| Estimated cost | {format_cost(c.cost_usd)} |",
        *([f"| Cost by stage | {format_stage_costs(split)} |"] if (split := cost_by_stage(d.responses)) else []),
        "",
        "## Transcript",
        "",
    ]
    responses = {r.id: r for r in d.responses}
    last_item_of: dict[str, int] = {}
    for i, item in enumerate(d.items):
        rid = (item.extra or {}).get("response_id")
        if isinstance(rid, str) and rid in responses:
            last_item_of[rid] = i
    if not d.items:
        lines += ["*(nothing was said)*", ""]
    for i, item in enumerate(d.items):
        lines += [_item_md(item), ""]
        rid = (item.extra or {}).get("response_id")
        if isinstance(rid, str) and last_item_of.get(rid) == i:
            lines += [_response_line(responses[rid]), ""]
    if d.responses:
        lines += [
            "## Responses",
            "",
            "| Time | Response | Status | Tokens in / out | Cost | Latency |",
            "|---|---|---|---|---|---|",
        ]
        for r in d.responses:
            usage = r.usage or {}
            tokens = f"{usage.get('input_tokens', '-')} / {usage.get('output_tokens', '-')}" if usage else "-"
            status = r.status + (
                f" ({r.status_details['reason']})"
                if r.status_details and r.status_details.get("reason")
                else ""
            )
            lines.append(
                f"| {_clock(r.created_at)} | `{r.id}` | {status} | {tokens} | {format_cost(r.cost_usd)} "
                f"| {format_latency(r.latency) or '-'} |"
            )
        lines.append("")
    return "\n".join(lines)
