"""``python -m voicecall.bench.relay_hotpath``: the gateway relay's Python cost per relayed pair (one
``input_audio_buffer.append`` up, its ``response.output_audio.delta`` down), warm, without sockets or a kernel.

The real objects of the hot path -- ``voicecall serve``'s WebSocket protocol (:mod:`voicecall.server.ws_protocol`)
for the client, the upstream ``websockets`` connection (:class:`~voicecall.transports.frames.FrameClientConnection`)
and the :class:`~voicecall.gateway.relay.Relay` between them, with a history recorder -- are fed whole frames through
their ``data_received`` as the event loop would, and write to transports that only count. What it measures is the
interpreter's part of ``voicecall bench relay``'s CPU per message, without the kernel's TCP work and the event
loop's: the figure to compare two versions of the code with (run it with ``PYTHONPATH`` pointing at each checkout's
``src``), far steadier than the full benchmark on a busy machine. In the full benchmark the same code costs about
twice as much per pair: every frame finds the processor's caches cold after the kernel's work.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
import types
from typing import Any

ROUNDS = 7


class _CountingTransport:
    """What the hot path writes to: counts the writes, never blocks."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args: Any, **kwargs: Any) -> None:
        pass

    def get_extra_info(self, *args: Any, **kwargs: Any) -> None:
        return None


class _NullStore:
    """A history store that accepts everything and keeps nothing (the recorder's hot-path work is what counts)."""

    enabled = True

    def __getattr__(self, name: str) -> Any:
        async def nothing(*args: Any, **kwargs: Any) -> None:
            return None

        return nothing


def _frames(n: int = 50) -> list[tuple[bytes, bytes]]:
    """``n`` (masked client append frame, upstream delta frame) pairs as the relay benchmark sends them."""
    from voicecall.transports.frames import encode_frame

    audio = base64.b64encode(os.urandom(960))  # 20 ms of 24 kHz PCM16: 1,280 base64 characters
    out = []
    for k in range(n):
        append = b'{"type":"input_audio_buffer.append","audio":"' + audio + b'","event_id":"c' + str(k).encode() + b'"}'
        delta = (b'{"type":"response.output_audio.delta","event_id":"c' + str(k).encode() + b'","response_id":'
                 b'"resp_bench","item_id":"item_bench","output_index":0,"content_index":0,"delta":"' + audio + b'"}')
        out.append((encode_frame(append, True, os.urandom(4)), encode_frame(delta)))
    return out


async def measure(pairs: int) -> dict[str, Any]:
    """Relay ``pairs`` pairs ``ROUNDS`` times; the best round's CPU µs per pair, and what was written."""
    import uvicorn
    from uvicorn.server import ServerState
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.server import ServerProtocol
    from websockets.uri import parse_uri

    from voicecall.config import load_config
    from voicecall.gateway.relay import Relay, _FromClient, _FromUpstream
    from voicecall.server.ws_protocol import FrameWebSocketProtocol
    from voicecall.store.recorder import ConversationRecorder
    from voicecall.transports.frames import FrameClientConnection

    cfg = load_config(None, env={}, overrides={"plugins.voice-call.provider": "openai-realtime",
                                               "plugins.voice-call.openaiRealtime.apiKey": "sk-bench-not-a-real-key",
                                               "store.url": "none"})
    ws = types.SimpleNamespace(query_params={}, scope={})
    principal = types.SimpleNamespace(secret=None, label="bench", client="bench")
    relay = Relay(ws, types.SimpleNamespace(config=cfg), principal)  # type: ignore[arg-type]
    relay.recorder = ConversationRecorder(_NullStore(), conversation_id="conv_bench",  # type: ignore[arg-type]
                                          provider="openai-realtime", model="gpt-realtime", voice="marin",
                                          transport="relay", client="bench", prices={})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = uvicorn.Config(app=app, ws="websockets-sansio", lifespan="off")
    config.load()
    client = FrameWebSocketProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    client_transport, upstream_transport = _CountingTransport(), _CountingTransport()
    client.transport = client_transport  # type: ignore[assignment]  # an accepted WebSocket, handshake done
    client.conn = ServerProtocol()
    client.conn.state = State.OPEN
    client.handshake_complete = True
    client._fast = True
    upstream = FrameClientConnection(ClientProtocol(parse_uri("ws://127.0.0.1/v1/realtime")), ping_interval=None)
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    upstream.protocol.state = State.OPEN
    upstream._fast = True
    relay.client, relay.upstream = client.frames_socket, upstream
    client.frames_socket.sink = _FromClient(relay)
    upstream.attach(_FromUpstream(relay))
    frames = _frames()
    up_in, down_in = client.data_received, upstream.data_received
    for c, u in frames * 20:  # warm up
        up_in(c)
        down_in(u)
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.process_time()
        for _ in range(max(1, pairs // len(frames))):
            for c, u in frames:
                up_in(c)
                down_in(u)
        best = min(best, (time.process_time() - t) / (max(1, pairs // len(frames)) * len(frames)) * 1e6)
    return {"us_per_pair": best, "relayed_up": relay.up_messages, "relayed_down": relay.down_messages,
            "upstream_writes": upstream_transport.writes, "client_writes": client_transport.writes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicecall.bench.relay_hotpath", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=50000, help="relayed pairs per round (default 50000)")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.pairs))
    print(f"{result['us_per_pair']:.2f} µs of CPU per relayed pair (append up + delta down), warm, best of {ROUNDS}"
          f" rounds of {args.pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
