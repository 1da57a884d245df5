"""Certificates made for a test: a CA, and server and client certificates it signs (PEM files).

Made with the ``cryptography`` package: EC P-256 keys (fast to generate), valid for a day.
Server certificates name ``localhost`` and ``127.0.0.1``, where the tests' servers listen.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def replace_file(path: Path, data: bytes) -> None:
    """Writes ``path`` the way rotation tools do: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(data)
    os.replace(staged, path)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, in PEM and written to ``cert_file``/``key_file``."""

    cert: bytes
    key: bytes
    cert_file: Path
    key_file: Path


class Authority:
    """A self-signed CA that issues certificates into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = self._certificate.public_bytes(serialization.Encoding.PEM)
        self.cert_file = directory / f"{name}-ca.pem"
        self.cert_file.write_bytes(self.cert)

    def issue(self, name: str, *, server: bool = True, client: bool = False) -> Issued:
        """A leaf certificate for ``server`` and/or ``client`` authentication, written to
        ``<name>.pem`` and ``<name>.key`` (replacing files of that name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        issued = Issued(
            certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key), self.directory / f"{name}.pem", self.directory / f"{name}.key"
        )
        replace_file(issued.cert_file, issued.cert)
        replace_file(issued.key_file, issued.key)
        return issued


def other_key() -> bytes:
    """A private key that belongs to no certificate (PEM)."""
    return _key_pem(ec.generate_private_key(ec.SECP256R1()))


@dataclass(frozen=True)
class Pki:
    """Two unrelated CAs; the server's certificate and a client's come from the first."""

    ca: Authority
    stranger_ca: Authority
    server: Issued
    client: Issued
    stranger_client: Issued

    @classmethod
    def issue(cls, directory: Path) -> Pki:
        ca, stranger_ca = Authority(directory, "platform"), Authority(directory, "stranger")
        return cls(
            ca,
            stranger_ca,
            # Valid for client authentication too: the container probe presents it under mutual TLS.
            ca.issue("server", server=True, client=True),
            ca.issue("client", server=False, client=True),
            stranger_ca.issue("stranger-client", server=False, client=True),
        )

    def tls_env(self, *, mutual: bool = False) -> dict[str, str]:
        """The server's TLS variables (with the client CA: mutual TLS)."""
        env = {"LLM_TLS_CERT_FILE": str(self.server.cert_file), "LLM_TLS_KEY_FILE": str(self.server.key_file)}
        if mutual:
            env["LLM_TLS_CLIENT_CA_FILE"] = str(self.ca.cert_file)
        return env
