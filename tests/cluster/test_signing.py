"""Signed client secrets: any replica with the key verifies them; rotation; tampering and hostile input."""

from __future__ import annotations

import time

from voicecall.cluster.signing import MAX_TOKEN_CHARS, SecretSigner
from voicecall.server.secrets import SecretStore

SESSION = {"type": "realtime", "instructions": "Be brief. " * 50, "audio": {"output": {"voice": "marin"}}}


def test_a_secret_minted_by_one_replica_opens_on_another() -> None:
    a, b = SecretStore(SecretSigner(["shared-key"])), SecretStore(SecretSigner(["shared-key"]))
    secret = a.mint(SESSION, 60, "local", client="api-key-1")
    got = b.get(secret.value)  # no store in common: the secret carries its session and is signed
    assert got is not None and got.session == SESSION and got.client == "api-key-1" and got.provider == "local"
    assert SecretStore(SecretSigner(["another-key"])).get(secret.value) is None
    assert SecretStore().get(secret.value) is None  # no key configured: a random one per process


def test_rotation_keeps_old_secrets_valid_while_the_old_key_is_listed() -> None:
    old = SecretSigner(["key-2025"]).sign(SESSION, 60)
    rotated = SecretSigner(["key-2026", "key-2025"])  # server.secretKey + server.previousSecretKeys
    assert rotated.verify(old.value) is not None
    new = rotated.sign(SESSION, 60)
    assert new.key_id != old.key_id and SecretSigner(["key-2025"]).verify(new.value) is None
    assert SecretSigner(["key-2026"]).verify(old.value) is None  # grace period over: the old key is dropped


def test_expiry_and_tampering() -> None:
    signer = SecretSigner(["k"])
    s = signer.sign(SESSION, 10)
    assert signer.verify(s.value, now=time.time() + 11) is None
    body, sig = s.value[3:].split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    assert signer.verify("ek_" + flipped + "." + sig) is None
    assert signer.verify(s.value + "x") is None


def test_hostile_values_are_refused_without_errors() -> None:
    signer = SecretSigner(["k"])
    for value in ("ek_", "ek_.", "ek_a.b.c", "ek_" + "A" * (MAX_TOKEN_CHARS + 1) + ".x", "ek_é.é", "ek_%%%.%%%",
                  "sk-something", "ek_" + "0" * 32):
        assert signer.verify(value) is None


def test_secrets_stay_small_enough_for_a_header() -> None:
    s = SecretSigner(["k"]).sign(SESSION, 600)
    assert len(s.value) < 2000  # compressed: fits an Authorization header and a WebSocket subprotocol
    assert all(c.isalnum() or c in "-_." for c in s.value)
