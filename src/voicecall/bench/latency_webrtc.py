"""One spoken turn over WebRTC for ``voicecall bench latency --transport webrtc``.

The client is aiortc doing the OpenAI WebRTC flow: ``POST /session`` mints an ``ek_`` client secret, the SDP offer
(a microphone track and the ``oai-events`` data channel) goes to ``calls_url`` with ``Authorization: Bearer``, the
server answers ``201`` with its SDP. The microphone track plays in real time, 20 ms frames at 48 kHz: low noise,
then (once the data channel is open) 0.5 s of low noise, the utterance, and low noise again until the answer has been
heard and ``response.done`` arrived. The call is then hung up (``POST {calls_url}/{call_id}/hangup``).

Measured, from the moment the frame holding the last speech sample (:func:`last_speech_sample`) was handed to the
sender:

* ``voice_to_voice_ms``: the first answer frame *heard* on the received track (RMS above ``HEARD_DBFS``). It includes
  aiortc's receive jitter buffer on the client (~80 ms of prefetch; a browser's NetEq adds ~40-60 ms instead).
* ``voice_to_voice_event_ms``: the ``output_audio_buffer.started`` event on the data channel (the server started
  sending the answer), i.e. without the client's jitter buffer.

plus the server's parts from ``response.done.response.x_voicecall.latency_ms`` (the server's own voice-to-voice is
stored as ``server_voice_to_voice_ms``), ``status``, ``heard`` (input transcription) and ``answer`` (output
transcript): the same dict as the WebSocket path of :mod:`voicecall.bench.latency`.

WebRTC only runs inside a loopback-only network namespace: when ``VOICECALL_IN_NETNS`` is not ``1`` the command
re-executes itself in one (:func:`voicecall.bench.sessions.ensure_netns`). ICE is pinned to 127.0.0.1 on the client
(:func:`pinned_host_addresses`) and on the in-process server (``webrtc.hostAddresses``).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlparse

import numpy as np

from voicecall.audio import ENGINE_RATE, resample
from voicecall.bench.common import last_speech_sample

RTC_RATE = 48000
FRAME = RTC_RATE // 50  # 20 ms
LEAD_S = 0.5
NOISE_STD = 30.0  # ~ -61 dBFS: a quiet microphone, never exact zeros
HEARD_DBFS = -40.0
HEARD_RMS = 10 ** (HEARD_DBFS / 20)
ANSWER_TIMEOUT_S = 30.0
DONE_TIMEOUT_S = 60.0


def _require_netns(base: str) -> None:
    """Run inside a loopback-only network namespace (re-exec this command into one), and only towards 127.0.0.1."""
    if urlparse(base).hostname != "127.0.0.1":
        raise SystemExit(f"bench latency over WebRTC only talks to 127.0.0.1 (got {base})")
    if os.environ.get("VOICECALL_IN_NETNS") == "1":
        return
    argv = sys.argv[1:]
    if any(a == "--url" or a.startswith("--url=") for a in argv):
        raise SystemExit("bench latency --transport webrtc --url …: run the server and this command in the same "
                         "loopback-only network namespace (tests/netns-run), or drop --url to use an in-process "
                         "server")
    from voicecall.bench.sessions import ensure_netns

    # Replaces this process (the in-process server already started is discarded; the new one starts in the netns).
    ensure_netns(argv)


class _Mic:
    """The microphone track: low noise, or the queued clip; notes when the frame with sample ``mark`` went out."""

    def __init__(self) -> None:
        from aiortc.mediastreams import MediaStreamTrack

        mic = self

        class Track(MediaStreamTrack):
            kind = "audio"

            async def recv(self) -> Any:  # type: ignore[override]
                return await mic.recv()

        self.track = Track()
        self.rng = np.random.default_rng(5)
        self.clip: np.ndarray | None = None
        self.pos = 0
        self.mark = -1
        self.mark_sent: float | None = None
        self.started: float | None = None  # when the first clip frame went out
        self.t0: float | None = None
        self.pts = 0
        self.max_lag_ms = 0.0  # worst lateness of a clip frame against real time (client overload)

    def play(self, clip: np.ndarray, mark: int) -> None:
        self.clip, self.pos, self.mark = clip, 0, mark

    async def recv(self) -> Any:
        from av import AudioFrame

        if self.t0 is None:
            self.t0 = time.perf_counter()
        else:
            self.pts += FRAME
            wait = self.t0 + self.pts / RTC_RATE - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            elif self.clip is not None and self.pos < len(self.clip):
                self.max_lag_ms = max(self.max_lag_ms, -wait * 1000)
        out = np.clip(self.rng.normal(0, NOISE_STD, FRAME), -32768, 32767).astype(np.int16)
        if self.clip is not None and self.pos < len(self.clip):
            n = min(FRAME, len(self.clip) - self.pos)
            out[:n] = self.clip[self.pos:self.pos + n]
            now = time.perf_counter()
            if self.pos == 0:
                self.started = now
            if self.pos <= self.mark < self.pos + FRAME:
                self.mark_sent = now
            self.pos += n
        frame = AudioFrame.from_ndarray(out.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RTC_RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, RTC_RATE)
        return frame


async def one_turn_webrtc(base: str, pcm24k: np.ndarray) -> dict[str, Any]:
    """One turn: stream ``pcm24k`` (the utterance at the engine rate) as the microphone of a WebRTC call to ``base``
    (``http://127.0.0.1:port``) and time the answer. Returns the dict of :func:`voicecall.bench.latency.one_turn_ws`
    plus ``voice_to_voice_event_ms`` and a few client-side diagnostics."""
    _require_netns(base)

    import httpx


    speech = resample(pcm24k, ENGINE_RATE, RTC_RATE)
    lead = np.clip(np.random.default_rng(3).normal(0, NOISE_STD, int(LEAD_S * RTC_RATE)), -32768, 32767)
    clip = np.concatenate([lead.astype(np.int16), speech])
    last = len(lead) + last_speech_sample(speech, RTC_RATE) - 1  # index of the last speech sample

    result: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    mic = _Mic()
    heard: asyncio.Future[float] = loop.create_future()
    done: asyncio.Future[dict[str, Any]] = loop.create_future()
    started_at: list[float] = []
    transcript: list[str] = []
    frames_in = 0
    tasks: list[asyncio.Task[Any]] = []

    def on_message(raw: str | bytes) -> None:
        now = time.perf_counter()
        ev = json.loads(raw)
        t = ev.get("type")
        if t == "output_audio_buffer.started" and not started_at:
            started_at.append(now)
        elif t == "conversation.item.input_audio_transcription.completed":
            transcript.append(ev.get("transcript", ""))
        elif t == "response.output_audio_transcript.done":
            result["answer"] = ev.get("transcript", "")
        elif t == "response.done" and not done.done():
            done.set_result(ev.get("response", {}))
        elif t == "error":
            result.setdefault("errors", []).append(ev.get("error", {}).get("message"))

    def on_frame(now: float, loud: bool) -> None:
        nonlocal frames_in
        frames_in += 1
        if loud and not heard.done() and mic.mark_sent is not None:
            heard.set_result(now)

    pc, dc, opened = new_peer(mic, on_frame, on_message, tasks)
    call: tuple[str, str | None] | None = None
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        try:
            call = await open_call(http, pc, opened, result)
            if call is None:
                return result
            dc.send(json.dumps({"type": "session.update", "session": {
                "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}}))
            mic.play(clip, last)

            try:
                t_heard = await asyncio.wait_for(asyncio.shield(heard), len(clip) / RTC_RATE + ANSWER_TIMEOUT_S)
            except TimeoutError:
                t_heard = None
            t_last = mic.mark_sent
            if t_last is not None and t_heard is not None:
                result["voice_to_voice_ms"] = (t_heard - t_last) * 1000
            try:
                resp = await asyncio.wait_for(asyncio.shield(done), DONE_TIMEOUT_S)
                for k, v in resp.get("x_voicecall", {}).get("latency_ms", {}).items():
                    result["server_" + k if k == "voice_to_voice_ms" else k] = v
                result["status"] = resp.get("status")
            except TimeoutError:
                result["status"] = "timeout"
            if t_last is not None and started_at:
                result["voice_to_voice_event_ms"] = (started_at[0] - t_last) * 1000
                if t_heard is not None:
                    result["client_receive_ms"] = (t_heard - started_at[0]) * 1000
            result["heard"] = " ".join(transcript)
            result["client_send_lag_ms_max"] = round(mic.max_lag_ms, 1)
            result["frames_received"] = frames_in
        except Exception as exc:  # noqa: BLE001 - a failed turn is a result, not a crash
            result.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
            result.setdefault("status", "error")
        finally:
            await hang_up(http, call, result)
            for t in tasks:
                t.cancel()
            await pc.close()
    result.setdefault("heard", " ".join(transcript))
    return result


def _silent_after(frames: list[tuple[float, bool]], t0: float, run: int = 10) -> float:
    """Seconds from ``t0`` to the start of the first ``run`` quiet frames in a row (200 ms: longer than the gaps
    inside an answer, shorter than the time to the answer of the interrupting turn)."""
    quiet, start = 0, t0
    for t, loud in frames:
        if t < t0:
            continue
        if loud:
            quiet = 0
        else:
            if quiet == 0:
                start = t
            quiet += 1
            if quiet >= run:
                return start - t0
    return float("nan")


def new_peer(mic: _Mic, on_frame: Any, on_message: Any, tasks: list[asyncio.Task[Any]]) -> tuple[Any, Any, asyncio.Event]:
    """A client peer: the microphone track, the answer track read by :func:`received_frames`, the oai-events
    channel. Returns (peer connection, data channel, event set when the channel opens)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(received_frames(track, on_frame))))
    pc.addTrack(mic.track)
    dc = pc.createDataChannel("oai-events")
    opened = asyncio.Event()
    dc.on("open", opened.set)
    dc.on("message", on_message)
    return pc, dc, opened


