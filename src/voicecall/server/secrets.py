"""Short-lived client secrets (``ek_…``) that carry a session configuration and authenticate a browser.

A secret may open several sessions until it expires (as OpenAI's do); the sessions it opened may outlive it.
Secrets live in this process's memory. For the OpenAI gateway, secrets minted by OpenAI are remembered too, so
that a browser can present them to this server's ``/v1/realtime/calls`` (the key itself stays server-side).
"""

from __future__ import annotations

import secrets as _secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class ClientSecret:
    value: str
    expires_at: int
    session: dict[str, Any]
    provider: str = "local"
    label: str = field(default="")

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class SecretStore:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._items: dict[str, ClientSecret] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def mint(self, session: dict[str, Any], ttl_seconds: int, provider: str = "local") -> ClientSecret:
        value = "ek_" + _secrets.token_hex(16)
        return self.remember(value, int(time.time()) + ttl_seconds, session, provider)

    def remember(self, value: str, expires_at: int, session: dict[str, Any], provider: str) -> ClientSecret:
        secret = ClientSecret(value=value, expires_at=expires_at, session=session, provider=provider,
                              label=value[:7] + "…")
        with self._lock:
            self._purge()
            if len(self._items) >= self._max:
                oldest = min(self._items.values(), key=lambda s: s.expires_at)
                self._items.pop(oldest.value, None)
            self._items[value] = secret
        return secret

    def get(self, value: str) -> ClientSecret | None:
        with self._lock:
            secret = self._items.get(value)
            if secret is None:
                return None
            if secret.expired:
                del self._items[value]
                return None
            return secret

    def _purge(self) -> None:
        now = time.time()
        for key in [k for k, s in self._items.items() if s.expires_at <= now]:
            del self._items[key]
