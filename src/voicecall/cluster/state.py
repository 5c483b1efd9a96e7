"""State that every replica shares: session leases, mint rate, spend, replica heartbeats, call owners, and the
client secrets OpenAI minted (gateway).

Two backends behind one interface, chosen by ``state.url``:

* :class:`MemoryState` (``memory``, the default) — this process only, as on one machine;
* :class:`RedisState` (``redis://…``) — every replica that points at the same Redis shares the limits.

Sessions are *leases*: a sorted-set member whose score is its expiry, refreshed by the owning replica every few
seconds, so the sessions of a replica that died free their slots within ``state.leaseSeconds``. Scripts run in Redis
with Redis's own clock (replica clocks may differ).

When Redis cannot be reached every call raises :class:`StateUnavailable`; what follows is the caller's documented
choice (``server/limits.py``: sessions and mint rate fail open or closed by ``state.failOpen``, spend always
fails closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("voicecall.cluster")


class StateUnavailable(Exception):
    """The shared state (Redis) could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class LeaseRefusal:
    code: str  # session_limit_reached | client_session_limit_reached
    limit: int


@dataclass(frozen=True, slots=True)
class SpendTotals:
    conversation_usd: float
    client_day_usd: float


def day_key(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%d")


def _secret_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SharedState(Protocol):
    kind: str

    async def start(self, replica_id: str, internal_url: str) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool: ...
    async def acquire_session(self, session_id: str, client: str, max_total: int | None,
                              max_client: int | None) -> LeaseRefusal | None: ...
    async def release_session(self, session_id: str, client: str) -> None: ...
    async def live_sessions(self) -> int: ...
    async def allow_mint(self, client: str, per_minute: int) -> tuple[bool, float]: ...
    async def add_spend(self, client: str, conversation: str, usd: float) -> SpendTotals: ...
    async def client_spend_today(self, client: str) -> float: ...
    async def set_call_owner(self, call_id: str) -> None: ...
    async def drop_call(self, call_id: str) -> None: ...
    async def call_owner(self, call_id: str) -> tuple[str, str] | None: ...
    async def live_replicas(self) -> dict[str, str]: ...
    async def remember_secret(self, value: str, expires_at: int, record: dict[str, Any]) -> None: ...
    async def recall_secret(self, value: str) -> dict[str, Any] | None: ...


# ------------------------------------------------------------------------------------------------ memory
class MemoryState:
    """One process: the same operations on dictionaries (no I/O, never unavailable)."""

    kind = "memory"

    def __init__(self) -> None:
        self._sessions: dict[str, str] = {}
        self._mints: dict[str, deque[float]] = {}
        self._spend: dict[str, float] = {}
        self._calls: set[str] = set()
        self.replica_id = ""
        self.internal_url = ""

    async def start(self, replica_id: str, internal_url: str) -> None:
        self.replica_id, self.internal_url = replica_id, internal_url

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def acquire_session(self, session_id: str, client: str, max_total: int | None,
                              max_client: int | None) -> LeaseRefusal | None:
        if max_total is not None and len(self._sessions) >= max_total:
            return LeaseRefusal("session_limit_reached", max_total)
        if max_client is not None and sum(1 for c in self._sessions.values() if c == client) >= max_client:
            return LeaseRefusal("client_session_limit_reached", max_client)
        self._sessions[session_id] = client
        return None

    async def release_session(self, session_id: str, client: str) -> None:
        self._sessions.pop(session_id, None)

    async def live_sessions(self) -> int:
        return len(self._sessions)

    async def allow_mint(self, client: str, per_minute: int) -> tuple[bool, float]:
        now = time.monotonic()
        q = self._mints.setdefault(client, deque())
        while q and now - q[0] >= 60:
            q.popleft()
        if len(q) >= per_minute:
            return False, 60 - (now - q[0])
        q.append(now)
        if len(self._mints) > 10_000:
            for k in [k for k, v in self._mints.items() if not v]:
                del self._mints[k]
        return True, 0.0

    async def add_spend(self, client: str, conversation: str, usd: float) -> SpendTotals:
        ck, vk = f"client:{client}:{day_key()}", f"conv:{conversation}"
        self._spend[ck] = self._spend.get(ck, 0.0) + usd
        self._spend[vk] = self._spend.get(vk, 0.0) + usd
        if len(self._spend) > 100_000:  # bounded: forget the oldest entries (insertion order)
            for k in list(self._spend)[:10_000]:
                del self._spend[k]
        return SpendTotals(self._spend[vk], self._spend[ck])

    async def client_spend_today(self, client: str) -> float:
        return self._spend.get(f"client:{client}:{day_key()}", 0.0)

    async def set_call_owner(self, call_id: str) -> None:
        self._calls.add(call_id)

    async def drop_call(self, call_id: str) -> None:
        self._calls.discard(call_id)

    async def call_owner(self, call_id: str) -> tuple[str, str] | None:
        return (self.replica_id, self.internal_url) if call_id in self._calls else None

    async def live_replicas(self) -> dict[str, str]:
        return {self.replica_id: self.internal_url}

    async def remember_secret(self, value: str, expires_at: int, record: dict[str, Any]) -> None:
        return None  # the SecretStore's own memory holds it

    async def recall_secret(self, value: str) -> dict[str, Any] | None:
        return None


# ------------------------------------------------------------------------------------------------- redis
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local mt = tonumber(ARGV[2]); local mc = tonumber(ARGV[3])
if mt >= 0 and redis.call('ZCARD', KEYS[1]) >= mt then return 1 end
if mc >= 0 and redis.call('ZCARD', KEYS[2]) >= mc then return 2 end
local exp = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], exp, ARGV[1])
redis.call('ZADD', KEYS[2], exp, ARGV[1])
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[4])) + 60)
return 0
"""

_REFRESH = """
local t = redis.call('TIME')
local exp = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'XX', exp, ARGV[i])
  redis.call('ZADD', KEYS[2] .. ARGV[i + 1], 'XX', exp, ARGV[i])
