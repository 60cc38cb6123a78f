"""The alert webhook over TLS: a self-signed certificate made in the test (cryptography), the
server on 127.0.0.1. It speaks HTTPS only, picks up a rotated certificate on the next connection
without a restart (and keeps the old one when the new pair is broken), and a client that never
starts its handshake neither stalls the others nor holds its thread past the deadline."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from tailor.handlers import alerts
from tailor.io.webhook_server import HardenedServer, Limits
from tailor.settings import parse

TOKEN = "tls-token"
ALERT = {"alerts": [{"status": "firing", "fingerprint": "f", "startsAt": "2026-01-01T00:00:00Z",
                     "labels": {"namespace": "ns", "monitor": "m"}}]}


def self_signed(directory: Path, serial: int) -> Path:
    """tls.crt and tls.key for 127.0.0.1 in `directory` (a Secret's two keys); the certificate
    is its own CA, so clients trust the tls.crt file itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tailor-webhook")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return directory / "tls.crt"


@dataclass
class TlsWebhook:
    server: HardenedServer
    secret: Path  # the "mounted Secret": tls.crt and tls.key
    retrains: list[dict[str, Any]]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def post(self, trust: Path) -> tuple[int, dict[str, Any], int]:
        """Status, body and the serial number of the certificate the server presented."""
        context = ssl.create_default_context(cafile=str(trust))
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5,
                                                 context=context)
        connection.connect()
        assert isinstance(connection.sock, ssl.SSLSocket)
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        connection.request("POST", "/alerts", body=json.dumps(ALERT).encode(),
                           headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
        connection.close()
        return status, body, x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[TlsWebhook]:
    (tmp_path / "token").write_text(TOKEN)
    secret = tmp_path / "secret"
    self_signed(secret, serial=1)
    retrains: list[dict[str, Any]] = []

    def retrain(monitor: dict[str, Any], alert: dict[str, Any]) -> str:
        retrains.append(alert)
        return "retrain-created"

    server = alerts.make_server("127.0.0.1", 0, tmp_path / "token", lambda ns, name: {},
                                retrain, tls=(secret / "tls.crt", secret / "tls.key"),
                                limits=Limits(request_timeout=1.0))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield TlsWebhook(server, secret, retrains)
    server.shutdown()
    server.server_close()
    thread.join(5)


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("tailor_alerts_received_total", {"outcome": outcome}) or 0.0


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_https_serves_alerts_with_the_mounted_certificate(webhook: TlsWebhook,
                                                          tmp_path: Path) -> None:
    assert webhook.server.scheme == "https"
    status, body, serial = webhook.post(webhook.secret / "tls.crt")
    assert (status, serial) == (200, 1) and body["results"][0]["outcome"] == "retrain-created"
    # A client that does not trust the certificate gets no answer at all.
    with pytest.raises(ssl.SSLCertVerificationError):
        webhook.post(self_signed(tmp_path / "other", serial=9))
    assert len(webhook.retrains) == 1


def test_plain_http_to_the_tls_port_gets_no_answer_and_no_retrain(webhook: TlsWebhook) -> None:
    before = count("tls-error")
    with socket.create_connection(("127.0.0.1", webhook.port), timeout=5) as sock:
        body = json.dumps(ALERT).encode()
        sock.sendall(f"POST /alerts HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/") and webhook.retrains == []
    eventually(lambda: count("tls-error") == before + 1)


def test_a_rotated_certificate_is_used_from_the_next_connection(webhook: TlsWebhook,
                                                                tmp_path: Path) -> None:
    assert webhook.post(webhook.secret / "tls.crt")[2] == 1
    # The kubelet swaps a Secret volume's files at once (a symlink flip); a rename does the same.
    staged = self_signed(tmp_path / "staged", serial=2).parent
    for name in ("tls.key", "tls.crt"):
        (staged / name).replace(webhook.secret / name)
    assert webhook.post(webhook.secret / "tls.crt")[2] == 2
    # A broken pair (the key caught half-written) keeps the previous certificate in service.
    key = webhook.secret / "tls.key"
    key.write_bytes(key.read_bytes()[:64])
    assert webhook.post(webhook.secret / "tls.crt")[:1] == (200,)
    assert webhook.post(webhook.secret / "tls.crt")[2] == 2
    self_signed(webhook.secret, serial=3)  # repaired: the next connection uses it
    assert webhook.post(webhook.secret / "tls.crt")[2] == 3


def test_a_client_that_never_starts_its_handshake_stalls_no_one(webhook: TlsWebhook) -> None:
    before = count("timeout")
    silent = socket.create_connection(("127.0.0.1", webhook.port), timeout=5)
    started = time.monotonic()
    assert webhook.post(webhook.secret / "tls.crt")[0] == 200  # served meanwhile
    with contextlib.suppress(ConnectionResetError):
        assert silent.recv(1) == b""
    assert 0.9 < time.monotonic() - started < 2.5  # cut off at the 1 s deadline
    silent.close()
    # ssl closes the socket before it raises, so the count may come a moment after the close.
    eventually(lambda: count("timeout") == before + 1)


def test_a_missing_certificate_stops_the_server_at_start(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    with pytest.raises(FileNotFoundError):
        alerts.make_server("127.0.0.1", 0, tmp_path / "token", lambda ns, name: None,
                           lambda monitor, alert: "x",
                           tls=(tmp_path / "tls.crt", tmp_path / "tls.key"))


def test_the_certificate_and_key_flags_go_together(capsys: pytest.CaptureFixture[str]) -> None:
    settings = parse(["--webhook-tls-cert-file", "/c/tls.crt", "--webhook-tls-key-file",
                      "/c/tls.key"])
    assert (settings.webhook_tls_cert_file, settings.webhook_tls_key_file) == ("/c/tls.crt",
                                                                               "/c/tls.key")
    assert parse([]).webhook_tls_cert_file is None
    with pytest.raises(SystemExit):
        parse(["--webhook-tls-cert-file", "/c/tls.crt"])
    assert "go together" in capsys.readouterr().err
