"""A PostgreSQL server for tests: ``$VOICECALL_TEST_PG_URL`` if set, else a throwaway server started here.

Reusable from any test folder (put the repository root on ``sys.path``, then ``from tests import pg``),
e.g. in a ``conftest.py``::

    @pytest.fixture(scope="session")
    def pg_server():
        with pg.postgres_or_skip() as url:      # skips (or fails when $CI is set) without PostgreSQL
            yield url

    @pytest.fixture
    def pg_url(pg_server):
        with pg.fresh_schema(pg_server) as url:  # an empty schema per test, dropped afterwards
            yield url

The throwaway server: ``initdb`` into a temporary directory, then ``pg_ctl start`` with the socket in that
directory, a free port on 127.0.0.1, and durability switched off (``fsync=off``; it is deleted at the end). As
root, both run as the ``postgres`` OS user (``runuser -u postgres --``) with the directory chowned to it.
Binaries: ``$VOICECALL_TEST_PG_BIN``, else the newest ``/usr/lib/postgresql/*/bin``, else ``initdb`` on PATH.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ENV_URL = "VOICECALL_TEST_PG_URL"
ENV_BIN = "VOICECALL_TEST_PG_BIN"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL to test against; the message says why and what to do."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    explicit = os.environ.get(ENV_BIN)
    candidates: list[Path] = [Path(explicit)] if explicit else []

    def version(p: Path) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in p.parent.name.split("."))
        except ValueError:
            return (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file() and (c / "postgres").is_file():
            return c
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """``initdb`` + ``pg_ctl start`` in a temporary directory; :meth:`stop` removes everything."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="voicecall-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.prefix: list[str] = []
        self.user = "postgres"
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                raise PostgresUnavailable(
                    "running as root, and there is no 'postgres' OS user to run the "
                    "server as (initdb refuses root)"
                ) from None
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.started = False

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self) -> str:
        """Create the cluster and start the server; returns a superuser URL."""
        res = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        if res.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {(res.stderr or res.stdout).strip()[-800:]}")
        options = (
            f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        res = self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        if res.returncode != 0:
            tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            raise PostgresUnavailable(f"postgres did not start: {(res.stderr or res.stdout).strip()} {tail}")
        self.started = True
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A superuser-ish URL: ``$VOICECALL_TEST_PG_URL`` or a throwaway server. Raises PostgresUnavailable."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(
            f"no PostgreSQL: set {ENV_URL}=postgresql://user:pass@host/db, or install the server binaries "
            "(apt-get install postgresql) so a throwaway server can be started"
        )
    server = ThrowawayPostgres(bin_dir)
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_or_skip() -> Iterator[str]:
    """:func:`postgres_server`, but skip when PostgreSQL is unavailable (fail instead if ``$CI`` is set)."""
    import pytest

    try:
        cm = postgres_server()
        url = cm.__enter__()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required when CI is set: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield url
    finally:
        cm.__exit__(None, None, None)


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` first (libpq ``options=-c search_path=...``)."""
    parts = urlsplit(url)
    option = "options=" + quote(f"-c search_path={schema}", safe="")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new empty schema for one test, dropped afterwards; yields a URL whose connections use it."""
    import psycopg

    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
