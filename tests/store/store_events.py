"""Realistic GA server-event sequences for the store tests (shared by the recorder, API and CLI tests)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

Event = dict[str, Any]
MS = 48  # bytes of 24 kHz PCM16 per millisecond


def audio_b64(ms: int) -> str:
    return base64.b64encode(b"\0" * (ms * MS)).decode()


# ------------------------------------------------------------------------------------ event builders
def session(kind: str, model: str, voice: str) -> Event:
    return {
        "type": f"session.{kind}",
        "session": {
            "type": "realtime",
            "id": "sess_1",
            "model": model,
            "output_modalities": ["audio"],
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": voice},
            },
        },
    }


def msg(iid: str, role: str, parts: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {
        "id": iid,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": role,
        "content": parts,
    }


def added_done(item: dict[str, Any], prev: str | None) -> list[Event]:
    return [
        {"type": "conversation.item.added", "previous_item_id": prev, "item": item},
        {"type": "conversation.item.done", "previous_item_id": prev, "item": item},
    ]


def user_voice_turn(iid: str, prev: str | None, start_ms: int, end_ms: int) -> list[Event]:
    item = msg(iid, "user", [{"type": "input_audio", "transcript": None}])
    return [
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": iid},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": iid},
        {"type": "input_audio_buffer.committed", "previous_item_id": prev, "item_id": iid},
        *added_done(item, prev),
    ]


def transcription(iid: str, text: str) -> list[Event]:
    half = len(text) // 2
    return [
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": iid,
            "content_index": 0,
            "delta": text[:half],
        },
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": iid,
            "content_index": 0,
            "delta": text[half:],
        },
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": iid,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "tokens", "total_tokens": 20},
        },
    ]


def usage(text_in: int, audio_in: int, cached_text: int, text_out: int, audio_out: int) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": cached_text,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def response_created(rid: str) -> Event:
    return {
        "type": "response.created",
        "response": {
            "object": "realtime.response",
            "id": rid,
            "status": "in_progress",
            "output": [],
            "usage": None,
        },
    }


def response_done(
    rid: str, status: str, output: list[dict[str, Any]], use: dict[str, Any], reason: str | None = None
) -> Event:
    details = {"type": status, "reason": reason} if reason else None
    return {
        "type": "response.done",
        "response": {
            "object": "realtime.response",
            "id": rid,
            "status": status,
            "status_details": details,
            "output": output,
            "usage": use,
        },
    }


def assistant_audio_answer(
    rid: str,
    iid: str,
    prev: str,
    text: str,
    audio_ms: int,
    *,
    chunks: int = 4,
    done_status: str = "completed",
    reason: str | None = None,
    use: dict[str, Any] | None = None,
) -> list[Event]:
    start = msg(iid, "assistant", [], status="in_progress")
    final = msg(
        iid,
        "assistant",
        [{"type": "output_audio", "transcript": text}],
        status="completed" if done_status == "completed" else "incomplete",
    )
    words = text.split(" ")
    events: list[Event] = [
        response_created(rid),
        {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": start},
        {"type": "conversation.item.added", "previous_item_id": prev, "item": start},
        {
            "type": "response.content_part.added",
            "response_id": rid,
            "item_id": iid,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "audio", "transcript": ""},
        },
    ]
    for n in range(chunks):
        events.append(
            {
                "type": "response.output_audio_transcript.delta",
                "response_id": rid,
                "item_id": iid,
                "output_index": 0,
                "content_index": 0,
                "delta": " ".join(words[n * len(words) // chunks : (n + 1) * len(words) // chunks]) + " ",
            }
        )
        events.append(
            {
                "type": "response.output_audio.delta",
                "response_id": rid,
                "item_id": iid,
                "output_index": 0,
                "content_index": 0,
                "delta": audio_b64(audio_ms // chunks),
            }
        )
    events += [
        {
            "type": "response.output_audio.done",
            "response_id": rid,
            "item_id": iid,
            "output_index": 0,
            "content_index": 0,
        },
        {
            "type": "response.output_audio_transcript.done",
            "response_id": rid,
            "item_id": iid,
            "output_index": 0,
            "content_index": 0,
            "transcript": text,
        },
        {
            "type": "response.content_part.done",
            "response_id": rid,
            "item_id": iid,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "audio", "transcript": text},
        },
        {"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": final},
        {"type": "conversation.item.done", "previous_item_id": prev, "item": final},
        response_done(rid, done_status, [final], use or usage(100, 20, 64, 10, audio_ms // 50), reason),
    ]
    return events


def function_call_response(rid: str, iid: str, prev: str, name: str, args: str, call_id: str) -> list[Event]:
    start = {
        "id": iid,
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id,
        "name": name,
        "arguments": "",
    }
    final = {**start, "status": "completed", "arguments": args}
    return [
        response_created(rid),
        {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": start},
        {"type": "conversation.item.added", "previous_item_id": prev, "item": start},
        {
            "type": "response.function_call_arguments.delta",
            "response_id": rid,
            "item_id": iid,
            "output_index": 0,
            "call_id": call_id,
            "delta": args[:5],
        },
        {
            "type": "response.function_call_arguments.done",
            "response_id": rid,
            "item_id": iid,
            "output_index": 0,
            "call_id": call_id,
            "name": name,
            "arguments": args,
        },
        {"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": final},
        {"type": "conversation.item.done", "previous_item_id": prev, "item": final},
        response_done(rid, "completed", [final], usage(200, 40, 128, 25, 0)),
    ]


WEATHER_ANSWER = "It is sunny and twenty one degrees in Paris today, with a light breeze from the west."


def full_call() -> list[Event]:
    """A relayed OpenAI call: voice question, tool round trip, an answer cut by a barge-in, a deleted item, a
    system message inserted at the start, a typed follow-up."""
    out = {"id": "item_out1", "type": "function_call_output", "call_id": "call_1", "output": '{"temp_c": 21}'}
    return [
        session("created", "gpt-realtime-2025-08-28", "marin"),
        session("updated", "gpt-realtime-2025-08-28", "cedar"),
        *user_voice_turn("item_u1", None, 1000, 3400),
        *function_call_response(
            "resp_1", "item_fc1", "item_u1", "get_weather", '{"city": "Paris"}', "call_1"
        ),
        *transcription("item_u1", "What's the weather in Paris?"),  # transcription arrives late
        *added_done(out, "item_fc1"),
        *assistant_audio_answer(
            "resp_2",
            "item_a2",
            "item_out1",
            WEATHER_ANSWER,
            4000,
            done_status="cancelled",
            reason="turn_detected",
        ),
        *user_voice_turn("item_u2", "item_a2", 9000, 9500),
        {
            "type": "conversation.item.truncated",
            "item_id": "item_a2",
            "content_index": 0,
            "audio_end_ms": 2000,
        },
        *transcription("item_u2", "um"),
        {"type": "conversation.item.deleted", "item_id": "item_u2"},
        *added_done(msg("item_sys", "system", [{"type": "input_text", "text": "Be brief."}]), None),
        *added_done(
            msg("item_u3", "user", [{"type": "input_text", "text": "Thanks, that's enough."}]), "item_a2"
        ),
    ]


async def record_full_call(store: Any, started_at: datetime, client: str,
                           metrics: dict[str, dict[str, float]] | None = None) -> None:
    """:func:`full_call` recorded as the relay's conversation ``conv_call`` (gpt-realtime, marin), with optional
    per-response engine metrics, and closed (everything written)."""
    from voicecall.store import ConversationRecorder

    rec = ConversationRecorder(store, conversation_id="conv_call", provider="openai-realtime", model="gpt-realtime",
                               voice="marin", transport="relay", client=client, started_at=started_at)
    for event in full_call():
        rec.on_server_event(event)
    for response_id, latency in (metrics or {}).items():
        rec.on_response_metrics(response_id, latency)
    await rec.close()
