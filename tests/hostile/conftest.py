"""Fixtures of the hostile-input suite: light local servers (energy VAD, pocketsphinx, echo LLM, tone TTS) with small
limits, so that every limit can be hit quickly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerThread, make_config

ECHO_STACK: dict[str, Any] = {
    "plugins.voice-call.local.vad": {"type": "energy", "thresholdDbfs": -40},
    "plugins.voice-call.local.stt": {"type": "pocketsphinx"},
    "plugins.voice-call.local.llm": {"type": "echo"},
    "plugins.voice-call.local.tts": {"type": "tone"},
}

MAX_MESSAGE = 1 << 20
SMALL_LIMITS: dict[str, Any] = {
    "server.maxMessageBytes": MAX_MESSAGE,
    "server.maxOutgoingBytes": 256 * 1024,
    "server.firstEventSeconds": 3,
    "server.idleSessionSeconds": 4,
    "server.maxInputAudioSeconds": 5,
    "server.maxConversationItems": 20,
}


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One echo-stack server with small limits for the tests of a module."""
    tmp: Path = tmp_path_factory.mktemp("hostile")
    with ServerThread(make_config(tmp, **ECHO_STACK, **SMALL_LIMITS)) as srv:
        yield srv
