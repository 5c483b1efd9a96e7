"""Fixtures of the WebRTC tests: a server running the echo engine, speech recordings, and an aiortc client.

Every test here needs the loopback-only network namespace (``tests/netns-run``): it skips with the reason when
``VOICECALL_NO_NETNS=1`` (or outside the namespace), and fails under ``CI``. ICE is pinned to 127.0.0.1 on both
sides (server: ``webrtc.hostAddresses``; client: :func:`pinned_host_addresses`).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from tests.conftest import ServerThread, fixed_piper, make_config, netns_required
from voicecall.audio import resample, write_wav

RTC_RATE = 48000
FRAME = 960

# The engine used by these tests answers by echoing the words it recognised ("You said: …"), spoken as tone
# bursts: fast, deterministic, and still through the real recogniser (pocketsphinx) and the real transport.
ECHO_STACK: dict[str, Any] = {
    "plugins.voice-call.local.vad": {"type": "energy", "thresholdDbfs": -40},
    "plugins.voice-call.local.stt": {"type": "pocketsphinx"},
    "plugins.voice-call.local.llm": {"type": "echo"},
    "plugins.voice-call.local.tts": {"type": "tone"},
    "plugins.voice-call.local.voice": "marin",
}
QUESTION = "What is the capital of France?"
BARGE_IN = "Please stop talking now."


@pytest.fixture(autouse=True)
def _netns() -> None:
    netns_required()


# ------------------------------------------------------------------------------------------- speech
_tts_cache: dict[str, np.ndarray] = {}


def speech(text: str, rate: int = RTC_RATE, lead_s: float = 0.0, tail_s: float = 0.0, noise: float = 40.0,
           seed: int = 1) -> np.ndarray:
    """``text`` spoken by the embedded Piper TTS (registry stage ``tts: piper``), mono int16 at ``rate``, with
    silence around it and a low noise floor (a real microphone never sends exact zeros)."""
    if text not in _tts_cache:
        tts = fixed_piper()
        pcm = np.concatenate(list(tts.synthesize(text)))
        _tts_cache[text] = resample(pcm, tts.sample_rate, RTC_RATE)
    pcm = resample(_tts_cache[text], RTC_RATE, rate)
    out = np.concatenate([np.zeros(int(lead_s * rate)), pcm.astype(np.float64), np.zeros(int(tail_s * rate))])
    out += np.random.default_rng(seed).normal(0, noise, out.shape)
    return np.clip(out, -32768, 32767).astype(np.int16)


def barge_in_wav(path: Path, lead_s: float, barge_after_s: float) -> tuple[Path, float, float]:
    """A fake microphone (s16 mono 48 kHz): lead silence, :data:`QUESTION`, a pause of ``barge_after_s``, then
    :data:`BARGE_IN` spoken over the answer, and a tail. Returns (path, question end, barge-in start) in seconds."""
    q = speech(QUESTION, RTC_RATE, lead_s=lead_s, tail_s=barge_after_s, seed=2)
    b = speech(BARGE_IN, RTC_RATE, lead_s=0.0, tail_s=4.0, seed=3)
    write_wav(path, np.concatenate([q, b]), RTC_RATE)
    return path, len(q) / RTC_RATE - barge_after_s, len(q) / RTC_RATE


@pytest.fixture
def speech_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a speech WAV (s16 mono 48 kHz) for Chromium's fake microphone."""

    def make(text: str, lead_s: float = 1.0, tail_s: float = 1.0, name: str = "speech.wav") -> Path:
        path = tmp_path / name
        write_wav(path, speech(text, RTC_RATE, lead_s, tail_s), RTC_RATE)
        return path

    return make


# ------------------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def rtc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A server with the echo engine, ICE pinned to 127.0.0.1, store in tmp (shared by a module's tests)."""
    netns_required()
    tmp = tmp_path_factory.mktemp("rtc")
    with ServerThread(make_config(tmp, **ECHO_STACK, **{"server.maxSessions": 8})) as srv:
        yield srv


