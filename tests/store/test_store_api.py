"""The /api/conversations routes, through httpx's ASGI transport (same event loop as the store)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from tests.store.store_events import record_full_call
from voicecall.store import Store
from voicecall.store.api import make_router
from voicecall.store.base import ConversationRecord

T0 = datetime(2026, 5, 1, 9, 30, 0, tzinfo=UTC)
ERROR_KEYS = {"message", "type", "code"}


def require_key(authorization: str | None = Header(None)) -> None:
    if authorization != "Bearer test-key":
        raise HTTPException(status_code=401, detail="bad key")


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    await record_full_call(store, T0 + timedelta(hours=1), "10.1.1.1", {"resp_2": {"voice_to_voice_ms": 910.0}})
    for n in range(5):
        await store.start_conversation(
            ConversationRecord(
                id=f"conv_{n}",
                provider="local",
                model="voicecall-local",
                voice="marin",
                transport="websocket",
                client=None,
                started_at=T0 + timedelta(minutes=n),
            )
        )
    app = FastAPI()
    app.include_router(make_router(lambda: store, require_key))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"Authorization": "Bearer test-key"}
    ) as c:
        yield c


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == code
    assert body["error"]["message"]


async def test_list_and_paging(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/conversations")
    assert r.status_code == 200
    body = r.json()
    assert [c["id"] for c in body["data"]] == ["conv_call", "conv_4", "conv_3", "conv_2", "conv_1", "conv_0"]
    assert body["next_cursor"] is None and body["has_more"] is False
    first = body["data"][0]
    assert set(first) == {
        "id",
        "provider",
        "model",
        "voice",
        "transport",
        "client",
        "started_at",
        "ended_at",
        "title",
        "cost_usd",
        "item_count",
        "metadata",
    }
    assert first["metadata"] == {}
    assert first["started_at"] == "2026-05-01T10:30:00.000000Z"
    assert (
        first["title"] == "What's the weather in Paris?"
        and first["item_count"] == 6
        and first["cost_usd"] > 0
    )

    seen: list[str] = []
    cursor = None
    for _ in range(4):
        params = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/conversations", params=params)).json()
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["conv_call", "conv_4", "conv_3", "conv_2", "conv_1", "conv_0"]


async def test_detail(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/conversations/conv_call")
    assert r.status_code == 200
    d = r.json()
    assert [i["position"] for i in d["items"]] == list(range(6))
    assert [i["text"] for i in d["items"]][:2] == ["Be brief.", "What's the weather in Paris?"]
    item = d["items"][4]
    assert set(item) == {
        "id",
        "position",
        "role",
        "type",
        "text",
        "audio_ms",
        "truncated",
        "created_at",
        "done_at",
        "extra",
    }
    assert item["truncated"] is True and item["audio_ms"] == 2000
    assert item["created_at"].endswith("Z")
    resp = d["responses"][1]
    assert {"id", "status", "usage", "latency", "cost_usd", "model", "created_at", "done_at"} <= set(resp)
    assert resp["status"] == "cancelled" and resp["latency"]["voice_to_voice_ms"] == 910.0


async def test_export_json_and_markdown(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/conversations/conv_call/export")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="conv_call.json"'
    assert r.headers["content-type"].startswith("application/json")
    detail = (await client.get("/api/conversations/conv_call")).json()
    assert json.loads(r.text) == detail

    r = await client.get("/api/conversations/conv_call/export", params={"format": "md"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="conv_call.md"'
    assert r.headers["content-type"].startswith("text/markdown")
    md = r.text
    assert md.startswith("# What's the weather in Paris?")
    assert "· User** (2.4 s of audio)" in md
    assert "> What's the weather in Paris?" in md
    assert "> It is sunny and twenty one degrees in Paris\n" in md
    assert "interrupted: heard 2.0 s of 4.0 s" in md
    assert "`get_weather`" in md and '"city": "Paris"' in md
    assert "response `resp_2`: cancelled (turn_detected)" in md and "voice to voice 910 ms" in md
    assert "## Responses" in md and "$0." in md
    # times in order
    assert (
        md.index("> Be brief.")
        < md.index("> What's the weather")
        < md.index("> It is sunny")
        < md.index("> Thanks")
    )

    assert_error(
        await client.get("/api/conversations/conv_call/export", params={"format": "pdf"}),
        400,
        "invalid_format",
    )
    assert_error(await client.get("/api/conversations/nope/export"), 404, "conversation_not_found")


async def test_delete(client: httpx.AsyncClient) -> None:
    r = await client.delete("/api/conversations/conv_2")
    assert r.status_code == 204 and r.content == b""
    assert_error(await client.get("/api/conversations/conv_2"), 404, "conversation_not_found")
    assert_error(await client.delete("/api/conversations/conv_2"), 404, "conversation_not_found")
    ids = [c["id"] for c in (await client.get("/api/conversations")).json()["data"]]
    assert "conv_2" not in ids and len(ids) == 5


@pytest.mark.parametrize(
    "params, code",
    [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "1000"}, "invalid_limit"),
        ({"limit": "201"}, "invalid_limit"),
        ({"limit": "abc"}, "invalid_limit"),
        ({"limit": "-3"}, "invalid_limit"),
        ({"limit": "2.5"}, "invalid_limit"),
        ({"cursor": "garbage"}, "invalid_cursor"),
        ({"cursor": "eyJub3QiOiJhIGxpc3QifQ"}, "invalid_cursor"),  # valid base64 JSON, wrong shape
    ],
)
async def test_bad_requests(client: httpx.AsyncClient, params: dict[str, str], code: str) -> None:
    assert_error(await client.get("/api/conversations", params=params), 400, code)


async def test_limits_at_the_edges(client: httpx.AsyncClient) -> None:
    assert len((await client.get("/api/conversations", params={"limit": "1"})).json()["data"]) == 1
    assert len((await client.get("/api/conversations", params={"limit": "200"})).json()["data"]) == 6


async def test_unknown_id_and_auth(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/conversations/conv_missing")
    assert_error(r, 404, "conversation_not_found")
    assert "conv_missing" in r.json()["error"]["message"]
    r = await client.get("/api/conversations", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_store_failure_is_a_503_not_a_crash(store: Store) -> None:
    def broken() -> Store:
        raise RuntimeError("store not ready")

    app = FastAPI()
    app.include_router(make_router(broken, None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/api/conversations")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
