"""Short-lived client secrets (``ek_…``) that carry a session configuration and authenticate a browser.

A secret may open several sessions until it expires (as OpenAI's do); the sessions it opened may outlive it.
Secrets this server mints are *signed and self-contained* (:mod:`voicecall.cluster.signing`): any replica with the
same ``server.secretKey`` verifies them, no store needed. For the OpenAI gateway, secrets minted by OpenAI stay
OpenAI's: they are remembered (in this process, and in the shared state when ``state.url`` is Redis, so that
another replica knows them) so that a browser can present them to this server's ``/v1/realtime/calls``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voicecall.cluster.signing import SecretSigner

if TYPE_CHECKING:
    from voicecall.cluster.state import SharedState


@dataclass(slots=True)
class ClientSecret:
    value: str
    expires_at: int
    session: dict[str, Any]
    provider: str = "local"
    label: str = field(default="")
    client: str = ""
    """Who minted it (``Principal.client``): sessions opened with it count against that client's limits."""

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class SecretStore:
    def __init__(self, signer: SecretSigner | None = None, max_entries: int = 100_000,
                 shared: SharedState | None = None) -> None:
        self.signer = signer or SecretSigner()
        self.shared = shared
        self._items: dict[str, ClientSecret] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def mint(self, session: dict[str, Any], ttl_seconds: int, provider: str = "local",
             client: str = "") -> ClientSecret:
        signed = self.signer.sign(session, ttl_seconds, provider, client=client)
        return ClientSecret(value=signed.value, expires_at=signed.expires_at, session=session, provider=provider,
                            label=signed.value[:7] + "…", client=client)

    def remember(self, value: str, expires_at: int, session: dict[str, Any], provider: str) -> ClientSecret:
        """Keep a secret minted elsewhere (OpenAI's) in this process's memory (see :meth:`share` for replicas)."""
        secret = ClientSecret(value=value, expires_at=expires_at, session=session, provider=provider,
                              label=value[:7] + "…")
        with self._lock:
            self._purge()
            if len(self._items) >= self._max:
                oldest = min(self._items.values(), key=lambda s: s.expires_at)
                self._items.pop(oldest.value, None)
            self._items[value] = secret
        return secret

    async def share(self, secret: ClientSecret) -> None:
        """Tell the other replicas about a remembered secret (no-op without a shared state)."""
        if self.shared is not None:
            await self.shared.remember_secret(secret.value, secret.expires_at,
                                              {"session": secret.session, "provider": secret.provider,
                                               "expires_at": secret.expires_at})

    async def prefetch(self, value: str | None) -> None:
        """Before a synchronous :meth:`get`: load a secret another replica remembered (Redis), if any.

        Errors of the shared state are swallowed here: the secret is then simply unknown (401)."""
        from voicecall.cluster.state import StateUnavailable

        if not value or not value.startswith("ek_") or self.shared is None or self.get(value) is not None:
            return
        try:
            record = await self.shared.recall_secret(value)
        except StateUnavailable:
            return
        if record and isinstance(record.get("session"), dict):
            expires = record.get("expires_at")
            expires_at = int(expires) if isinstance(expires, (int, float)) else int(time.time()) + 60
            self.remember(value, expires_at, record["session"], str(record.get("provider", "")))

    def get(self, value: str) -> ClientSecret | None:
        signed = self.signer.verify(value)
        if signed is not None:
            return ClientSecret(value=value, expires_at=signed.expires_at, session=signed.session,
                                provider=signed.provider, label=value[:7] + "…", client=signed.client)
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
