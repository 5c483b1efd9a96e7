"""An ASGI app served by uvicorn on 127.0.0.1 in a background thread: for benchmarks and tests that need a real
server in their own process (``voicecall serve`` is the way to run one for users)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

import uvicorn


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """``app`` on ``127.0.0.1:port`` (a free port when not given), started by :meth:`start` (or ``with``) and
    stopped by :meth:`stop`. ``uvicorn_kwargs`` go to ``uvicorn.Config``."""

    def __init__(self, app: Any, port: int | None = None, *, name: str = "voicecall-server",
                 start_timeout: float = 180.0, **uvicorn_kwargs: Any) -> None:
        self.app = app
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", **uvicorn_kwargs))
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def start(self) -> Self:
        """Start serving; returns once the server accepts connections (its lifespan start-up is done)."""
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
