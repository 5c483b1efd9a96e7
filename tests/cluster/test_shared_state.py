"""Limits shared by replicas, against a real ``redis-server`` (two RedisState objects = two replicas), and what
the Admission gate does when Redis goes away (sessions and mint rate fail open or closed by ``state.failOpen``,
spend always closed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.redis_server import RedisServer
from voicecall.cluster.state import RedisState, StateUnavailable
from voicecall.config import load_config
from voicecall.server.limits import Admission, Refused


@pytest.fixture
async def replicas(redis: RedisServer) -> AsyncIterator[tuple[RedisState, RedisState]]:
    a, b = RedisState(redis.url, lease_seconds=3), RedisState(redis.url, lease_seconds=3)
    await a.start("replica-a", "http://127.0.0.1:1")
    await b.start("replica-b", "http://127.0.0.1:2")
    yield a, b
    await a.close()
    await b.close()


def admission(shared: RedisState, **state: object) -> Admission:
    overrides = {"state.url": shared.url, "server.secretKey": "k", "server.maxSessions": 10}
    overrides.update({f"state.{k}": v for k, v in state.items()})
    return Admission(load_config(None, env={}, overrides=overrides), shared)


async def test_session_caps_hold_across_replicas(replicas: tuple[RedisState, RedisState]) -> None:
    a, b = replicas
    gate_a, gate_b = admission(a, maxSessions=3, maxSessionsPerClient=2), admission(b, maxSessions=3,
                                                                                     maxSessionsPerClient=2)
    l1 = await gate_a.admit("api-key-1", "websocket")
    await gate_b.admit("api-key-1", "webrtc")
    with pytest.raises(Refused) as per_client:  # the client's third session, on either replica
        await gate_a.admit("api-key-1", "websocket")
    assert per_client.value.code == "client_session_limit_reached" and per_client.value.status == 429
    await gate_b.admit("api-key-2", "relay")
    with pytest.raises(Refused) as total:  # four sessions in the deployment: over state.maxSessions
        await gate_b.admit("api-key-3", "relay")
    assert total.value.code == "session_limit_reached"
    assert await a.live_sessions() == 3
    l1.release()
    for _ in range(50):
        if await b.live_sessions() == 2:
            break
        await asyncio.sleep(0.02)
    assert (await gate_b.admit("api-key-3", "relay")).client == "api-key-3"  # the released slot is free again


async def test_a_dead_replicas_sessions_free_their_slots(replicas: tuple[RedisState, RedisState],
                                                         redis: RedisServer) -> None:
    a, b = replicas
    await admission(a, maxSessions=1).admit("c", "websocket")
    with pytest.raises(Refused):
        await admission(b, maxSessions=1).admit("c", "websocket")
    a._task.cancel() if a._task else None  # replica a "dies": its leases are no longer refreshed
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            await admission(b, maxSessions=1).admit("c", "websocket")
            break
        except Refused:
            await asyncio.sleep(0.25)
    else:
        pytest.fail("the dead replica's session slot was never freed")
    assert "replica-b" in await b.live_replicas()


async def test_mint_rate_spend_and_call_owner_are_shared(replicas: tuple[RedisState, RedisState]) -> None:
    a, b = replicas
    assert (await a.allow_mint("1.2.3.4|x", 2))[0] and (await b.allow_mint("1.2.3.4|x", 2))[0]
    ok, wait = await a.allow_mint("1.2.3.4|x", 2)
    assert not ok and 0 < wait <= 60
    totals = await a.add_spend("api-key-1", "conv_1", 0.25)
    totals = await b.add_spend("api-key-1", "conv_2", 0.5)
    assert totals.client_day_usd == pytest.approx(0.75) and totals.conversation_usd == pytest.approx(0.5)
    assert await b.client_spend_today("api-key-1") == pytest.approx(0.75)
    await a.set_call_owner("rtc_1")
    assert await b.call_owner("rtc_1") == ("replica-a", "http://127.0.0.1:1")
    await a.drop_call("rtc_1")
    assert await b.call_owner("rtc_1") is None
    await a.remember_secret("ek_upstream", int(time.time()) + 60, {"session": {"model": "m"}, "provider": "p"})
    assert (await b.recall_secret("ek_upstream") or {}).get("provider") == "p"


async def test_spend_limit_across_replicas(replicas: tuple[RedisState, RedisState]) -> None:
    a, b = replicas
    gate_a, gate_b = admission(a, maxSpendPerClientPerDayUsd=1.0), admission(b, maxSpendPerClientPerDayUsd=1.0)
    lease = await gate_a.admit("api-key-1", "relay")
    assert await lease.add_spend("conv_1", 0.6) is None
    other = await gate_b.admit("api-key-1", "relay")
    reason = await other.add_spend("conv_2", 0.5)
    assert reason is not None and "daily spend limit" in reason
    with pytest.raises(Refused) as refused:
        await gate_a.admit("api-key-1", "relay")
    assert refused.value.code == "spend_limit_reached"


async def test_redis_down_fails_open_for_sessions_and_closed_for_spend(redis: RedisServer) -> None:
    shared = RedisState(redis.url, lease_seconds=3)
    await shared.start("replica-a", "http://127.0.0.1:1")
    try:
        redis.stop()
        t0 = time.monotonic()
        with pytest.raises(StateUnavailable):
            await shared.acquire_session("s", "c", 5, None)
        assert time.monotonic() - t0 < 5  # an answer, not a hang
        open_gate = admission(shared, maxSessions=5)
        assert (await open_gate.admit("c", "websocket")).client == "c"  # failOpen (default)
        assert (await open_gate.allow_mint("c"))[0]
        closed_gate = admission(shared, maxSessions=5, failOpen=False)
        with pytest.raises(Refused) as no_session:
            await closed_gate.admit("c", "websocket")
        assert no_session.value.code == "session_check_unavailable"
        assert not (await closed_gate.allow_mint("c"))[0]
        spend_gate = admission(shared, maxSpendPerClientPerDayUsd=5.0)
        with pytest.raises(Refused) as no_spend:  # spend always fails closed
            await spend_gate.admit("c", "relay")
        assert no_spend.value.code == "spend_check_unavailable"
        assert not await shared.ping()
    finally:
        await shared.close()
        if redis.proc is None:
            redis.start()
