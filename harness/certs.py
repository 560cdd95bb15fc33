"""A throwaway certificate authority for tests and benchmarks of TLS listeners, made with ``cryptography``.

``Pki(directory)`` writes a CA, a server certificate for 127.0.0.1 and
localhost, and a client certificate, all as PEM files; :meth:`Pki.server` issues
more (a renewed server certificate for a reload). ECDSA P-256 keys: quick to make.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass
class Issued:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path
    serial: int


class Pki:
    """A CA and what it issued, under ``directory``."""

    def __init__(self, directory: Path, ca_name: str = "stompgate test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name(ca_name))
            .issuer_name(_name(ca_name))
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()), critical=False
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = directory / f"{ca_name.replace(' ', '-')}.pem"
        self.ca.write_bytes(self._ca_cert.public_bytes(serialization.Encoding.PEM))
        self.server_pair = self.server("server")
        self.client_pair = self.client("client", "alice")

    def _issue(
        self, name: str, common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName],
        valid: tuple[datetime.datetime, datetime.datetime] | None = None,
    ) -> Issued:  # fmt: skip
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        not_before, not_after = valid or (now - _DAY, now + 30 * _DAY)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.crt", self.directory / f"{name}.key", cert.serial_number)
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued

    def server(
        self, name: str, common_name: str = "localhost",
        valid: tuple[datetime.datetime, datetime.datetime] | None = None,
    ) -> Issued:  # fmt: skip
        """A server certificate for localhost and 127.0.0.1."""
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        return self._issue(name, common_name, ExtendedKeyUsageOID.SERVER_AUTH, sans, valid)

    def client(self, name: str, common_name: str) -> Issued:
        return self._issue(name, common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        """A client context that trusts this CA (and presents the client certificate if asked)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            context.load_cert_chain(self.client_pair.cert, self.client_pair.key)
        return context

    def server_config(self, issued: Issued | None = None) -> dict[str, str]:
        """The ``server.tls`` section for a node serving ``issued`` (the first server certificate)."""
        issued = issued or self.server_pair
        return {"certificate": str(issued.cert), "key": str(issued.key)}
