"""Headless Debian Chromium (through Playwright) with a WAV file as its fake microphone, for the browser tests
(``tests/webrtc/test_browser.py``, ``tests/gateway/test_gateway_browser.py``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = os.environ.get("VOICECALL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
]


def chromium_or_skip() -> str:
    """The Chromium executable; skips the test when it or playwright is missing (fails instead under ``CI``)."""
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is required in CI but {CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set VOICECALL_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright (python) is required in CI")
        pytest.skip("playwright is not installed")
    return path


@contextmanager
def chromium_page(chromium: str, mic_wav: Path, tmp_path: Path) -> Iterator[Page]:
    """A page of a fresh headless Chromium (profile in ``tmp_path``) whose microphone plays ``mic_wav`` once;
    the browser is closed after."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, headless=True, executable_path=chromium,
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={mic_wav}%noloop"])
        try:
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()


def hang_up(page: Page) -> None:
    """Press the page's call button again and wait until the call is down."""
    page.click("#connect")
    page.wait_for_function("() => window.voicecall.state === 'disconnected'", timeout=10000)
