"""tests/pg.py: without PostgreSQL the tests skip, except under CI where they fail."""

from __future__ import annotations

import pytest

from tests import pg


def _no_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg.ENV_URL, raising=False)
    monkeypatch.setattr(pg, "find_bin_dir", lambda: None)


def test_missing_postgres_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_postgres(monkeypatch)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="set VOICECALL_TEST_PG_URL"), pg.postgres_or_skip():
        pass


def test_missing_postgres_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_postgres(monkeypatch)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required when CI is set"), pg.postgres_or_skip():
        pass


def test_env_url_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg.ENV_URL, "postgresql://u@db.example/x")
    with pg.postgres_server() as url:
        assert url == "postgresql://u@db.example/x"


def test_search_path_url() -> None:
    assert (
        pg.with_search_path("postgresql://u@h/db", "t_1")
        == "postgresql://u@h/db?options=-c%20search_path%3Dt_1"
    )
    assert pg.with_search_path("postgresql://u@h/db?sslmode=disable", "t_1").endswith(
        "?sslmode=disable&options=-c%20search_path%3Dt_1"
    )
