"""Certificates, keys and kubeconfig files for a throw-away control plane on 127.0.0.1.

ECDSA P-256 keys throughout: generating them takes microseconds (RSA takes tens of milliseconds
each), and kube-apiserver accepts them for serving, client and service-account signing keys.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


@dataclass(frozen=True)
class _Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> _Authority:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cls(key, cert)

    def issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        *,
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, both PEM."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns_names or ips:
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class ClusterPki:
    """Paths of the files written by :func:`write_cluster_pki`."""

    serving_ca: Path
    serving_cert: Path
    serving_key: Path
    client_ca: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


def write_cluster_pki(folder: Path, extra_ips: tuple[str, ...] = ()) -> ClusterPki:
    """Writes a serving CA and the API server's certificate (localhost, 127.0.0.1 and
    ``extra_ips``), a client CA and an admin client certificate (CN admin, O system:masters), and
    a service-account key pair."""
    folder.mkdir(parents=True, exist_ok=True)
    serving_ca = _Authority.create("mcop-devcluster-serving-ca")
    client_ca = _Authority.create("mcop-devcluster-client-ca")
    serving_cert, serving_key = serving_ca.issue(
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ips=("127.0.0.1", *extra_ips),
    )
    admin_cert, admin_key = client_ca.issue(
        _name("admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH
    )
    sa_key = _key()
    sa_public = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ClusterPki(
        serving_ca=_write(folder / "serving-ca.crt", serving_ca.cert_pem),
        serving_cert=_write(folder / "apiserver.crt", serving_cert),
        serving_key=_write(folder / "apiserver.key", serving_key),
        client_ca=_write(folder / "client-ca.crt", client_ca.cert_pem),
        admin_cert=_write(folder / "admin.crt", admin_cert),
        admin_key=_write(folder / "admin.key", admin_key),
        service_account_key=_write(folder / "service-account.key", _key_pem(sa_key)),
        service_account_public_key=_write(folder / "service-account.pub", sa_public),
    )


def serving_certificate(
    common_name: str, ips: tuple[str, ...] = ("127.0.0.1",)
) -> tuple[bytes, bytes, bytes]:
    """(CA, certificate, key), PEM, for a server of our own on these addresses (a webhook the
    API server calls): a CA of its own, so nothing else it signs is trusted by the caller."""
    authority = _Authority.create(f"{common_name}-ca")
    cert, key = authority.issue(_name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, ips=ips)
    return authority.cert_pem, cert, key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_pem: bytes,
    user: str,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A kubeconfig with everything embedded (no file references), readable only by us."""
    credentials: dict[str, str] = {}
    if client_cert_pem is not None and client_key_pem is not None:
        credentials["client-certificate-data"] = _b64(client_cert_pem)
        credentials["client-key-data"] = _b64(client_key_pem)
    if token is not None:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": "mcop-devcluster", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mcop-devcluster",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "mcop-devcluster", "context": context}],
        "current-context": "mcop-devcluster",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)
    return path
