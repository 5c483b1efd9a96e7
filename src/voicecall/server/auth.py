"""Client authentication.

With no ``server.apiKeys`` configured, clients need no credentials (fine on 127.0.0.1; the server warns when it
listens elsewhere). With keys configured, a client presents one of them, or a client secret (``ek_…``) this server
minted, as ``Authorization: Bearer …`` or, from a browser WebSocket, as the subprotocol
``openai-insecure-api-key.<key>``. Keys are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from voicecall.server.secrets import ClientSecret, SecretStore

KEY_SUBPROTOCOL = "openai-insecure-api-key."


@dataclass(slots=True)
class Principal:
    """Who is calling: ``label`` is safe to log and store (never the key itself)."""

    label: str
    secret: ClientSecret | None = None  # set when authenticated by an ek_ client secret
    client: str = ""
    """Whose limits apply (sessions per client, spend per day): ``api-key-N``, the client that minted the secret,
    or the address of an anonymous client. Never a key."""


class AuthError(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def presented_token(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for proto in _subprotocols(conn):
        if proto.startswith(KEY_SUBPROTOCOL):
            return proto[len(KEY_SUBPROTOCOL):]
    return None


def _subprotocols(conn: HTTPConnection) -> list[str]:
    raw = conn.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def offered_subprotocols(conn: HTTPConnection) -> list[str]:
    return _subprotocols(conn)


class Authenticator:
    def __init__(self, api_keys: list[str], secrets: SecretStore) -> None:
        self._keys = [k.encode() for k in api_keys if k]
        self.secrets = secrets

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def key_label(self, token: str) -> str | None:
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(key, token.encode()):
                return f"api-key-{i + 1}"
        return None

    def authenticate(self, conn: HTTPConnection, *, allow_secret: bool = True, require_secret: bool = False) -> Principal:
        """Raise :class:`AuthError` unless the connection is allowed."""
        token = presented_token(conn)
        client = conn.client.host if conn.client else "unknown"
        if token and token.startswith("ek_") and allow_secret:
            secret = self.secrets.get(token)
            if secret is None:
                raise AuthError("The client secret is invalid or has expired; ask the server for a new one.")
            return Principal(label=f"{client} (client secret {secret.label})", secret=secret,
                             client=secret.client or client)
        if require_secret:
            if token is None and not self.required:
                return Principal(label=client, client=client)
            if token is None:
                raise AuthError("Missing credentials: send 'Authorization: Bearer <client secret>'.")
        if not self.required:
            return Principal(label=client, client=client)
        if token is None:
            raise AuthError("Missing credentials: send 'Authorization: Bearer <key>' (or the "
                            "'openai-insecure-api-key.<key>' WebSocket subprotocol from a browser).")
        label = self.key_label(token)
        if label is None:
            raise AuthError("Invalid API key.")
        return Principal(label=f"{client} ({label})", client=label)
