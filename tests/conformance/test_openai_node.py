"""openai-node (the official ``openai`` npm package, pinned in tests/js/package-lock.json) against voicecall, in
its README shape: ``OpenAIRealtimeWS`` with ``rt.on('error', (err) => { throw err; })`` (``tests/js/openai-node-
websocket.mjs``): exit code 0 is itself the "zero error events" check.

openai-node always dials ``wss://`` (``buildRealtimeURL`` forces the scheme; there is no ``ws://`` option), so a
user serves voicecall over TLS (``server.tlsCertFile``/``tlsKeyFile``, or a proxy). Here the server does, with a
certificate made for the test, which Node trusts through ``NODE_EXTRA_CA_CERTS``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conftest import JS_DIR, node_or_skip, speech_pcm24
from tests.conformance.test_agents_sdk import check_turn
from tests.conftest import make_config
from tests.webrtc.conftest import ECHO_STACK
from voicecall.server.thread import ServerThread

pytestmark = [pytest.mark.conformance]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voicecall test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The echo-stack server on https:// (uvicorn TLS); yields (base URL, certificate)."""
    from voicecall.server.app import create_app, uvicorn_options

    cert, key = _self_signed(tmp_path)
    config = make_config(tmp_path, **ECHO_STACK, **{"server.tlsCertFile": str(cert), "server.tlsKeyFile": str(key)})
    with ServerThread(create_app(config), config.server.port, start_timeout=120.0, **uvicorn_options(config)) as srv:
        yield f"https://127.0.0.1:{srv.port}", cert


def test_openai_node_websocket(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    node = node_or_skip()
    major = int(subprocess.run([node, "-p", "process.versions.node.split('.')[0]"], capture_output=True, text=True,
                               check=True).stdout)
    if major < 20:
        pytest.skip(f"openai 7.x needs Node >= 20 (its package says 22; 20 is what this test has run on); "
                    f"this machine has Node {major}")
    base, cert = tls_server
    pcm = speech_pcm24(tmp_path / "question.pcm")
    proc = subprocess.run([node, str(JS_DIR / "openai-node-websocket.mjs"), f"{base}/v1", "local-test-key", str(pcm)],
                          cwd=JS_DIR, capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "NODE_EXTRA_CA_CERTS": str(cert), "NODE_NO_WARNINGS": "1"})
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    seen: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("wss://127.0.0.1:") and "/v1/realtime?model=gpt-realtime" in seen["url"], seen["url"]
    check_turn(seen, turn_detection="server_vad")
    assert seen["audioBytes"] > 24000 * 2 * 0.3
