"""Fixtures for the history store tests: every backend test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``tests/pg.py``: ``$VOICECALL_TEST_PG_URL`` if set, else a throwaway server; without
either the PostgreSQL variants are skipped, or fail when ``$CI`` is set.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
try:
    import voicecall  # noqa: F401
except ImportError:  # not installed in the venv: use the source tree
    sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import pg
from voicecall.store import Store, open_store

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server shared by the session (skip / fail without one, see tests/pg.py)."""
    with pg.postgres_or_skip() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL for an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    server = request.getfixturevalue("pg_server")
    with pg.fresh_schema(server) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An opened store (all migrations applied) on each backend."""
    s = open_store(store_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
