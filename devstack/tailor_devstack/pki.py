"""The local cluster's certificates: a CA, serving certificates and client identities.

The API server runs as a real cluster's would (TLS, client certificates, Node and RBAC
authorization), so every component gets its own identity: the controller manager and the
scheduler their `system:` users, the kubelet `system:node:<name>` in `system:nodes`, kube-proxy
and CoreDNS theirs, and the developer an admin in `system:masters`. Keys are ECDSA P-256 (fast
to make); the service-account signing key is RSA because every token consumer understands RS256.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """A client certificate's subject: CN is the user name, O the groups."""

    name: str
    common_name: str
    groups: tuple[str, ...] = ()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class PKI:
    """Creates (once) and reads the cluster's certificates under one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def ensure(
        self, *, server_ips: list[str], server_names: list[str], clients: list[Identity]
    ) -> None:
        """Make whatever is missing or was made for other addresses; keep what still fits."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        if not self.ca_cert.exists():
            self._make_ca()
        wanted = {"ips": sorted(server_ips), "names": sorted(server_names)}
        params = self.dir / "serving.json"
        if not self.cert("serving").exists() or (
            not params.exists() or json.loads(params.read_text()) != wanted
        ):
            self.issue(
                "serving",
                common_name="tailor-local-serving",
                groups=(),
                ips=server_ips,
                dns_names=server_names,
                usage=ExtendedKeyUsageOID.SERVER_AUTH,
            )
            params.write_text(json.dumps(wanted))
        for identity in clients:
            if not self.cert(identity.name).exists():
                self.issue(
                    identity.name,
                    common_name=identity.common_name,
                    groups=identity.groups,
                    ips=[],
                    dns_names=[],
                    usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                )
        if not self.sa_key.exists():
            sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_key(self.sa_key, sa)
            self.sa_pub.write_bytes(
                sa.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tailor-local-ca")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY * 10)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(self.key("ca"), key)
        self.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        groups: tuple[str, ...] = (),
        ips: list[str] | None = None,
        dns_names: list[str] | None = None,
        usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
    ) -> None:
        """A certificate signed by the CA, written as `<name>.crt` and `<name>.key`."""
        ca_key = _load_key(self.key("ca"))
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names or []]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or []]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(self.key(name), key)
        self.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def kubeconfig(*, server: str, ca: Path, cert: Path, key: Path, user: str) -> dict[str, object]:
    """A kubeconfig that points at files rather than embedding them (they never leave the dir)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tailor-local",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user,
                   "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "tailor-local",
                      "context": {"cluster": "tailor-local", "user": user}}],
        "current-context": "tailor-local",
    }
