"""Limits enforced server-side: who may open a session, mint a client secret, or spend more.

:class:`Admission` is the one gate every transport passes (WebSocket engine sessions, WebRTC calls, the relay, the
gateway's calls). It combines

* this process's cap (``server.maxSessions``) and its drain state (no new sessions once SIGTERM arrived);
* the limits every replica shares through :mod:`voicecall.cluster.state` (``state.maxSessions`` across replicas,
  ``state.maxSessionsPerClient``, ``server.mintRatePerMinute`` per client, ``state.maxSpendPerClientPerDayUsd``).

When the shared state (Redis) is unreachable: sessions and mint rate follow ``state.failOpen`` (default true: the
per-process limits still hold, a warning is logged); spend limits always fail *closed* (no new session for a
client with a daily spend limit, and a live one is ended at its next priced response) — money is the one limit
that must not be exceeded because a cache is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicecall.cluster.state import SharedState, StateUnavailable

if TYPE_CHECKING:
    from voicecall.cluster.metrics import Metrics
    from voicecall.config import Config

log = logging.getLogger("voicecall.limits")


class Refused(Exception):
    """A session or secret is refused: ``status`` for HTTP, ``close_code`` for WebSocket, ``code`` on the wire."""

    def __init__(self, status: int, code: str, message: str, close_code: int = 1013,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.close_code = status, code, message, close_code
        self.retry_after = retry_after


@dataclass(eq=False)
class Lease:
    """One admitted session. ``release()`` is idempotent and may be called from sync code."""

    id: str
    client: str
    transport: str
    provider: str
    admission: Admission
    closer: Callable[[str], Any] | None = None
    """Set by the transport: closes the session with a reason (used when a drain runs out of time)."""
    started: float = field(default_factory=time.monotonic)
    released: bool = False
    queue_depth: Callable[[], int] | None = None
    """Set by the transport: what waits in its outgoing queue (for the ``voicecall_queue_depth`` metric)."""

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._release(self)

    async def add_spend(self, conversation: str, usd: float) -> str | None:
        """Record ``usd`` more spent; returns a reason to end the session when a spend limit is passed."""
        return await self.admission.add_spend(self, conversation, usd)


class Admission:
    def __init__(self, config: Config, shared: SharedState, metrics: Metrics | None = None) -> None:
        self.config = config
        self.shared = shared
        self.metrics = metrics
        self.max_sessions = config.server.max_sessions
        self.draining = False
        self.leases: dict[str, Lease] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned_at = 0.0

    @property
    def count(self) -> int:
        """Live sessions in this process."""
        return len(self.leases)

    def live_figures(self) -> dict[str, float]:
        """Read by Prometheus at scrape time."""
        depths = [lease.queue_depth() for lease in list(self.leases.values()) if lease.queue_depth is not None]
        return {"draining": float(self.draining), "queue_depth_total": float(sum(depths)),
                "queue_depth_max": float(max(depths, default=0))}

    def _reject(self, exc: Refused) -> Refused:
        if self.metrics is not None:
            self.metrics.limit_rejections.labels(exc.code).inc()
        return exc

    def _down(self, what: str, exc: StateUnavailable) -> None:
        now = time.monotonic()
        if now - self._warned_at > 10:
            self._warned_at = now
            log.warning("shared state unavailable while checking %s (%s): %s", what, exc,
                        "failing open (state.failOpen)" if self.config.state.fail_open else "failing closed")

    async def admit(self, client: str, transport: str) -> Lease:
        """A lease for a new session, or :class:`Refused`."""
        st = self.config.state
        if self.draining:
            raise self._reject(Refused(503, "server_draining", "This server is shutting down; connect again (another "
                                       "replica will take the session).", close_code=1012))
        if len(self.leases) >= self.max_sessions:
            raise self._reject(Refused(503, "session_limit_reached", f"This server already runs its maximum of "
                                       f"{self.max_sessions} sessions; try again later."))
        if st.max_spend_per_client_per_day_usd is not None:
            try:
                spent = await self.shared.client_spend_today(client)
            except StateUnavailable as exc:
                self._down("spend", exc)
                raise self._reject(Refused(503, "spend_check_unavailable", "The spend limit cannot be checked right "
                                           "now; try again later.")) from None
            if spent >= st.max_spend_per_client_per_day_usd:
                raise self._reject(Refused(429, "spend_limit_reached", f"This client has spent its daily limit of "
                                           f"${st.max_spend_per_client_per_day_usd:g}.", close_code=1008))
        lease = Lease(id=secrets.token_hex(8), client=client, transport=transport,
                      provider=self.config.voice_call.provider, admission=self)
        self.leases[lease.id] = lease  # counted at once: concurrent admissions cannot overshoot this process's cap
        try:
            refusal = await self.shared.acquire_session(lease.id, client, st.max_sessions, st.max_sessions_per_client)
        except StateUnavailable as exc:
            self._down("sessions", exc)
            if not st.fail_open:
                del self.leases[lease.id]
                raise self._reject(Refused(503, "session_check_unavailable", "The session limit cannot be checked "
                                           "right now; try again later.")) from None
            refusal = None
        if refusal is not None:
            del self.leases[lease.id]
            what = "this deployment" if refusal.code == "session_limit_reached" else "this client"
            raise self._reject(Refused(503 if refusal.code == "session_limit_reached" else 429, refusal.code,
                                       f"{what[0].upper()}{what[1:]} already runs its maximum of {refusal.limit} "
                                       "sessions; try again later."))
        if self.metrics is not None:
            self.metrics.sessions.labels(transport, lease.provider).inc()
            self.metrics.sessions_started.labels(transport, lease.provider).inc()
        return lease

    def _release(self, lease: Lease) -> None:
        self.leases.pop(lease.id, None)
        if self.metrics is not None:
            self.metrics.sessions.labels(lease.transport, lease.provider).dec()
        self._spawn(self._release_shared(lease))

    async def _release_shared(self, lease: Lease) -> None:
        try:
            await self.shared.release_session(lease.id, lease.client)
        except StateUnavailable as exc:
            self._down("sessions", exc)  # the lease expires by itself (state.leaseSeconds)

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def allow_mint(self, client: str) -> tuple[bool, float]:
        try:
            ok, wait = await self.shared.allow_mint(client, self.config.server.mint_rate_per_minute)
        except StateUnavailable as exc:
            self._down("mint rate", exc)
            if not self.config.state.fail_open:
                return False, 5.0
            return True, 0.0
        if not ok and self.metrics is not None:
            self.metrics.limit_rejections.labels("rate_limit_exceeded").inc()
        return ok, wait

    async def add_spend(self, lease: Lease, conversation: str, usd: float) -> str | None:
        limit = self.config.state.max_spend_per_client_per_day_usd
        try:
            totals = await self.shared.add_spend(lease.client, conversation, usd)
        except StateUnavailable as exc:
            self._down("spend", exc)
            return "the spend limit cannot be checked (shared state unavailable)" if limit is not None else None
        if limit is not None and totals.client_day_usd >= limit:
            if self.metrics is not None:
                self.metrics.limit_rejections.labels("spend_limit_reached").inc()
            return f"daily spend limit reached (${totals.client_day_usd:.4f} >= ${limit:g})"
        return None

    async def drain(self, seconds: float, poll: float = 0.2) -> int:
        """Refuse new sessions, wait up to ``seconds`` for live ones to end, then close the rest with a reason.
        Returns how many had to be closed."""
        self.draining = True
        deadline = time.monotonic() + seconds
        while self.leases and time.monotonic() < deadline:
            await asyncio.sleep(poll)
        left = list(self.leases.values())
        for lease in left:
            if lease.closer is not None:
                with contextlib.suppress(Exception):
                    result = lease.closer("server shutting down (drain time over); reconnect to continue")
                    if asyncio.iscoroutine(result):
                        await result
        end = time.monotonic() + 5
        while self.leases and time.monotonic() < end:
            await asyncio.sleep(poll)
        return len(left)


async def refuse_websocket(ws: Any, exc: Refused) -> None:
    """Tell an accepted WebSocket why it cannot have a session (an ``error`` event), then close it."""
    import json

    from voicecall.protocol.errors import error_event

    with contextlib.suppress(Exception):
        await ws.send_text(json.dumps(error_event(exc.code, exc.message, type="server_error")))
        await ws.close(code=exc.close_code, reason=exc.code)


def closing_event(reason: str) -> dict[str, Any]:
    """The ``error`` event a session gets when the server ends it (drain): sent before the close."""
    from voicecall.protocol.errors import error_event

    return error_event("server_shutting_down", f"The server is ending this session: {reason}.", type="server_error")
