"""What the cloud speech adapters share: API keys, safe error messages, and the errors a fallback chain acts on.

* Keys come from an ``apiKey`` option or the vendor's environment variable (``ANTHROPIC_API_KEY``,
  ``DEEPGRAM_API_KEY``, ``ELEVENLABS_API_KEY``, ``OPENAI_API_KEY``); a missing key is a ``ValueError`` raised by
  the adapter's constructor, which the registry turns into a start-up ``ConfigError`` naming both ways to set it.
* :class:`Secret` holds a key; its ``repr``/``str`` never show it and :meth:`Secret.scrub` removes it from any text
  (vendor error bodies sometimes echo the key back).
* :class:`ProviderError` is what every cloud adapter raises (the LLM flavour, :class:`CloudLLMError`, is also an
  :class:`~voicecall.speech.base.LLMError`). Its message names the vendor, the endpoint and what happened, never
  the key; ``retry_after`` carries a 429's ``retry-after`` so a fallback chain knows when to try the entry again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from .base import LLMError


class _Silent(logging.Logger):
    """A logger that drops everything (and that ``logging.config`` cannot re-enable: it is not registered)."""

    def isEnabledFor(self, level: int) -> bool:
        return False

    def handle(self, record: logging.LogRecord) -> None:
        return None


QUIET_WS_LOG: logging.Logger = _Silent("voicecall.speech.vendor-websocket")
"""Logger handed to ``websockets`` for vendor connections: its debug output prints the handshake headers, which
carry API keys, so nothing it says is kept (the adapters report failures themselves, without the key)."""


class Secret:
    """An API key that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def resolve_key(option: str | None, env_var: str, where: str, required: bool = True) -> Secret | None:
    """The key from the ``apiKey`` option, else from ``env_var``; ``ValueError`` if required and missing."""
    value = option or os.environ.get(env_var) or ""
    if value.strip():
        return Secret(value.strip())
    if required:
        raise ValueError(f"{where} needs an API key: set the {env_var} environment variable or the stage's apiKey "
                         "option")
    return None


class ProviderError(RuntimeError):
    """A cloud stage failed. The message is safe to show a client (no key); ``kind`` is one of ``auth``,
    ``rate_limit``, ``server``, ``timeout``, ``connect``, ``dropped``, ``protocol``, ``bad_request``."""

    def __init__(self, message: str, kind: str = "server", retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.status = status


class CloudLLMError(ProviderError, LLMError):
    """A cloud LLM failed (an :class:`LLMError`, so the engine reports it as ``llm_error``)."""


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds form; an HTTP date counts as unknown)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def kind_of_status(status: int) -> str:
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server"
    return "bad_request"


def error_detail(body: bytes | str) -> str:
    """The human part of a vendor's JSON error body (Anthropic, OpenAI, Deepgram, ElevenLabs shapes), else the
    text itself, shortened."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text[:4000]
    try:
        obj: Any = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)[:300]
        detail = obj.get("detail")
        if isinstance(detail, dict):
            return str(detail.get("message") or detail.get("status") or detail)[:300]
        for key in ("err_msg", "message", "error", "detail", "reason"):
            if obj.get(key):
                return str(obj[key])[:300]
    return text.strip()[:300]


def http_failure(vendor: str, what: str, status: int, body: bytes | str, headers: Mapping[str, str],
                 key: Secret | None, llm: bool = False) -> ProviderError:
    """The error for an HTTP status >= 400 answered by a vendor."""
    retry = retry_after_seconds(headers) if status == 429 else None
    msg = f"{vendor} answered HTTP {status} to {what}: {error_detail(body)}"
    if retry is not None:
        msg += f" (retry after {retry:g} s)"
    if key is not None:
        msg = key.scrub(msg)
    cls = CloudLLMError if llm else ProviderError
    return cls(msg, kind_of_status(status), retry, status)


class LoopClients:
    """One ``httpx.AsyncClient`` per event loop (connections belong to the loop that opened them), made on demand
    with the given headers and timeouts; sync callers (worker threads) get one shared ``httpx.Client``."""

    def __init__(self, headers: dict[str, str], timeout: float, connect_timeout: float = 10.0) -> None:
        import asyncio
        import threading
        import weakref

        import httpx

        self._headers = headers
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, connect_timeout))
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())
        self._sync: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The ``httpx.AsyncClient`` of the running loop."""
        import asyncio

        import httpx

        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.get(loop)
            if client is None or client.is_closed:
                client = httpx.AsyncClient(headers=self._headers, timeout=self._timeout)
                self._async[loop] = client
            return client

    def sync(self) -> Any:
        """A shared ``httpx.Client`` (thread-safe) for blocking calls made from worker threads."""
        import httpx

        with self._lock:
            if self._sync is None or self._sync.is_closed:
                self._sync = httpx.Client(headers=self._headers, timeout=self._timeout)
            return self._sync

    async def aclose(self) -> None:
        import asyncio

        with self._lock:
            client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def transport_failure(vendor: str, exc: Exception, key: Secret | None, timeout: float, llm: bool = False
                      ) -> ProviderError:
    """The error for an ``httpx`` failure (connect error, timeout, stream cut)."""
    import httpx

    cls = CloudLLMError if llm else ProviderError
    if isinstance(exc, httpx.TimeoutException):
        return cls(f"{vendor} timed out (no data for {timeout:g} s)", "timeout")
    if isinstance(exc, httpx.ConnectError):
        msg = f"cannot connect to {vendor}: {exc or 'connection refused'}"
        return cls(key.scrub(msg) if key else msg, "connect")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        msg = f"{vendor} dropped the stream: {type(exc).__name__}: {exc}"
        return cls(key.scrub(msg) if key else msg, "dropped")
    msg = f"{vendor} failed: {type(exc).__name__}: {exc}"
    return cls(key.scrub(msg) if key else msg, "server")
