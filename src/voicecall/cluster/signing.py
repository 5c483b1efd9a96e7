"""Signed, self-contained client secrets: ``ek_<payload>.<signature>``.

The payload (zlib-compressed JSON, base64url) carries the session configuration, the provider and the expiry; the
signature is HMAC-SHA256 over it with the server's secret key (``server.secretKey`` / ``VOICECALL_SECRET_KEY``).
Any replica that shares the key verifies a secret without a shared store. Key rotation: the current key signs,
``server.previousSecretKeys`` still verify (the grace period is as long as you keep them listed; secrets live at
most ``expires_after`` = 2 h). Without a configured key a random one is drawn per process, so secrets are valid on
that process only (the single-machine default).

The payload is signed, not encrypted: it holds what the holder may know anyway (its own session configuration).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as _secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

PREFIX = "ek_"
MAX_TOKEN_CHARS = 64 * 1024  # a longer "secret" is refused before any decoding


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(key: bytes) -> str:
    """A short, non-secret name of a key (which key signed a secret)."""
    return hashlib.sha256(b"voicecall-kid:" + key).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class SignedSecret:
    value: str
    expires_at: int
    session: dict[str, Any]
    provider: str
    key_id: str
    client: str = ""


class SecretSigner:
    """Signs with ``keys[0]``; verifies with any of ``keys`` (the current key, then previous ones)."""

    def __init__(self, keys: list[str] | None = None) -> None:
        raw = [k.encode() for k in (keys or []) if k]
        self.ephemeral = not raw
        if not raw:
            raw = [_secrets.token_bytes(32)]
        self._keys = {key_id(k): k for k in raw}
        self._current = key_id(raw[0])

    @property
    def current_key_id(self) -> str:
        return self._current

    def sign(self, session: dict[str, Any], ttl_seconds: int, provider: str = "local", client: str = "",
             now: float | None = None) -> SignedSecret:
        issued = int(time.time() if now is None else now)
        expires = issued + int(ttl_seconds)
        payload: dict[str, Any] = {"v": 1, "k": self._current, "iat": issued, "exp": expires, "p": provider,
                   "n": _secrets.token_hex(6), "c": client, "s": session}
        body = _b64e(zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 6))
        mac = hmac.new(self._keys[self._current], body.encode("ascii"), hashlib.sha256).digest()[:20]
        return SignedSecret(PREFIX + body + "." + _b64e(mac), expires, session, provider, self._current,
                            client)

    def verify(self, value: str, now: float | None = None) -> SignedSecret | None:
        """The secret's content if ``value`` was signed by one of our keys and has not expired, else None.

        Never raises on hostile input (size is checked first; any decoding failure is simply 'not ours')."""
        if (not value.startswith(PREFIX) or len(value) > MAX_TOKEN_CHARS or value.count(".") != 1
                or not value.isascii()):
            return None
        body, _, sig = value[len(PREFIX):].partition(".")
        try:
            mac = _b64d(sig)
        except ValueError:
            return None
        signed_by = None
        for kid, key in self._keys.items():  # the signature is checked before anything is decompressed or parsed
            if hmac.compare_digest(mac, hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()[:20]):
                signed_by = kid
                break
        if signed_by is None:
            return None
        try:
            head = json.loads(zlib.decompressobj().decompress(_b64d(body), MAX_TOKEN_CHARS * 8))
        except (ValueError, zlib.error, RecursionError):
            return None
        if not isinstance(head, dict):
            return None
        exp, session, provider = head.get("exp"), head.get("s"), head.get("p")
        if not isinstance(exp, int) or not isinstance(session, dict) or not isinstance(provider, str):
            return None
        if (time.time() if now is None else now) >= exp:
            return None
        return SignedSecret(value, exp, session, provider, signed_by, str(head.get("c") or ""))
