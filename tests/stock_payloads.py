"""Session payloads stock clients send, verbatim, shared by the local-engine and gateway tests.

Sources: ``@openai/agents-realtime`` 0.20 (``dist/openaiRealtimeBase.mjs``: ``_getMergedSessionConfig`` and
``_updateTracingConfig``), the GA ``session.update`` of the OpenAI reference used by the openai-python and
openai-node examples, and the beta (``OpenAI-Beta: realtime=v1``) ``session.update`` of the 2025-04 spec.
"""

from __future__ import annotations

from typing import Any

AGENTS_MODEL = "gpt-realtime-2.1"
# @openai/agents-realtime 0.20 (RealtimeSession, WebSocket and WebRTC transports): the first session.update ...
AGENTS_INITIAL: dict[str, Any] = {
    "type": "realtime", "instructions": "You are a terse assistant. Answer in one sentence.", "model": AGENTS_MODEL,
    "output_modalities": ["audio"],
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "noise_reduction": None,
                        "transcription": {"model": "gpt-4o-mini-transcribe"}, "turn_detection": {"type": "semantic_vad"}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "speed": 1}},
}
# ... and, after session.created, its tracing update.
AGENTS_TRACING: dict[str, Any] = {"type": "realtime", "tracing": "auto"}
# The documented GA session.update (openai-python / openai-node examples), with a tracing object as the Agents SDK
# sends it when a workflow name is set.
DOCUMENTED: dict[str, Any] = {
    "type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"],
    "instructions": "Speak clearly and briefly.",
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                        "noise_reduction": {"type": "near_field"},
                        "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                           "silence_duration_ms": 500, "create_response": True,
                                           "interrupt_response": True}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}},
    "tools": [{"type": "function", "name": "get_weather", "description": "Get the current weather for a location.",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}}],
    "tool_choice": "auto", "max_output_tokens": "inf",
    "tracing": {"workflow_name": "support-line", "group_id": "grp_1", "metadata": {"team": "voice"}},
}
# The beta session.update (SPEC-2025-04 example; what seed-era clients send with OpenAI-Beta: realtime=v1).
BETA_SESSION: dict[str, Any] = {
    "modalities": ["text", "audio"], "instructions": "You are a helpful assistant.", "voice": "sage",
    "input_audio_format": "pcm16", "output_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
                       "create_response": True},
    "tools": [{"type": "function", "name": "get_weather", "description": "Get the current weather...",
               "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                              "required": ["location"]}}],
    "tool_choice": "auto", "temperature": 0.8, "max_response_output_tokens": "inf",
}
BETA_ONLY_EVENTS = {"response.audio.delta", "response.audio.done", "response.audio_transcript.delta",
                    "response.audio_transcript.done", "response.text.delta", "response.text.done",
                    "conversation.item.created"}
GA_ONLY_EVENTS = {"response.output_audio.delta", "response.output_audio.done", "response.output_audio_transcript.delta",
                  "response.output_audio_transcript.done", "response.output_text.delta", "response.output_text.done",
                  "conversation.item.added", "conversation.item.done"}
