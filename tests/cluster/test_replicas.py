"""Several replicas for real, on loopback: a real ``redis-server``, a real PostgreSQL, two ``voicecall serve``
processes and HAProxy (Debian's) in front, health-checking ``/readyz`` and balancing round-robin.

What is checked: the official openai SDK and an aiortc WebRTC client go through the balancer; a client secret
minted by one replica opens a session on the other; the deployment-wide session limit holds across replicas; a
hangup sent to the wrong replica is forwarded to the call's owner; with Redis stopped, sessions still start (fail
open, as documented); a replica SIGTERMed mid-session drains (``/readyz`` 503, new sessions refused, the live one
ended with a reason after ``server.drainSeconds``) and its conversation is closed in the shared history with its
items intact. The stack is the light echo one (energy VAD, pocketsphinx, echo LLM, tone TTS): the subject is the
cluster, not the speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from tests import pg
from tests.redis_server import redis_or_skip
from voicecall.bench.cluster import LocalCluster, find_exe, wait_until

API_KEY = "cluster-test-api-key"


@dataclass
class Deployment(LocalCluster):
    redis: Any = None
    pg_url: str = ""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Deployment]:
    if find_exe("haproxy") is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is required when CI is set (Debian package haproxy)", pytrace=False)
        pytest.skip("haproxy is not installed")
    with redis_or_skip() as redis, pg.postgres_or_skip() as pg_server, pg.fresh_schema(pg_server) as pg_url, \
            Deployment(replicas_wanted=3, state_url=redis.url, store_url=pg_url, redis=redis, pg_url=pg_url,
                       server={"apiKeys": [API_KEY], "drainSeconds": 3},
                       state={"maxSessions": 3, "leaseSeconds": 6}) as c:
        yield c


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/v1/realtime"


async def _text_turn(ws: Any, text: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert event["type"] != "error", event
        if event["type"] == "response.done":
            return event


@contextlib.asynccontextmanager
async def _session(base: str, token: str = API_KEY) -> AsyncIterator[Any]:
    async with websockets.connect(_ws_url(base), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert first["type"] == "session.created", first
        yield ws


def _replicas_in_history(pg_url: str) -> dict[str, int]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT replica, COUNT(*) FROM conversations GROUP BY replica").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


async def test_openai_sdk_through_the_balancer_reaches_both_replicas(cluster: Deployment) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=API_KEY, base_url=cluster.lb + "/v1", websocket_base_url=_ws_url(cluster.lb)[:-9])
    for i in range(3):
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": f"hello number {i}"}]})
            await conn.response.create()
            async for event in conn:
                assert event.type != "error", event
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_replicas_in_history(cluster.pg_url)) < 3:
        await asyncio.sleep(0.2)
    assert set(_replicas_in_history(cluster.pg_url)) == {"r1", "r2", "r3"}  # round robin: one session on each


async def test_a_secret_minted_on_one_replica_opens_a_session_on_the_other(cluster: Deployment) -> None:
    r1, r2 = cluster.replicas[:2]
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(r1.url + "/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {API_KEY}"},
                               json={"session": {"type": "realtime", "instructions": "Minted on r1."}})
    assert resp.status_code == 200, resp.text
    secret = resp.json()["value"]
    async with websockets.connect(_ws_url(r2.url), subprotocols=["realtime", f"openai-insecure-api-key.{secret}"]) as ws:  # type: ignore[list-item]
        created = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert created["type"] == "session.created" and created["session"]["instructions"] == "Minted on r1."
        assert (await _text_turn(ws, "from the browser"))["response"]["status"] == "completed"


def _wait_idle(cluster: Deployment) -> None:
    """Sessions of earlier tests have ended everywhere (local counts, then the shared leases)."""
    import redis

    wait_until(lambda: all(httpx.get(r.url + "/healthz", timeout=2).json()["sessions"] == 0 for r in cluster.replicas
                      if r.proc.poll() is None), 30, "idle replicas")
    shared = redis.Redis.from_url(cluster.redis.url)
    wait_until(lambda: shared.zcard("voicecall:sessions") == 0, 30, "no session leases left")


async def test_the_session_limit_holds_across_replicas(cluster: Deployment) -> None:
    r1, r2 = cluster.replicas[:2]
    _wait_idle(cluster)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with (_session(r1.url), _session(r2.url), _session(r1.url),  # state.maxSessions: 3
                websockets.connect(_ws_url(cluster.lb), additional_headers=auth) as ws):
        event = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert event["type"] == "error" and event["error"]["code"] == "session_limit_reached"
    _wait_idle(cluster)  # slots are released when sessions end (asynchronously, on the server side)
    async with _session(cluster.lb) as ws:
        assert (await _text_turn(ws, "room again"))["response"]["status"] == "completed"


async def test_webrtc_through_the_balancer_and_hangup_through_the_other_replica(cluster: Deployment) -> None:
    from tests.webrtc.conftest import RtcClient

    client = RtcClient(cluster.lb)
    try:
        await client.connect(API_KEY)
        assert client.call_id is not None
        async with httpx.AsyncClient(timeout=30) as http:
            lists = {r.name: (await http.get(r.url + "/v1/realtime/calls",
                                             headers={"Authorization": f"Bearer {API_KEY}"})).json()["data"]
                     for r in cluster.replicas}
            owner = next(name for name, calls in lists.items() if any(c["id"] == client.call_id for c in calls))
            other = next(r for r in cluster.replicas if r.name != owner)
            # the sideband join, sent to a replica that does not run the call, reaches the call
            async with websockets.connect(f"{_ws_url(other.url)}?call_id={client.call_id}",
                                          additional_headers={"Authorization": f"Bearer {API_KEY}"}) as side:
                joined = json.loads(await asyncio.wait_for(side.recv(), 15))
                assert joined["type"] == "session.created", joined
                await side.send(json.dumps({"type": "session.update", "session": {
                    "type": "realtime", "instructions": "Set through the sideband."}}))
                updated = await client.wait_type("session.updated", timeout=15)  # seen on the call's data channel
                assert updated["session"]["instructions"] == "Set through the sideband."
            resp = await http.post(f"{other.url}/v1/realtime/calls/{client.call_id}/hangup",
                                   headers={"Authorization": f"Bearer {API_KEY}"})
            assert resp.status_code == 200, resp.text  # forwarded to the owner, which hung up
            forged = await http.post(f"{other.url}/v1/realtime/calls/{client.call_id}/hangup",
                                     headers={"Authorization": f"Bearer {API_KEY}", "X-Voicecall-Forwarded": "1.x"})
            assert forged.status_code == 403
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                calls = (await http.get(cluster.by_name(owner).url + "/v1/realtime/calls",
                                        headers={"Authorization": f"Bearer {API_KEY}"})).json()["data"]
                if not calls:
                    break
                await asyncio.sleep(0.2)
            assert not calls
    finally:
        await client.close()


async def test_sessions_still_start_while_redis_is_down(cluster: Deployment) -> None:
    cluster.redis.stop()
    try:
        async with _session(cluster.lb) as ws:  # state.failOpen (default): per-replica limits only
            assert (await _text_turn(ws, "redis is down"))["response"]["status"] == "completed"
        async with httpx.AsyncClient(timeout=10) as http:
            ready = await http.get(cluster.replicas[0].url + "/readyz")
        # failing open, the replicas stay in the balancer; the outage is reported
        assert ready.status_code == 200 and ready.json()["degraded"] == ["shared_state"]
        await asyncio.sleep(1.5)  # longer than the balancer needs to take a failing replica out
        async with _session(cluster.lb) as ws:
            assert (await _text_turn(ws, "still up"))["response"]["status"] == "completed"
    finally:
        cluster.redis.start()
    wait_until(lambda: all(httpx.get(r.url + "/readyz", timeout=2).status_code == 200 for r in cluster.replicas), 30,
          "replicas ready again after Redis came back")


async def test_a_replica_that_dies_has_its_conversations_closed_by_another(cluster: Deployment) -> None:
    r3 = cluster.by_name("r3")
    async with _session(r3.url) as ws:
        assert (await _text_turn(ws, "just before the crash"))["response"]["status"] == "completed"
        await asyncio.sleep(0.5)  # the recorder's writes are off the audio path: let them land
        r3.proc.kill()  # SIGKILL: no drain, no goodbye
        r3.proc.wait(10)

    def closed() -> bool:
        with psycopg.connect(cluster.pg_url) as conn:
            rows = conn.execute("SELECT ended_at FROM conversations WHERE replica = 'r3'").fetchall()
        return bool(rows) and all(r[0] is not None for r in rows)

    wait_until(closed, 40, "a live replica to close the dead one's conversations (state.leaseSeconds: 6)")


async def test_sigterm_drains_a_replica_and_history_survives(cluster: Deployment) -> None:
    """Last: it stops r2."""
    r2 = cluster.by_name("r2")
    async with _session(r2.url) as ws:
        assert (await _text_turn(ws, "before the restart"))["response"]["status"] == "completed"
        r2.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(r2.url + "/readyz", timeout=2).status_code == 503, 10, "r2 draining")
        async with websockets.connect(_ws_url(r2.url), additional_headers={"Authorization": f"Bearer {API_KEY}"}) as w2:
            refused = json.loads(await asyncio.wait_for(w2.recv(), 10))
            assert refused["type"] == "error" and refused["error"]["code"] == "server_draining"
        await asyncio.sleep(1.5)  # the balancer's health check (every 0.5 s, down after 2 failures) takes r2 out
        async with _session(cluster.lb) as other:  # so new sessions go to r1
            assert (await _text_turn(other, "during the drain"))["response"]["status"] == "completed"
        # the live session may go on until server.drainSeconds (3 s), then it is ended with a reason
        assert (await _text_turn(ws, "still here"))["response"]["status"] == "completed"
        last: dict[str, Any] = {}
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                last = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert last.get("type") == "error" and last["error"]["code"] == "server_shutting_down"
        assert ws.close_code == 1012
    r2.proc.wait(30)
    with psycopg.connect(cluster.pg_url) as conn:
        rows = conn.execute("SELECT c.ended_at, COUNT(i.id) FROM conversations c JOIN items i ON "
                            "i.conversation_id = c.id WHERE c.replica = 'r2' AND c.title LIKE 'before the restart%' "
                            "GROUP BY c.id, c.ended_at").fetchall()
    assert rows and rows[0][0] is not None and rows[0][1] >= 4  # two turns, ended cleanly
