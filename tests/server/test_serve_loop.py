"""``voicecall serve``'s server (:class:`voicecall.cluster.drain.DrainingServer`) wakes once a second, not ten
times (uvicorn polls ``should_exit`` every 100 ms: on an idle server that was nearly all its CPU), and still stops at
once when ``should_exit`` is set from another thread. No timing is asserted: the tick is set to an hour, so a server
that stops did so because it was woken."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from voicecall.cluster.drain import DrainingServer
from voicecall.server.thread import free_port


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


class _Counting(DrainingServer):
    TICK_SECONDS = 3600.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config, state=None)  # type: ignore[arg-type]  # (drain needs it on SIGTERM only)
        self.ticks: list[int] = []

    async def on_tick(self, counter: int) -> bool:
        self.ticks.append(counter)
        return await super().on_tick(counter)


def test_should_exit_wakes_the_one_second_main_loop_at_once() -> None:
    server = _Counting(uvicorn.Config(_app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    server.should_exit = True  # from this thread, as ServerThread.stop and the drain do
    thread.join(timeout=60)
    assert not thread.is_alive(), "the main loop slept through should_exit"
    assert server.ticks[0] == 0 and all(t % 10 == 0 for t in server.ticks)  # uvicorn's Date header tick kept
    assert len(server.ticks) == 2  # the first tick, then the one should_exit woke
