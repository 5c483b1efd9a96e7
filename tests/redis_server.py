"""A throwaway ``redis-server`` for tests (:class:`voicecall.bench.cluster.RedisServer`, which the cluster bench
uses too), on 127.0.0.1 and a free port, in a temporary directory.

Fails the test when ``$CI`` is set and Debian's ``redis-server`` is missing (``.ci/run`` installs it), skips otherwise.
It can be stopped and started again on the same port (to test what happens while Redis is down).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from voicecall.bench.cluster import RedisServer

__all__ = ["RedisServer", "redis_or_skip"]


@contextlib.contextmanager
def redis_or_skip() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required when CI is set: {exc}", pytrace=False)
        pytest.skip(str(exc))
    with server:
        yield server