@pytest.fixture
def make_rtc_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Servers with the echo engine plus extra settings (``{"server.maxSessions": 1}`` …), stopped after the test."""
    started: list[ServerThread] = []

    def factory(**overrides: Any) -> ServerThread:
        srv = ServerThread(make_config(tmp_path, **{**ECHO_STACK, **overrides})).__enter__()
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        srv.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------- client
class SpeechTrack(MediaStreamTrack):
    """A microphone track for aiortc: plays queued PCM (48 kHz mono) in real time, a low noise floor otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[np.ndarray] = []
        self.pos = 0
        self.t0: float | None = None
        self.pts = 0
        self.rng = np.random.default_rng(5)

    def play(self, pcm: np.ndarray) -> None:
        """Queue speech (48 kHz mono int16) after whatever is still playing."""
        self.queue.append(pcm)

    @property
    def playing(self) -> bool:
        return bool(self.queue)

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
        else:
            self.pts += FRAME
            await asyncio.sleep(max(0.0, self.t0 + self.pts / RTC_RATE - loop.time()))
        out = np.clip(self.rng.normal(0, 30, FRAME), -32768, 32767).astype(np.int16)
        filled = 0
        while self.queue and filled < FRAME:
            cur = self.queue[0]
            n = min(FRAME - filled, len(cur) - self.pos)
            out[filled:filled + n] = cur[self.pos:self.pos + n]
            filled += n
            self.pos += n
            if self.pos >= len(cur):
                self.queue.pop(0)
                self.pos = 0
        frame = AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RTC_RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RTC_RATE)
        return frame


class RtcClient:
    """The OpenAI WebRTC flow from aiortc: offer with a mic track + ``oai-events``, POST, answer, events.

    ``received`` holds one (loop time, RMS) per 20 ms frame of the server's audio track.
    """

    def __init__(self, base_url: str) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.base_url = base_url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = SpeechTrack()
        self.pc.addTrack(self.mic)
        self.dc = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self.received: list[tuple[float, float]] = []
        self.audio: list[np.ndarray] = []
        self.call_id: str | None = None
        self.location: str | None = None
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.opened = asyncio.Event()
        self.dc.on("open", self.opened.set)
        self.dc.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, msg: str | bytes) -> None:
        self.events.append(json.loads(msg))
        self.event_times.append(asyncio.get_running_loop().time())
        self._changed.set()

    def _on_track(self, track: Any) -> None:
        async def read() -> None:
            loop = asyncio.get_running_loop()
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                arr = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.audio.append(arr.astype(np.int16))
                rms = float(np.sqrt(np.mean(arr.astype(np.float64) ** 2))) / 32768.0
                self.received.append((loop.time(), rms))

        self._tasks.append(asyncio.ensure_future(read()))

    async def offer(self) -> str:
        from voicecall.transports.webrtc import pinned_host_addresses

        with pinned_host_addresses(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def connect(self, secret: str | None = None, *, sdp: str | None = None, multipart_session: dict | None = None,
                      expect: int = 201) -> Any:
        """POST the offer; on 201 apply the answer and wait for the data channel. Returns the httpx response."""
        import httpx
        from aiortc import RTCSessionDescription

        offer = sdp if sdp is not None else await self.offer()
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            if multipart_session is not None:
                files = {"sdp": (None, offer, "application/sdp"),
                         "session": (None, json.dumps(multipart_session), "application/json")}
                r = await http.post("/v1/realtime/calls", files=files, headers=headers)
            else:
                r = await http.post("/v1/realtime/calls", content=offer,
                                    headers={**headers, "Content-Type": "application/sdp"})
        assert r.status_code == expect, (r.status_code, r.text)
        if r.status_code != 201:
            return r
        self.location = r.headers["location"]
        self.call_id = self.location.rsplit("/", 1)[-1]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
        await asyncio.wait_for(self.opened.wait(), 10)
        return r

    def send(self, event: dict[str, Any]) -> None:
        self.dc.send(json.dumps(event))

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0, start: int = 0) -> dict[str, Any]:
        """The first event from index ``start`` matching ``pred`` (waits for it)."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.events):
                if pred(self.events[i]):
                    return self.events[i]
                i += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out; events so far: {[e['type'] for e in self.events[-25:]]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_type(self, etype: str, timeout: float = 30.0, start: int = 0, **fields: Any) -> dict[str, Any]:
        return await self.wait_for(lambda e: e["type"] == etype and all(e.get(k) == v for k, v in fields.items()),
                                   timeout, start)

    def of_type(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == etype]

    def loud_frames(self, since: float = 0.0, until: float = float("inf"), threshold: float = 0.02) -> int:
        return sum(1 for t, r in self.received if since <= t < until and r > threshold)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


async def new_secret(base_url: str, api_key: str | None = None, **body: Any) -> str:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        r = await http.post("/session", json=body, headers=headers)
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["calls_url"] == "/v1/realtime/calls"
    return str(info["value"])