async def received_frames(track: Any, on_frame: Any) -> None:
    """Read the answer track until it ends, calling ``on_frame(arrival time, loud)`` for every frame."""
    from aiortc.mediastreams import MediaStreamError

    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.perf_counter()
        arr = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.float64)
        on_frame(now, bool(np.sqrt(np.mean(arr ** 2)) / 32768 > HEARD_RMS))


async def open_call(http: Any, pc: Any, opened: asyncio.Event, result: dict[str, Any]) -> tuple[str, str | None] | None:
    """The OpenAI WebRTC flow for ``pc`` (tracks and data channel added): mint a secret, post the offer, apply the
    answer, wait for the data channel. Returns (secret, call URL) or ``None`` with ``result`` saying why."""
    from aiortc import RTCSessionDescription

    from voicecall.transports.webrtc import pinned_host_addresses

    r = await http.post("/session", json={})
    if r.status_code != 200:
        result["status"] = f"session HTTP {r.status_code}"
        result["errors"] = [r.text[:300]]
        return None
    info = r.json()
    secret = str(info["value"])
    calls_url = str(info.get("calls_url") or "/v1/realtime/calls")
    t_connect = time.perf_counter()
    with pinned_host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    r = await http.post(calls_url, content=pc.localDescription.sdp,
                        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"})
    if r.status_code != 201:
        result["status"] = f"calls HTTP {r.status_code}"
        result["errors"] = [r.text[:300]]
        return None
    location = r.headers.get("location", "")
    call_id = location.rstrip("/").rsplit("/", 1)[-1] if location else None
    call_url = None
    if call_id:
        call_url = f"{calls_url.rstrip('/')}/{call_id}"
        result["call_id"] = call_id
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
    await asyncio.wait_for(opened.wait(), 30)
    result["connect_ms"] = (time.perf_counter() - t_connect) * 1000
    return secret, call_url


async def hang_up(http: Any, call: tuple[str, str | None] | None, result: dict[str, Any]) -> None:
    import httpx

    if call is None or call[1] is None:
        return
    try:
        h = await http.post(call[1] + "/hangup", headers={"Authorization": f"Bearer {call[0]}"})
        if h.status_code != 200:
            result.setdefault("errors", []).append(f"hangup HTTP {h.status_code}: {h.text[:200]}")
    except httpx.HTTPError as exc:
        result.setdefault("errors", []).append(f"hangup: {type(exc).__name__}: {exc}")


async def barge_in_webrtc(base: str, question24k: np.ndarray, barge24k: np.ndarray) -> dict[str, Any]:
    """Ask ``question24k`` over a WebRTC call; 0.6 s after its answer is heard, say ``barge24k``. Measures
    ``stop_ms``: the first speech frame of the barge-in sent -> the answer silent at the client (the first of 200 ms
    of quiet frames), when the answer was audible in the 300 ms before the onset (``audible_before``)."""
    _require_netns(base)

    import httpx

    result: dict[str, Any] = {}
    loop = asyncio.get_running_loop()
    mic = _Mic()
    heard: asyncio.Future[float] = loop.create_future()
    tasks: list[asyncio.Task[Any]] = []
    events: list[str] = []
    frames: list[tuple[float, bool]] = []  # (arrival, loud) of every answer frame

    def on_frame(now: float, loud: bool) -> None:
        if loud and not heard.done():
            heard.set_result(now)
        frames.append((now, loud))

    def lead(s: float) -> np.ndarray:
        return np.clip(np.random.default_rng(3).normal(0, NOISE_STD, int(s * RTC_RATE)), -32768, 32767).astype(np.int16)

    question = np.concatenate([lead(LEAD_S), resample(question24k, ENGINE_RATE, RTC_RATE)])
    speech = resample(barge24k, ENGINE_RATE, RTC_RATE)
    barge = np.concatenate([lead(0.2), speech, lead(1.0)])
    onset = int(0.2 * RTC_RATE) + int(np.argmax(np.abs(speech) > 1000))
    pc, _, opened = new_peer(mic, on_frame, lambda raw: events.append(json.loads(raw).get("type", "")), tasks)
    call: tuple[str, str | None] | None = None
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        try:
            call = await open_call(http, pc, opened, result)
            if call is None:
                return result
            mic.play(question, len(question) - 1)
            await asyncio.wait_for(asyncio.shield(heard), len(question) / RTC_RATE + ANSWER_TIMEOUT_S)
            await asyncio.sleep(0.6)
            mic.mark_sent = None
            mic.play(barge, onset)
            await asyncio.sleep(len(barge) / RTC_RATE + 1.0)
            t0 = mic.mark_sent
            if t0 is not None:
                result["audible_before"] = any(loud and t0 - 0.3 <= t < t0 for t, loud in frames)
                if result["audible_before"]:  # else the answer had ended or paused: no measurement
                    result["stop_ms"] = _silent_after(frames, t0) * 1000
            result["interrupted"] = "input_audio_buffer.speech_started" in events
        except Exception as exc:  # noqa: BLE001 - a failed run is a result, not a crash
            result.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        finally:
            await hang_up(http, call, result)
            for t in tasks:
                t.cancel()
            await pc.close()
    return result
