"""The WebRTC transport: one aiortc peer connection per call, carrying one :class:`EngineSession`.

What travels where (OpenAI Realtime GA over WebRTC):

* The client's microphone arrives as an Opus (or G.711) RTP track. Each decoded frame (48 kHz, 960 samples,
  s16 stereo or mono) is downmixed, resampled to the engine's 24 kHz by a streaming resampler and fed to the
  session exactly as ``input_audio_buffer.append`` audio would be (:meth:`EngineSession.feed_audio`).
* Answer audio goes out on :class:`AnswerAudioTrack`, which paces 20 ms frames at 48 kHz in real time, plays
  silence when idle, and tells when a response's audio starts and stops playing
  (``output_audio_buffer.started`` / ``.stopped``). ``response.output_audio.delta`` is never sent.
* Every other server event goes as JSON text on the ``oai-events`` data channel; client events come back on it.

Host candidates. aioice (aiortc's ICE agent) advertises every interface address except 127.0.0.1, which is wrong
both for loopback tests and for servers that must advertise one public address. :func:`pinned_host_addresses`
overrides aioice's host address discovery for the peers created inside it (``webrtc.hostAddresses``). The
override is installed by patching ``aioice.ice.get_host_addresses`` once per process, but the patched function
only changes its answer inside a :class:`contextvars.ContextVar` scope, so peers created elsewhere in the same
process (or in another app with other settings) keep aioice's default behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from av import AudioFrame, Packet

from voicecall.audio import ENGINE_RATE, PCM16, Resampler
from voicecall.protocol.errors import error_event

if TYPE_CHECKING:
    from voicecall.config import IceServer
    from voicecall.engine.session import EngineSession

log = logging.getLogger(__name__)

RTC_RATE = 48000
"""Sample rate of the outgoing track (Opus always runs at 48 kHz)."""
FRAME_SAMPLES = 960
"""20 ms at 48 kHz: one RTP packet of answer audio."""
PTIME = FRAME_SAMPLES / RTC_RATE
EVENTS_LABEL = "oai-events"
DATA_CHANNEL_OPEN_TIMEOUT = 20.0
"""Close a call whose data channel has not opened this long after the answer was sent."""
INPUT_BATCH_SAMPLES = 960
"""Engine samples (40 ms at 24 kHz) gathered before feeding the session: halves the per-append VAD/resampler
overhead of 20 ms RTP frames, for at most 20 ms of extra turn-detection delay."""
OPUS_BITRATE = 48000
"""Answer audio is speech in mono: 48 kbit/s Opus is transparent for it (aiortc's own default is 96k stereo)."""
_MAX_TRACKED_ITEMS = 64

# --------------------------------------------------------------------------------- ICE host addresses
# Module-level state, unavoidable: aioice looks up host addresses through a module function, so the override
# must live at module level. The ContextVar keeps it per peer: only code running inside pinned_host_addresses()
# sees the configured list.
_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "voicecall_ice_host_addresses", default=None)
_ORIGINAL_GET_HOST_ADDRESSES: list[Callable[[bool, bool], list[str]]] = []


