"""Graceful drain: the first SIGTERM stops new sessions, lets live ones finish, then shuts the server down.

On SIGTERM (what Kubernetes, systemd and ``docker stop`` send) :class:`DrainingServer`:

1. marks the replica as draining: ``/readyz`` answers 503 (the load balancer stops sending new clients) and every
   new session is refused with ``server_draining`` (close code 1012 "service restart", so clients reconnect and land
   on another replica);
2. waits for live sessions to end, up to ``server.drainSeconds``;
3. ends the remaining ones with an ``error`` event (``server_shutting_down``) and a close with a reason, and the
   WebRTC calls with a hangup — their history is written as for any ended session;
4. shuts uvicorn down as usual.

A second SIGTERM, or SIGINT (Ctrl-C), skips what is left of the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from voicecall.server.app import AppState

log = logging.getLogger("voicecall")


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain above, and a main loop that wakes once a second instead of ten times: uvicorn
    polls ``should_exit`` every 100 ms, which on an idle server was nearly all its CPU (~0.2 ms a wake-up on a
    2-vCPU VM, 2 ms/s); here setting ``should_exit`` (signal handler, drain, any thread) wakes the loop at once, and
    the once-a-second tick keeps uvicorn's ``Date`` header current."""

    TICK_SECONDS = 1.0

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        super().__init__(config)
        self.state = state
        self._drain_task: asyncio.Task[None] | None = None

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value and self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # (the loop is already closed)
                self._loop.call_soon_threadsafe(self._wake.set)

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().serve(sockets)

    async def main_loop(self) -> None:
        ticks_per_tick = round(self.TICK_SECONDS / 0.1)  # uvicorn's on_tick counts 100 ms ticks
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + ticks_per_tick) % 864000
            loop = asyncio.get_running_loop()  # (ticks on the loop's whole seconds, with the relays' watchdogs)
            wait = math.floor(loop.time()) + self.TICK_SECONDS - loop.time()
            if self._wake is None:
                await asyncio.sleep(wait)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        seconds = self.state.config.server.drain_seconds
        if sig == signal.SIGTERM and self._drain_task is None and seconds > 0 and self._loop is not None:
            self._captured_signals.append(sig)
            self._loop.call_soon_threadsafe(self._start_drain, seconds)
            return
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        super().handle_exit(sig, frame)

    def _start_drain(self, seconds: float) -> None:
        self._drain_task = asyncio.get_running_loop().create_task(self._drain(seconds))

    async def _drain(self, seconds: float) -> None:
        admission = self.state.sessions
        log.info("SIGTERM: draining (no new sessions; %d live, waiting up to %.0f s)", admission.count, seconds)
        try:
            closed = await admission.drain(seconds)
            if closed:
                log.warning("drain time over: closed %d session(s) with a reason", closed)
            else:
                log.info("drained: no live sessions left")
        except asyncio.CancelledError:
            admission.draining = True
            log.info("drain interrupted: shutting down now")
        finally:
            self.should_exit = True