end
return 0
"""

_MINT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tostring(60 - (now - tonumber(oldest[2])))
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('EXPIRE', KEYS[1], 61)
return '0'
"""

_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisState:
    """Shared state in Redis (redis-py's asyncio client). Short socket timeouts: an unreachable Redis is an answer
    (:class:`StateUnavailable`) within about ``timeout`` seconds, never a hang."""

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "voicecall:", lease_seconds: float = 30.0,
                 timeout: float = 0.5) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self._redis: Any = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                                   decode_responses=True, health_check_interval=0)
        self._scripts = {name: self._redis.register_script(src)
                         for name, src in (("acquire", _ACQUIRE), ("refresh", _REFRESH), ("mint", _MINT),
                                           ("live", _LIVE))}
        self._mine: dict[str, str] = {}  # session id -> client, refreshed by the heartbeat
        self._calls: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.replica_id = ""
        self.internal_url = ""
        self._seq = 0

    def k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _do(self, coro: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateUnavailable(f"Redis is unreachable ({type(exc).__name__})") from None

    async def start(self, replica_id: str, internal_url: str) -> None:
        self.replica_id, self.internal_url = replica_id, internal_url
        with contextlib.suppress(StateUnavailable):
            await self._beat()
        self._task = asyncio.create_task(self._heartbeat(), name="voicecall-redis-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._redis.delete(self.k("replica", self.replica_id))
        with contextlib.suppress(Exception):
            await self._redis.aclose()

    async def _beat(self) -> None:
        ttl = self.lease_seconds
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self.k("replica", self.replica_id), self.internal_url, px=int(ttl * 1000))
        for call_id in self._calls:
            pipe.set(self.k("call", call_id), self.replica_id, px=int(ttl * 1000))
        await self._do(pipe.execute())
        if self._mine:
            args: list[Any] = [ttl]
            for sid, client in self._mine.items():
                args += [sid, client]
            await self._do(self._scripts["refresh"](keys=[self.k("sessions"), self.k("sessions", "client", "")],
                                                    args=args))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._beat()
            except StateUnavailable as exc:
                log.warning("shared state: heartbeat failed: %s", exc)

    async def ping(self) -> bool:
        try:
            return bool(await self._do(self._redis.ping()))
        except StateUnavailable:
            return False

    async def acquire_session(self, session_id: str, client: str, max_total: int | None,
                              max_client: int | None) -> LeaseRefusal | None:
        res = await self._do(self._scripts["acquire"](
            keys=[self.k("sessions"), self.k("sessions", "client", client)],
            args=[session_id, -1 if max_total is None else max_total, -1 if max_client is None else max_client,
                  self.lease_seconds]))
        if int(res) == 1:
            return LeaseRefusal("session_limit_reached", int(max_total or 0))
        if int(res) == 2:
            return LeaseRefusal("client_session_limit_reached", int(max_client or 0))
        self._mine[session_id] = client
        return None

    async def release_session(self, session_id: str, client: str) -> None:
        self._mine.pop(session_id, None)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self.k("sessions"), session_id)
        pipe.zrem(self.k("sessions", "client", client), session_id)
        await self._do(pipe.execute())

    async def live_sessions(self) -> int:
        return int(await self._do(self._scripts["live"](keys=[self.k("sessions")], args=[])))

    async def allow_mint(self, client: str, per_minute: int) -> tuple[bool, float]:
        self._seq += 1
        res = await self._do(self._scripts["mint"](keys=[self.k("mint", client)],
                                                   args=[per_minute, f"{self.replica_id}:{self._seq}:{time.time()}"]))
        wait = float(res)
        return (wait <= 0, max(0.0, wait))

    async def add_spend(self, client: str, conversation: str, usd: float) -> SpendTotals:
        ck, vk = self.k("spend", "client", client, day_key()), self.k("spend", "conversation", conversation)
        pipe = self._redis.pipeline(transaction=True)
        pipe.incrbyfloat(vk, usd)
        pipe.expire(vk, 7 * 86400)
        pipe.incrbyfloat(ck, usd)
        pipe.expire(ck, 2 * 86400)
        conv, _, day, _ = await self._do(pipe.execute())
        return SpendTotals(float(conv), float(day))

    async def client_spend_today(self, client: str) -> float:
        value = await self._do(self._redis.get(self.k("spend", "client", client, day_key())))
        return float(value or 0.0)

    async def set_call_owner(self, call_id: str) -> None:
        self._calls.add(call_id)
        await self._do(self._redis.set(self.k("call", call_id), self.replica_id, px=int(self.lease_seconds * 1000)))

    async def drop_call(self, call_id: str) -> None:
        self._calls.discard(call_id)
        await self._do(self._redis.delete(self.k("call", call_id)))

    async def call_owner(self, call_id: str) -> tuple[str, str] | None:
        replica = await self._do(self._redis.get(self.k("call", call_id)))
        if not replica:
            return None
        url = await self._do(self._redis.get(self.k("replica", replica)))
        return (str(replica), str(url)) if url else None

    async def live_replicas(self) -> dict[str, str]:
        out: dict[str, str] = {}
        pattern = self.k("replica", "*")
        keys = [key async for key in self._redis.scan_iter(match=pattern, count=100)]
        if keys:
            values = await self._do(self._redis.mget(keys))
            for key, url in zip(keys, values, strict=True):
                if url:
                    out[key[len(self.k("replica", "")):]] = url
        return out

    async def remember_secret(self, value: str, expires_at: int, record: dict[str, Any]) -> None:
        ttl = max(1, int(expires_at - time.time()))
        await self._do(self._redis.set(self.k("secret", _secret_key(value)), json.dumps(record), ex=ttl))

    async def recall_secret(self, value: str) -> dict[str, Any] | None:
        raw = await self._do(self._redis.get(self.k("secret", _secret_key(value))))
        if not raw:
            return None
        data = json.loads(raw)
        return data if isinstance(data, dict) else None


def open_state(url: str, *, lease_seconds: float = 30.0, prefix: str = "voicecall:") -> SharedState:
    if url in ("", "memory", "memory://"):
        return MemoryState()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(url, lease_seconds=lease_seconds, prefix=prefix)
    raise ValueError(f"state.url must be 'memory' or a redis:// URL, not {url.split('://')[0]!r}")