def _install_host_address_override() -> None:
    """Patch ``aioice.ice.get_host_addresses`` once (idempotent) with a context-aware wrapper."""
    import aioice.ice

    if _ORIGINAL_GET_HOST_ADDRESSES:
        return
    original = aioice.ice.get_host_addresses
    _ORIGINAL_GET_HOST_ADDRESSES.append(original)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        pinned = _HOST_ADDRESSES.get()
        if pinned is None:
            return original(use_ipv4, use_ipv6)
        return [a for a in pinned if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


@contextlib.contextmanager
def pinned_host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """ICE candidate gathering started inside this block advertises exactly ``addresses`` (empty: aioice's
    default, every interface but loopback). Wrap ``setLocalDescription`` of both server and test clients."""
    if not addresses:
        yield
        return
    _install_host_address_override()
    token = _HOST_ADDRESSES.set(tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


def rtc_configuration(ice_servers: Sequence[IceServer]) -> RTCConfiguration:
    """``webrtc.iceServers`` as an aiortc configuration. An empty list really means none: aiortc would otherwise
    fall back to a public Google STUN server."""
    servers = []
    for s in ice_servers:
        servers.append(RTCIceServer(urls=s.urls, username=s.username,
                                    credential=s.credential.get_secret_value() if s.credential else None))
    return RTCConfiguration(iceServers=servers)


# ------------------------------------------------------------------------------------- answer audio
@dataclass(slots=True, eq=False)
class _Stream:
    """The audio of one response's content part, as it is queued and played."""

    response_id: str
    item_id: str
    resampler: Resampler
    started: bool = False  # output_audio_buffer.started was emitted
    played: int = 0  # 48 kHz samples sent so far
    queued: int = 0  # 48 kHz samples queued so far (including played)


@dataclass(slots=True, eq=False)
class _Segment:
    stream: _Stream
    pcm: PCM16 | None  # 48 kHz samples; None marks the end of the stream's audio
    pos: int = 0


@dataclass(slots=True)
class PlaybackCallbacks:
    """What the track reports as answer audio plays (called on the event loop, right as the frame goes out)."""

    started: Callable[[str], None] = field(default=lambda _rid: None)
    stopped: Callable[[str], None] = field(default=lambda _rid: None)


class AnswerAudioTrack(AudioStreamTrack):
    """Outgoing audio: queued answer audio paced in real time as 20 ms frames at 48 kHz, silence when idle.

    :meth:`push` and :meth:`end` are called by the engine as the TTS produces audio (faster than real time);
    :meth:`recv` is called by aiortc's RTP sender, once per frame. :meth:`clear` drops everything not yet sent,
    so a barge-in silences the next frame.
    """

    kind = "audio"

    def __init__(self, callbacks: PlaybackCallbacks | None = None) -> None:
        super().__init__()
        self.callbacks = callbacks or PlaybackCallbacks()
        self._queue: deque[_Segment] = deque()
        self._streams: dict[str, _Stream] = {}  # responses still producing audio
        self._playing: _Stream | None = None  # started and not yet stopped
        self._cleared: OrderedDict[str, None] = OrderedDict()  # responses whose audio was cleared: drop the rest
        self._played_ms: OrderedDict[str, float] = OrderedDict()  # item_id -> ms sent (recent items)
        self._t0: float | None = None
        self._pts = 0
        self._silence = np.zeros((1, FRAME_SAMPLES), np.int16)
        self._time_base = fractions.Fraction(1, RTC_RATE)
        self.frames_sent = 0
        self.late_frames = 0
        self.cleared_response_id: str | None = None
        self.paused = False  # send silence, keep the queue (a possible false interruption)
        self._opus: Any = None  # libopus encoder once Opus is negotiated (see use_opus)

    def use_opus(self, bitrate: int = OPUS_BITRATE) -> None:
        """Encode Opus here, on the event loop, and hand aiortc finished packets.

        aiortc would otherwise encode every 20 ms frame in the loop's default thread pool: one thread round trip per
        frame and session, which under load (GIL contention with model threads, a busy pool) makes frames late.
        Encoding 20 ms of mono Opus inline costs ~0.1 ms.
        """
        from av import CodecContext

        enc = CodecContext.create("libopus", "w")
        enc.bit_rate = bitrate
        enc.format = "s16"
        enc.layout = "mono"
        enc.sample_rate = RTC_RATE
        enc.time_base = self._time_base
        enc.options = {"application": "voip"}
        self._opus = enc

    # ------------------------------------------------------------------------------ producer side
    def push(self, response_id: str, item_id: str, pcm: PCM16) -> None:
        """Queue engine PCM (24 kHz) of one response."""
        if response_id in self._cleared or pcm.size == 0:
            return
        st = self._streams.get(response_id)
        if st is None:
            st = self._streams[response_id] = _Stream(response_id, item_id, Resampler(ENGINE_RATE, RTC_RATE))
        up = st.resampler.process(pcm)
        if up.size:
            st.queued += len(up)
            self._queue.append(_Segment(st, up))

    def end(self, response_id: str) -> None:
        """No more audio for this response: flush the resampler; ``stopped`` fires once it has played out."""
        st = self._streams.pop(response_id, None)
        if st is None or response_id in self._cleared:
            return
        tail = st.resampler.process(np.zeros(0, np.int16), last=True)
        if tail.size:
            st.queued += len(tail)
            self._queue.append(_Segment(st, tail))
        self._queue.append(_Segment(st, None))

    def clear(self) -> tuple[str, float] | None:
        """Drop all queued audio now. Returns (item_id, ms of it already sent) of the response that was playing
        (or queued to play next), else ``None``."""
        current = self._playing
        if current is None and self._queue:
            current = self._queue[0].stream
        if current is None:
            current = next(iter(self._streams.values()), None)  # producing, nothing queued yet
        for seg in self._queue:
            self._mark_cleared(seg.stream.response_id)
        for rid in self._streams:
            self._mark_cleared(rid)
        self._queue.clear()
        self._streams.clear()
        self._playing = None
        self.paused = False
        if current is None:
            return None
        self.cleared_response_id = current.response_id
        return current.item_id, current.played / (RTC_RATE / 1000)

    def _mark_cleared(self, response_id: str) -> None:
        self._cleared[response_id] = None
        while len(self._cleared) > _MAX_TRACKED_ITEMS:
            self._cleared.popitem(last=False)

    def played_ms(self, item_id: str) -> float:
        """Milliseconds of this item's audio sent to the client so far."""
        return self._played_ms.get(item_id, 0.0)

    @property
    def busy(self) -> bool:
        """Audio is queued or a response's buffer is active."""
        return bool(self._queue) or self._playing is not None

    # ------------------------------------------------------------------------------ consumer side
    async def recv(self) -> AudioFrame | Packet:  # type: ignore[override]
        """Next 20 ms frame (or its Opus packet), at real-time pace (aiortc's sender calls this in a loop)."""
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._t0 + self._pts / RTC_RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.1:  # the loop stalled: do not burst to catch up, restart the clock
                self.late_frames += 1
                self._t0 = loop.time() - self._pts / RTC_RATE
        data, notes = self._take()
        frame = AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = RTC_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self.frames_sent += 1
        out: AudioFrame | Packet = frame
        if self._opus is not None:
            packets = self._opus.encode(frame)
            if packets:  # libopus emits one packet per 20 ms frame
                out = packets[0]
                out.pts = self._pts
                out.time_base = self._time_base
        for kind, rid in notes:
            (self.callbacks.started if kind == "started" else self.callbacks.stopped)(rid)
        return out

    def _take(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """Fill one frame from the queue; returns (1 x 960 int16, [(started|stopped, response_id)])."""
        if not self._queue or self.paused:
            return self._silence, []
        out: np.ndarray | None = None
        filled = 0
        notes: list[tuple[str, str]] = []
        q = self._queue
        while q and filled < FRAME_SAMPLES:
            seg = q[0]
            st = seg.stream
            if seg.pcm is None:  # end of this response's audio
                q.popleft()
                if st.started:
                    notes.append(("stopped", st.response_id))
                if self._playing is st:
                    self._playing = None
                continue
            n = min(FRAME_SAMPLES - filled, len(seg.pcm) - seg.pos)
            if out is None and n == FRAME_SAMPLES:
                out = seg.pcm[seg.pos:seg.pos + n].reshape(1, -1)  # a view: from_ndarray makes the only copy
            else:
                if out is None:
                    out = np.zeros((1, FRAME_SAMPLES), np.int16)
                out[0, filled:filled + n] = seg.pcm[seg.pos:seg.pos + n]
            filled += n
            seg.pos += n
            if not st.started:
                st.started = True
                notes.append(("started", st.response_id))
            self._playing = st
            st.played += n
            self._note_played(st)
            if seg.pos >= len(seg.pcm):
                q.popleft()
        # An end marker right behind the last audio: the buffer has drained with this frame.
        while q and q[0].pcm is None:
            st = q.popleft().stream
            if st.started:
                notes.append(("stopped", st.response_id))
            if self._playing is st:
                self._playing = None
        return (out if out is not None else self._silence), notes

    def _note_played(self, st: _Stream) -> None:
        self._played_ms[st.item_id] = st.played / (RTC_RATE / 1000)
        self._played_ms.move_to_end(st.item_id)
        while len(self._played_ms) > _MAX_TRACKED_ITEMS:
            self._played_ms.popitem(last=False)


# ---------------------------------------------------------------------------------- microphone input
class _InlineDecodeQueue:
    """Stands in for an aiortc receiver's decoder queue and decodes each encoded frame right away, on the loop.

    aiortc decodes in one thread per receiver and hands every 20 ms frame back to the loop with
    ``run_coroutine_threadsafe``: two GIL handoffs per frame and session, which under load (model threads holding
    the GIL) starve the event loop. Decoding 20 ms of Opus costs ~0.05 ms, so doing it inline is cheaper. The
    receiver's own thread then idles until :meth:`put` (None) ends it, as aiortc's stop() does.
    """

    def __init__(self, original: Any, output: asyncio.Queue[Any]) -> None:
        import threading

        self._original = original
        self._output = output
        self._stopped = threading.Event()
        self._decoder: Any = None
        self._codec_name: str | None = None

    def put(self, task: Any) -> None:
        if task is None:
            self._stopped.set()
            self._original.put(None)
            return
        from aiortc.codecs import get_decoder

        codec, encoded = task
        if codec.name != self._codec_name:
            self._decoder = get_decoder(codec)
            self._codec_name = codec.name
        try:
            frames = self._decoder.decode(encoded)
        except Exception as exc:  # noqa: BLE001 - av.FFmpegError and friends: drop the frame, keep the decoder
            log.debug("could not decode a %s frame: %s", codec.name, exc)
            return
        for frame in frames:
            self._output.put_nowait(frame)

    def get(self) -> None:
        """Called by aiortc's decoder thread when it started after the swap: wait for the end (then None)."""
        self._stopped.wait()


def _prompt_jitter_buffer(capacity: int) -> Any:
    """A receive jitter buffer that hands over an audio packet **as soon as it arrives** when it is the next one
    expected and nothing is waiting: an Opus packet is a whole frame, and the server does not play the microphone
    out (it only listens), so there is nothing to smooth. aiortc's buffer releases a frame only once the next
    packet shows it complete (20 ms more). A packet out of order falls back to aiortc's logic (prefetch 1): the
    gap is waited for, as before."""
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame
    from aiortc.utils import uint16_add

    class PromptJitterBuffer(JitterBuffer):
        def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
            expected = self._origin is None or packet.sequence_number == self._origin
            if expected and all(p is None for p in self._packets):
                self._origin = uint16_add(packet.sequence_number, 1)
                return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)
            return super().add(packet)

    return PromptJitterBuffer(capacity=capacity, prefetch=1)


def set_jitter_prefetch(pc: RTCPeerConnection, track: MediaStreamTrack, frames: int) -> int | None:
    """Make the receive jitter buffer of ``track`` release a frame once ``frames`` later frames are queued (aiortc
    holds 4 for audio: 60 ms of latency on every microphone frame that buys nothing here, since a gap is waited
    for, not skipped, whatever the prefetch); 0: each packet in order at once (:func:`_prompt_jitter_buffer`).
    Relies on aiortc internals; returns the prefetch in force, or ``None`` when they are not what this expects
    (aiortc's own buffer then stays)."""
    from aiortc.jitterbuffer import JitterBuffer

    receiver = _receiver_of(pc, track)
    attr = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attr, None)
    if not isinstance(current, JitterBuffer) or any(p is not None for p in getattr(current, "_packets", [1])):
        return None  # not aiortc's audio buffer as expected, or media already flowing
    if frames == 0:
        setattr(receiver, attr, _prompt_jitter_buffer(current.capacity))
    else:
        setattr(receiver, attr, JitterBuffer(capacity=current.capacity, prefetch=frames))
    return frames


def _receiver_of(pc: RTCPeerConnection, track: MediaStreamTrack) -> Any:
    """The RTCRtpReceiver whose remote track is ``track`` (``None`` if none is)."""
    for t in pc.getTransceivers():
        if getattr(t.receiver, "_track", None) is track:
            return t.receiver
    return None


def decode_inline(pc: RTCPeerConnection, track: MediaStreamTrack) -> bool:
    """Make the receiver of ``track`` decode on the event loop (see :class:`_InlineDecodeQueue`). Relies on aiortc
    internals; returns False (and leaves aiortc's thread in charge) when they are not what this expects."""
    receiver = _receiver_of(pc, track)
    attr = "_RTCRtpReceiver__decoder_queue"
    original = getattr(receiver, attr, None)
    output = getattr(track, "_queue", None)
    if original is None or not hasattr(original, "put") or not isinstance(output, asyncio.Queue):
        return False
    setattr(receiver, attr, _InlineDecodeQueue(original, output))
    return True


class MicrophoneInput:
    """Decoded RTP audio frames -> engine PCM (mono, 24 kHz) in batches of :data:`INPUT_BATCH_SAMPLES`."""

    def __init__(self, sink: Callable[[PCM16], None], batch: int = INPUT_BATCH_SAMPLES) -> None:
        self._sink = sink
        self._batch = batch
        self._resampler: Resampler | None = None
        self._rate = 0
        self._pending: list[PCM16] = []
        self._pending_len = 0
        self.frames = 0

    def push(self, frame: AudioFrame) -> None:
        self.frames += 1
        pcm = self.to_mono(frame)
        if frame.sample_rate != self._rate:
            self._rate = frame.sample_rate
            self._resampler = Resampler(self._rate, ENGINE_RATE)
        assert self._resampler is not None
        out = self._resampler.process(pcm)
        if not out.size:
            return
        self._pending.append(out)
        self._pending_len += len(out)
        if self._pending_len >= self._batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        pcm = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        self._pending_len = 0
        self._sink(pcm)

    @staticmethod
    def to_mono(frame: AudioFrame) -> PCM16:
        """Mono int16 samples of a decoded frame (s16 packed or planar, any channel count)."""
        arr = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if arr.dtype != np.int16:  # e.g. fltp from another decoder
            arr = np.clip(arr * 32768.0, -32768, 32767).astype(np.int16) if arr.dtype.kind == "f" else arr.astype(np.int16)
        if channels == 1:
            return arr.reshape(-1)  # type: ignore[return-value]
        if frame.format.is_planar:
            return (arr.astype(np.int32).sum(axis=0) // channels).astype(np.int16)
        inter = arr.reshape(-1, channels)
        if channels == 2:
            return ((inter[:, 0].astype(np.int32) + inter[:, 1]) >> 1).astype(np.int16)
        return (inter.astype(np.int32).sum(axis=1) // channels).astype(np.int16)


# --------------------------------------------------------------------------------------- transport
MAX_PENDING_EVENTS = 256
"""Events kept for a data channel that is not open yet (it must open within DATA_CHANNEL_OPEN_TIMEOUT)."""


class WebRTCTransport:
    """The :class:`~voicecall.engine.session.Transport` of a WebRTC call: events on the data channel, audio on
    :class:`AnswerAudioTrack`. Events sent before the channel opens are queued and flushed on open."""

    kind = "webrtc"

    def __init__(self, on_close: Callable[[str], None], max_outgoing_bytes: int = 4 << 20) -> None:
        self.track = AnswerAudioTrack(PlaybackCallbacks(self._audio_started, self._audio_stopped))
        self.max_outgoing_bytes = max_outgoing_bytes
        """Bytes the data channel may hold unsent (``bufferedAmount``) before the call is closed as too slow."""
        self.session: EngineSession | None = None  # set once the session exists (for playback events)
        self.channel: Any = None  # aiortc RTCDataChannel once the client opened "oai-events"
        self._pending: list[str] = []
        self._on_close = on_close
        self.closed = False
        self.events_sent = 0

    # ------------------------------------------------------------------ data channel
    def attach_channel(self, channel: Any) -> None:
        self.channel = channel
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for msg in pending:
            self._send(msg)

    def _send(self, msg: str) -> None:
        if self.channel.bufferedAmount + len(msg) > self.max_outgoing_bytes and self.channel.bufferedAmount:
            if not self.closed:
                self.closed = True
                log.warning("closing a WebRTC call whose client is too slow: %d bytes of events unsent",
                            self.channel.bufferedAmount)
                self._on_close(f"client too slow: more than {self.max_outgoing_bytes} bytes of events unsent")
            return
        try:
            self.channel.send(msg)
            self.events_sent += 1
        except Exception:  # the channel died under us; the call is closing
            log.debug("data channel send failed", exc_info=True)

    @property
    def channel_open(self) -> bool:
        return self.channel is not None and self.channel.readyState == "open"

    # ------------------------------------------------------------------ Transport protocol
    def send_event(self, event: dict[str, Any]) -> None:
        if self.closed or event.get("type") == "response.output_audio.delta":
            return  # audio goes on the media track, never on the data channel
        msg = json.dumps(event, separators=(",", ":"))
        if self.channel_open and not self._pending:
            self._send(msg)
        elif len(self._pending) < MAX_PENDING_EVENTS:
            self._pending.append(msg)

    def send_audio(self, response_id: str, item_id: str, output_index: int, content_index: int,
                   pcm: np.ndarray, fmt: str = "audio/pcm") -> None:
        self.track.push(response_id, item_id, pcm)

    def end_audio(self, response_id: str, item_id: str, output_index: int, content_index: int) -> None:
        self.track.end(response_id)

    def clear_audio(self) -> tuple[str, float] | None:
        return self.track.clear()

    def pause_audio(self) -> None:
        self.track.paused = True

    def resume_audio(self) -> None:
        self.track.paused = False

    @property
    def cleared_response_id(self) -> str | None:
        """Response whose audio the last :meth:`clear_audio` dropped (for ``output_audio_buffer.cleared``)."""
        return self.track.cleared_response_id

    def close(self, code: int = 1000, reason: str = "") -> None:
        self._on_close(reason or "closed by the server")

    # ------------------------------------------------------------------ playback events
    def _audio_started(self, response_id: str) -> None:
        if self.session is not None:
            self.session.emit({"type": "output_audio_buffer.started", "response_id": response_id})

    def _audio_stopped(self, response_id: str) -> None:
        if self.session is not None:
            self.session.emit({"type": "output_audio_buffer.stopped", "response_id": response_id})

    async def drain(self, timeout: float = 1.0) -> None:
        """Give queued data-channel messages a moment to leave before the peer connection closes."""
        deadline = time.monotonic() + timeout
        while self.channel_open and self.channel.bufferedAmount > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


class SdpError(ValueError):
    """The offer cannot be answered; the message says why (sent to the client as a 400)."""


def check_offer(sdp: str) -> None:
    """Reject SDP that is not a usable offer for this API, with a reason a developer can act on."""
    from aiortc.sdp import SessionDescription

    if not sdp.strip():
        raise SdpError("The request body is empty; send the SDP offer from RTCPeerConnection.createOffer().")
    if not sdp.lstrip().startswith("v=0"):
        raise SdpError("The body is not SDP (it must start with 'v=0').")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc raises assorted errors on malformed SDP
        raise SdpError(f"The SDP offer could not be parsed: {type(exc).__name__}: {exc}") from None
    if not desc.media:
        raise SdpError("The SDP offer has no media sections (m= lines).")
    audio = [m for m in desc.media if m.kind == "audio"]
    app = [m for m in desc.media if m.kind == "application"]
    if not audio:
        raise SdpError("The SDP offer has no audio m-line: add the microphone track (or an audio transceiver) "
                       "before createOffer().")
    if not app or not any(m.sctp_port is not None or m.sctpmap for m in app):
        raise SdpError("The SDP offer has no data channel: call pc.createDataChannel('oai-events') before "
                       "createOffer().")
    for m in desc.media:
        if m.dtls is not None and m.dtls.role in ("client", "server"):
            raise SdpError("This SDP is an answer (a=setup:active/passive), not an offer: POST the offer from "
                           "createOffer().")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise SdpError(f"The {m.kind} m-line has no ICE credentials (a=ice-ufrag / a=ice-pwd).")
        if m.dtls is None or not m.dtls.fingerprints:
            raise SdpError(f"The {m.kind} m-line has no DTLS fingerprint (a=fingerprint).")
    if not any(c.mimeType.lower() in ("audio/opus", "audio/pcmu", "audio/pcma") for m in audio for c in m.rtp.codecs):
        raise SdpError("The audio m-line offers no codec this server speaks (opus, PCMU or PCMA).")


class WebRTCPeer:
    """The peer connection of one call: negotiates, pumps microphone audio into the session, routes data-channel
    messages, and tears everything down once (:meth:`close`) whatever ends the call."""

    def __init__(self, transport: WebRTCTransport, *, ice_servers: Sequence[IceServer] = (),
                 host_addresses: Sequence[str] = (), max_message_bytes: int = 16 * 1024 * 1024,
                 open_timeout: float = DATA_CHANNEL_OPEN_TIMEOUT, jitter_buffer_frames: int = 0,
                 idle_seconds: float | None = None) -> None:
        self.transport = transport
        self.idle_seconds = idle_seconds
        self.last_activity = time.monotonic()
        """When the client last sent an event or microphone audio (``server.idleSessionSeconds``)."""
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.host_addresses = list(host_addresses)
        self.max_message_bytes = max_message_bytes
        self.open_timeout = open_timeout
        self.session: EngineSession | None = None
        self.mic = MicrophoneInput(self._feed)
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.inline_decoding = False
        self.jitter_buffer_frames = jitter_buffer_frames
        self.jitter_prefetch: int | None = None  # what the microphone's jitter buffer holds (None: aiortc's own)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)

    # ------------------------------------------------------------------ negotiation
    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the answer SDP (all candidates included: aiortc does not trickle)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        self.pc.addTrack(self.transport.track)  # rides on the client's audio m-line (sendrecv)
        answer = await self.pc.createAnswer()
        with pinned_host_addresses(self.host_addresses):
            await self.pc.setLocalDescription(answer)
        for t in self.pc.getTransceivers():
            codecs = getattr(t, "_codecs", None) or []  # negotiated codecs, preferred first (aiortc internal)
            if t.sender.track is self.transport.track and codecs and codecs[0].mimeType.lower() == "audio/opus":
                self.transport.track.use_opus()
        self._spawn(self._watch_open())
        if self.idle_seconds:
            self._spawn(self._watch_idle(self.idle_seconds))
        return str(self.pc.localDescription.sdp)

    def start(self, session: EngineSession) -> None:
        """Route client messages to ``session`` (in order, one at a time, like the WebSocket)."""
        self.session = session
        self._spawn(self._dispatch())

    # ------------------------------------------------------------------ events from aiortc
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.jitter_prefetch = set_jitter_prefetch(self.pc, track, self.jitter_buffer_frames)
            self.inline_decoding = decode_inline(self.pc, track)
            if not self.inline_decoding:
                log.debug("aiortc internals changed: microphone audio is decoded in aiortc's thread")
            self._spawn(self._consume(track))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            try:
                self.mic.push(frame)  # type: ignore[arg-type]
            except Exception:  # one bad frame must not end the call
                log.exception("could not process a microphone frame")

    def _feed(self, pcm: PCM16) -> None:
        self.last_activity = time.monotonic()
        if self.session is not None:
            self.session.feed_audio(pcm)

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != EVENTS_LABEL:
            log.info("ignoring data channel %r (only %r carries events)", channel.label, EVENTS_LABEL)
            return
        if self.transport.channel is not None:
            log.info("ignoring a second %r data channel", EVENTS_LABEL)
            return
        self.transport.attach_channel(channel)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self.close("the data channel closed"))

    def _on_message(self, msg: str | bytes) -> None:
        self.last_activity = time.monotonic()
        self._inbox.put_nowait(msg)

    async def _watch_idle(self, seconds: float) -> None:
        """Close the call once neither events nor microphone audio came for ``seconds`` (a vanished peer)."""
        from voicecall.transports.websocket import idle_timeout

        while not self.closed.is_set():
            quiet = time.monotonic() - self.last_activity
            if quiet >= seconds:
                idle_timeout(self.transport, "any event or audio", seconds)
                return
            await asyncio.sleep(min(seconds - quiet + 0.05, 5.0))

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("peer connection %s", state)
        if state in ("failed", "closed"):
            self.close(f"the peer connection is {state}")

    async def _watch_open(self) -> None:
        t0 = time.monotonic()
        while not self.transport.channel_open:
            if self.closed.is_set():
                return
            if time.monotonic() - t0 > self.open_timeout:
                self.close(f"the data channel did not open within {self.open_timeout:g} s")
                return
            await asyncio.sleep(0.1)

    async def _dispatch(self) -> None:
        while True:
            msg = await self._inbox.get()
            if msg is None or self.session is None:
                return
            if len(msg) > self.max_message_bytes:
                self.transport.send_event(error_event(
                    "message_too_large", f"The message is {len(msg)} bytes; this server accepts at most "
                    f"{self.max_message_bytes} bytes per message.", param=None))
                continue
            try:
                await self.session.handle_message(msg)
            except Exception:  # as on the WebSocket, the session goes on
                log.exception("handling a data-channel message failed")
                self.transport.send_event(error_event("internal_error", "The server failed to handle the event.",
                                                      param=None, type="server_error"))

    # ------------------------------------------------------------------ teardown
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self, reason: str) -> None:
        """Start closing (idempotent, callable from any callback); await :attr:`closed` for the end."""
        if self.close_reason:
            return
        self.close_reason = reason
        task = asyncio.ensure_future(self._close())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self) -> None:
        log.info("closing WebRTC call: %s", self.close_reason)
        try:
            if self.session is not None:
                await self.transport.drain()
                await self.session.close()
            self.transport.closed = True
            self._inbox.put_nowait(None)
            self.transport.track.stop()
            await self.pc.close()
        except Exception:  # teardown must finish
            log.exception("error while closing a WebRTC call")
        finally:
            current = asyncio.current_task()
            for t in list(self._tasks):
                if t is not current:
                    t.cancel()
            self.closed.set()
