"""Fixtures of the gateway tests: a gateway server (provider ``openai-realtime``) in front of a real upstream —
voicecall's own local engine, or the recording stand-in of OpenAI (``upstream_recorder.py``).

Secrets: the gateway's OpenAI key is a distinctive ``sk-test-DO-NOT-LEAK-<random>``. Every response the gateway
sends (HTTP headers and bodies, WebSocket frames and close reasons) passes through :class:`LeakGuard`, and every
log record of the test process (captured at DEBUG, except those of the upstream servers, which play OpenAI and
legitimately receive the key) is checked; any test that lets the key out fails.

Everything listens on 127.0.0.1; ``make test`` runs the suite in a loopback-only network namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.gwtools import (
    LEAK_KEY,
    AppThread,
    Gateway,
    LogCapture,
    gateway_config,
    leaked_lines,
    start_local_upstream,
)
from tests.gateway.upstream_recorder import UpstreamRecorder


@pytest.fixture(autouse=True)
def log_leak_guard() -> Iterator[LogCapture]:
    """Capture every log record at DEBUG; fail the test if one outside the upstream servers holds the key."""
    root = logging.getLogger()
    handler = LogCapture()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    leaks = leaked_lines(handler.records)
    assert not leaks, f"the OpenAI key appeared in log lines: {leaks}"


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways (``make_gateway(base_url, **config overrides)``); stopped, and checked for leaks, after."""
    started: list[Gateway] = []

    def factory(base_url: str, ws: Any = None, **overrides: Any) -> Gateway:
        gw = Gateway(gateway_config(tmp_path, base_url, **overrides), ws=ws)
        gw.start()
        started.append(gw)
        return gw

    yield factory
    for gw in reversed(started):
        gw.stop()
    for gw in started:
        assert not gw.guard.leaks, f"the OpenAI key left the gateway: {gw.guard.leaks}"


@pytest.fixture
def upstream() -> Iterator[UpstreamRecorder]:
    """The recording stand-in of OpenAI, expecting the gateway's key."""
    with UpstreamRecorder(LEAK_KEY) as up:
        yield up
    assert not up.violations, up.violations


@pytest.fixture(scope="module")
def local_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppThread]:
    """voicecall's local engine (echo stack) as the upstream, shared by a module's tests."""
    srv = start_local_upstream(tmp_path_factory.mktemp("upstream"))
    yield srv
    srv.stop()
