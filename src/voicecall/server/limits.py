"""Limits enforced server-side: concurrent sessions and the minting rate of client secrets."""

from __future__ import annotations

import threading
import time
from collections import deque


class SessionLimiter:
    """Counts live sessions of every transport; ``try_acquire`` fails past ``max_sessions``."""

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return self._count

    def try_acquire(self) -> bool:
        with self._lock:
            if self._count >= self.max_sessions:
                return False
            self._count += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._count = max(0, self._count - 1)


class RateLimiter:
    """Sliding-window limit of ``per_minute`` events per key (client address or API-key label)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, float]:
        """Returns (allowed, seconds until the next one would be allowed)."""
        now = time.monotonic()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and now - q[0] >= 60:
                q.popleft()
            if len(q) >= self.per_minute:
                return False, 60 - (now - q[0])
            q.append(now)
            if len(self._hits) > 10_000:
                for k in [k for k, v in self._hits.items() if not v]:
                    del self._hits[k]
            return True, 0.0
