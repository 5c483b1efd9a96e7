"""Shared fixtures: a real voicecall server on a free loopback port, and speech recordings made at test time.

Everything here talks to 127.0.0.1 only; `make test` runs pytest inside a loopback-only network namespace.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voicecall.audio import ENGINE_RATE, resample, write_wav
from voicecall.config import Config, load_config
from voicecall.server.thread import ServerThread as BaseServerThread
from voicecall.server.thread import free_port


class ServerThread(BaseServerThread):
    """A real uvicorn server running ``create_app(config)`` in a background thread (``with``: started/stopped)."""

    def __init__(self, config: Config) -> None:
        from voicecall.server.app import create_app, uvicorn_options

        self.config = config
        super().__init__(create_app(config), config.server.port, start_timeout=120.0, **uvicorn_options(config))

    @property
    def state(self) -> Any:
        return self.app.state.vc


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A test configuration: loopback, free port, store in tmp_path, ICE pinned to 127.0.0.1."""
    base = {
        "server.host": "127.0.0.1",
        "server.port": free_port(),
        "store.url": f"sqlite:///{tmp_path / 'voicecall.db'}",
        "webrtc.hostAddresses": ["127.0.0.1"],
    }
    base.update(overrides)
    return load_config(None, env={}, overrides=base)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def factory(**overrides: Any) -> ServerThread:
        srv = ServerThread(make_config(tmp_path, **overrides)).__enter__()
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        srv.__exit__(None, None, None)


@pytest.fixture(scope="session")
def server_module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="session")
def local_server(server_module_tmp: Path) -> Iterator[ServerThread]:
    """One real server with the embedded default stack, shared by the tests of a run."""
    with ServerThread(make_config(server_module_tmp)) as srv:
        yield srv


# ------------------------------------------------------------------------------------ speech
_speech_cache: dict[tuple[str, int], np.ndarray] = {}
_fixed_piper: list[Any] = []


def fixed_piper() -> Any:
    """The embedded Piper voice with its noise scales at 0: the same text always gives the same samples.

    Piper's default samples noise at every synthesis, and the recognisers miss a word in some renditions (about one in
    eight for pocketsphinx), which made tests that listen to Piper speech pass or fail by chance."""
    if not _fixed_piper:
        from voicecall.config import StageConfig
        from voicecall.speech.registry import load_stage

        _fixed_piper.append(load_stage("tts", StageConfig(type="piper", noiseScale=0.0, noiseWScale=0.0)))
    return _fixed_piper[0]


def speech_pcm(text: str, rate: int = ENGINE_RATE, lead_s: float = 0.3, tail_s: float = 0.0,
               noise: float = 60.0, seed: int = 1) -> np.ndarray:
    """``text`` spoken by the embedded TTS (Piper), at ``rate``, with a low noise floor like a real microphone."""
    key = (text, rate)
    if key not in _speech_cache:
        tts = fixed_piper()
        chunks = list(tts.synthesize(text))
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        _speech_cache[key] = resample(pcm, tts.sample_rate, rate)
    pcm = _speech_cache[key]
    lead = np.zeros(int(lead_s * rate), np.int16)
    tail = np.zeros(int(tail_s * rate), np.int16)
    out = np.concatenate([lead, pcm, tail]).astype(np.float64)
    rng = np.random.default_rng(seed)
    out += rng.normal(0, noise, out.shape)
    return np.clip(out, -32768, 32767).astype(np.int16)


@pytest.fixture
def speech_wav(tmp_path: Path) -> Callable[..., Path]:
    def make(text: str, rate: int = 48000, lead_s: float = 1.0, tail_s: float = 1.5, name: str = "speech.wav") -> Path:
        path = tmp_path / name
        write_wav(path, speech_pcm(text, rate, lead_s, tail_s), rate)
        return path

    return make


def netns_required() -> None:
    """Skip (or fail in CI) when not inside the loopback-only network namespace."""
    if os.environ.get("VOICECALL_NO_NETNS") == "1" or os.environ.get("VOICECALL_IN_NETNS") != "1":
        if os.environ.get("CI"):
            pytest.fail("WebRTC/browser tests must run inside tests/netns-run (loopback-only namespace)")
        pytest.skip("not inside a loopback-only network namespace (run through tests/netns-run or make test)")


def run(coro: Any) -> Any:
    return asyncio.get_event_loop().run_until_complete(coro)
