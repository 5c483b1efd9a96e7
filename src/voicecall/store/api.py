"""HTTP API over the history: list, read, export and delete conversations.

``GET /api/conversations?limit=&cursor=``, ``GET /api/conversations/{id}``, ``DELETE
/api/conversations/{id}``, ``GET /api/conversations/{id}/export?format=json|md``. Errors always have the
OpenAI shape ``{"error": {"message", "type": "invalid_request_error", "code"}}`` (``store_unavailable`` uses
``type`` ``"server_error"``). Query parameters are validated here, not by FastAPI, so that bad values get this
shape too."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, Response

from voicecall.store.base import InvalidCursor, Store, redact
from voicecall.store.export import conversation_json, detail_json, detail_markdown

log = logging.getLogger("voicecall.store")

DEFAULT_LIMIT = 20
MAX_LIMIT = 200

_T = TypeVar("_T")


def error_response(
    status: int, message: str, code: str, type_: str = "invalid_request_error"
) -> JSONResponse:
    """An OpenAI-shaped error body."""
    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": type_, "code": code}}
    )


def _not_found(conversation_id: str) -> JSONResponse:
    return error_response(404, f"No conversation with id {conversation_id!r}.", "conversation_not_found")


def _unavailable(what: str, exc: BaseException) -> JSONResponse:
    log.error("history API: %s failed: %s: %s", what, type(exc).__name__, redact(str(exc))[:500])
    return error_response(
        503, "The history database is unavailable; see the server log.", "store_unavailable", "server_error"
    )


def parse_limit(raw: str | None) -> int:
    """``limit`` from the query string: an integer 1..200, default 20; :class:`ValueError` otherwise."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,9}", text):
        raise ValueError(f"limit must be an integer between 1 and {MAX_LIMIT}, got {raw[:40]!r}")
    value = int(text)
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def _filename(conversation_id: str, ext: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", conversation_id)[:100] or "conversation"
    return f"{safe}.{ext}"


def make_router(
    get_store: Callable[[], Store], auth_dependency: Callable[..., Any] | Any | None = None
) -> APIRouter:
    """The ``/api/conversations`` routes. ``get_store`` is called per request (so the store may be opened
    after the app is built); ``auth_dependency``, if given, guards every route: a dependency callable, or an
    already wrapped ``Depends(...)``."""
    dependencies: list[Any] = []
    if isinstance(auth_dependency, DependsParam):  # already wrapped: Depends(require_auth)
        dependencies.append(auth_dependency)
    elif auth_dependency is not None:
        dependencies.append(Depends(auth_dependency))
    router = APIRouter(prefix="/api/conversations", tags=["history"], dependencies=dependencies)

    def store_or_error() -> Store | JSONResponse:
        try:
            return get_store()
        except Exception as exc:  # noqa: BLE001
            return _unavailable("getting the store", exc)

    async def with_store(doing: str, op: Callable[[Store], Awaitable[_T]]) -> _T | JSONResponse:
        """``op(store)``'s result, or the error response to return (no store, or the store failed: 503)."""
        store = store_or_error()
        if isinstance(store, JSONResponse):
            return store
        try:
            return await op(store)
        except Exception as exc:  # noqa: BLE001
            return _unavailable(doing, exc)

    @router.get("", summary="List conversations, newest first")
    async def list_conversations(
        limit: str | None = Query(None, description=f"1..{MAX_LIMIT}, default {DEFAULT_LIMIT}"),
        cursor: str | None = Query(None, description="next_cursor from the previous page"),
    ) -> Response:
        try:
            n = parse_limit(limit)
        except ValueError as exc:
            return error_response(400, str(exc), "invalid_limit")
        store = store_or_error()
        if isinstance(store, JSONResponse):
            return store
        try:
            records, next_cursor = await store.list_conversations(n, cursor or None)
        except InvalidCursor as exc:
            return error_response(400, str(exc), "invalid_cursor")
        except Exception as exc:  # noqa: BLE001
            return _unavailable("listing conversations", exc)
        return JSONResponse(
            {
                "object": "list",
                "data": [conversation_json(r) for r in records],
                "has_more": next_cursor is not None,
                "next_cursor": next_cursor,
            }
        )

    async def load_detail(conversation_id: str, doing: str) -> Any:
        """The conversation's detail, or the error response to return (no store, store failure, unknown id)."""
        detail = await with_store(doing, lambda store: store.get_conversation(conversation_id))
        if isinstance(detail, JSONResponse):
            return detail
        return _not_found(conversation_id) if detail is None else detail

    @router.get("/{conversation_id}", summary="One conversation with its items and responses")
    async def get_conversation(conversation_id: str) -> Response:
        detail = await load_detail(conversation_id, "reading a conversation")
        if isinstance(detail, Response):
            return detail
        return JSONResponse(detail_json(detail))

    @router.delete("/{conversation_id}", status_code=204, summary="Delete a conversation")
    async def delete_conversation(conversation_id: str) -> Response:
        deleted = await with_store("deleting a conversation", lambda store: store.delete_conversation(conversation_id))
        if isinstance(deleted, JSONResponse):
            return deleted
        if not deleted:
            return _not_found(conversation_id)
        return Response(status_code=204)

    @router.get("/{conversation_id}/export", summary="Download a conversation as JSON or Markdown")
    async def export_conversation(
        conversation_id: str,
        format: str | None = Query(None, description="json (default) or md"),  # `format`: the API's query parameter
    ) -> Response:
        fmt = (format or "json").strip().lower()
        if fmt == "markdown":
            fmt = "md"
        if fmt not in ("json", "md"):
            return error_response(
                400, f"format must be 'json' or 'md', got {(format or '')[:40]!r}", "invalid_format"
            )
        detail = await load_detail(conversation_id, "exporting a conversation")
        if isinstance(detail, Response):
            return detail
        disposition = f'attachment; filename="{_filename(conversation_id, fmt)}"'
        if fmt == "json":
            body = json.dumps(detail_json(detail), ensure_ascii=False, indent=2) + "\n"
            return Response(body, media_type="application/json", headers={"Content-Disposition": disposition})
        return Response(
            detail_markdown(detail),
            media_type="text/markdown; charset=utf-8",
            headers={"Content-Disposition": disposition},
        )

    return router
