"""Fixtures for the history end-to-end tests."""

# The same two backends as the store's own suite: a SQLite file, or a fresh schema on a real PostgreSQL server.
from tests.store.conftest import pg_server, store_url  # noqa: F401  (pytest fixtures)
