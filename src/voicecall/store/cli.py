"""``voicecall history list|show ID|export ID|delete ID``: the history, straight from the configured database.

The main CLI calls :func:`add_history_parser` with its ``subparsers``; the ``history`` parser sets
``func=run_history``, which takes the parsed :class:`argparse.Namespace` and returns the exit status
(0 ok, 1 not found / database error, 2 bad configuration or URL).

The database is ``--store-url URL`` if given, else ``store.url`` of ``--config FILE`` (or
``$VOICECALL_CONFIG``, ``$VOICECALL_STORE_URL``), read with :func:`voicecall.config.load_config`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from voicecall.store.base import ConversationRecord, InvalidCursor, Store, StoreError, redact
from voicecall.store.export import detail_json, detail_markdown, format_cost, format_duration

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_history_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``history`` (with ``list``, ``show``, ``export``, ``delete``) to ``subparsers`` (the object
    returned by ``parser.add_subparsers()``). Self-contained: sets ``func=run_history`` on the new parser and
    returns it."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: an option absent here must not overwrite a --config the main parser already parsed.
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: $VOICECALL_CONFIG); its store.url is used",
    )
    common.add_argument(
        "--store-url",
        metavar="URL",
        dest="store_url",
        default=argparse.SUPPRESS,
        help="database URL, overrides the configuration (sqlite:///voicecall.db, postgresql://...)",
    )
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "history",
        parents=[common],
        help="list, show, export or delete recorded conversations",
        description="Read and manage the conversation history kept in store.url.",
    )
    sub = parser.add_subparsers(dest="history_command", metavar="COMMAND", required=True)

    p_list = sub.add_parser("list", parents=[common], help="conversations, newest first")
    p_list.add_argument("--limit", type=int, default=20, help="how many (1-200, default 20)")
    p_list.add_argument("--cursor", help="continue after a previous page (printed at the end of a page)")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p_show = sub.add_parser("show", parents=[common], help="print a conversation's transcript")
    p_show.add_argument("id", help="conversation id")

    p_export = sub.add_parser("export", parents=[common], help="export a conversation as JSON or Markdown")
    p_export.add_argument("id", help="conversation id")
    p_export.add_argument("--format", choices=("json", "md"), default="json", help="json (default) or md")
    p_export.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")

    p_delete = sub.add_parser("delete", parents=[common], help="delete a conversation")
    p_delete.add_argument("id", help="conversation id")

    parser.set_defaults(func=run_history)
    return parser


def resolve_store_url(args: argparse.Namespace) -> str:
    """``--store-url``, else ``store.url`` from the configuration (raises ``ConfigError``/``ValueError``)."""
    url = getattr(args, "store_url", None)
    if url:
        return str(url)
    from voicecall.config import load_config

    return load_config(getattr(args, "config", None)).store.url


def run_history(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run a parsed ``voicecall history ...`` command; returns the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        url = resolve_store_url(args)
        from voicecall.store import open_store, parse_store_url

        parsed = parse_store_url(url)
        if parsed.kind == "none":
            print("voicecall history: history is disabled (store.url is 'none')", file=err)
            return EXIT_FAILED
        if parsed.kind == "sqlite" and parsed.path != ":memory:" and not Path(parsed.path or "").exists():
            print(
                f"voicecall history: no history database at {Path(parsed.path or '').resolve()} "
                f"(store.url {url!r}; relative paths are relative to the current directory)",
                file=err,
            )
            return EXIT_FAILED
        store = open_store(url)
    except ValueError as exc:  # ConfigError is a ValueError
        print(f"voicecall history: {redact(str(exc))}", file=err)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(store, args, out, err))
    except StoreError as exc:
        print(f"voicecall history: {exc}", file=err)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a database error: say it in one line
        print(
            f"voicecall history: {store.description}: {type(exc).__name__}: {redact(str(exc)).strip()}",
            file=err,
        )
        return EXIT_FAILED


async def _run(store: Store, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    async with store:
        command = args.history_command
        if command == "list":
            return await _list(store, args, out, err)
        detail = await store.get_conversation(args.id) if command in ("show", "export") else None
        if command == "delete":
            if await store.delete_conversation(args.id):
                print(f"deleted {args.id}", file=out)
                return EXIT_OK
        elif detail is not None:
            if command == "show":
                out.write(detail_markdown(detail))
                return EXIT_OK
            text = (
                json.dumps(detail_json(detail), ensure_ascii=False, indent=2) + "\n"
                if args.format == "json"
                else detail_markdown(detail)
            )
            if args.out:
                Path(args.out).write_text(text, encoding="utf-8")
                print(f"wrote {args.out}", file=err)
            else:
                out.write(text)
            return EXIT_OK
        print(f"voicecall history: no conversation with id {args.id!r}", file=err)
        return EXIT_FAILED


async def _list(store: Store, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not 1 <= args.limit <= 200:
        print("voicecall history: --limit must be between 1 and 200", file=err)
        return EXIT_USAGE
    try:
        records, next_cursor = await store.list_conversations(args.limit, args.cursor)
    except InvalidCursor as exc:
        print(f"voicecall history: {exc}", file=err)
        return EXIT_USAGE
    if args.json:
        from voicecall.store.export import conversation_json

        json.dump(
            {"data": [conversation_json(r) for r in records], "next_cursor": next_cursor}, out, indent=2
        )
        out.write("\n")
        return EXIT_OK
    if not records:
        print("no conversations recorded" if not args.cursor else "no more conversations", file=out)
        return EXIT_OK
    out.write(format_table(records))
    if next_cursor:
        print(f"\nmore: voicecall history list --limit {args.limit} --cursor {next_cursor}", file=out)
    return EXIT_OK


def format_table(records: list[ConversationRecord], title_width: int = 48) -> str:
    """Conversations as an aligned plain-text table."""
    header = ("ID", "STARTED (UTC)", "DURATION", "TRANSPORT", "MODEL", "ITEMS", "COST", "TITLE")
    rows: list[tuple[str, ...]] = []
    for r in records:
        duration = format_duration((r.ended_at - r.started_at).total_seconds()) if r.ended_at else "(open)"
        title = r.title or ""
        if len(title) > title_width:
            title = title[: title_width - 1] + "…"
        rows.append(
            (
                r.id,
                r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                duration,
                r.transport,
                r.model or "-",
                str(r.item_count),
                format_cost(r.cost_usd),
                title,
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = {5, 6}
    lines = []
    for row in (header, *rows):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
