"""Fixtures of the conformance suite: stock clients, unmodified, against a real voicecall server.

Every client completes one spoken turn (speech in -> user transcript -> answer audio) with its own session applied
(visible in ``session.updated``) and no ``error`` event. The server runs the echo stack of the WebRTC tests
(energy VAD, pocketsphinx, an LLM that answers "You said: ...", tone TTS): the protocol is what is under test, and
the words still go through a real recogniser.

The JavaScript clients are pinned in ``tests/js/package-lock.json`` and installed by ``make install`` (``npm ci``).
Without Node/npm (or ``npm ci`` not run) the JavaScript tests skip; under ``CI`` they fail instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import ServerThread, make_config, netns_required
from tests.webrtc.conftest import ECHO_STACK, QUESTION, speech
from voicecall.server.thread import free_port

JS_DIR = Path(__file__).resolve().parent.parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
AGENTS_BUNDLE = NODE_MODULES / "@openai" / "agents-realtime" / "dist" / "bundle"
PAGES = Path(__file__).resolve().parent / "pages"
ENGINE_RATE = 24000


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def node_or_skip() -> str:
    """The ``node`` executable, with the pinned packages of tests/js installed."""
    node = shutil.which("node")
    if node is None:
        _missing("Node.js not found (apt-get install nodejs npm)")
    if not (NODE_MODULES / "@openai" / "agents-realtime" / "package.json").exists():
        _missing("tests/js/node_modules is missing: run `make install` (npm ci in tests/js)")
    return str(node)


def run_node(script: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``tests/js/<script>`` with Node; the process's exit code is part of what is tested."""
    return subprocess.run([node_or_skip(), str(JS_DIR / script), *args], cwd=JS_DIR, capture_output=True, text=True,
                          check=False, timeout=timeout, env={**os.environ, "NODE_NO_WARNINGS": "1"})


@pytest.fixture(autouse=True)
def _netns() -> None:
    netns_required()


@pytest.fixture(scope="session")
def page_port() -> int:
    """The port of the second origin (``http://127.0.0.1:<page_port>``) the cross-origin pages come from."""
    return free_port()


@pytest.fixture(scope="session")
def conformance_server(tmp_path_factory: pytest.TempPathFactory, page_port: int) -> Iterator[ServerThread]:
    """One server for the suite: the echo stack, history in tmp, and the second origin allowed (the documented
    "your app on another site" configuration)."""
    netns_required()
    tmp = tmp_path_factory.mktemp("conformance")
    overrides: dict[str, Any] = {**ECHO_STACK, "server.maxSessions": 8,
                                 "server.allowedOrigins": [f"http://127.0.0.1:{page_port}"]}
    with ServerThread(make_config(tmp, **overrides)) as srv:
        yield srv


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                                                 ".mjs": "text/javascript", ".js": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def second_origin(page_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain static web server on another loopback port (another origin): the test pages, with the Agents SDK's
    browser bundle under ``/sdk/`` as an app would host it."""
    root = tmp_path_factory.mktemp("site")
    for page in PAGES.iterdir():
        shutil.copy(page, root / page.name)
    if AGENTS_BUNDLE.exists():
        shutil.copytree(AGENTS_BUNDLE, root / "sdk")
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="second-origin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{page_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def speech_pcm24(path: Path, text: str = QUESTION, lead_s: float = 0.5, tail_s: float = 1.5) -> Path:
    """Raw PCM16 mono 24 kHz speech (Piper) for clients that stream ``input_audio_buffer.append``."""
    path.write_bytes(speech(text, ENGINE_RATE, lead_s=lead_s, tail_s=tail_s).tobytes())
    return path
