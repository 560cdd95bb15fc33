"""TLS on the node's own listeners: HTTPS/WSS and STOMP over TLS (docs/tls.md).

The event loop does the TLS (uvloop's TLS layer, in C), with
``server.tls.handshake_timeout_s`` as its handshake timeout: a client that
opens a socket and never finishes its handshake is closed then. The listener's
protocol sees a connection once its handshake is done: the connection gate
(transport/limits.py), then the header timeout (HTTP) or the CONNECT timeout
(STOMP) start from there.

A reload (SIGHUP) builds a new context from the files as they are now; the
listening context's SNI callback, which OpenSSL calls on every ClientHello
(with or without a server name), moves each new handshake to the newest
context. Connections already open keep theirs. (``loop.start_tls`` after the
gate, which would count handshaking connections too, loses a ClientHello that
arrives before it under uvloop 0.23.)
"""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

if TYPE_CHECKING:
    from .config import TlsConfig

log = logging.getLogger(__name__)

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class TlsError(OSError):
    """Certificate files that cannot be used, each problem naming its key and file.

    An OSError so that a node whose files went bad between ``check-config`` and
    its start is reported as "cannot start: ..." like a port that is taken."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Encrypted(Exception):
    """Raised from the password callback: a key that needs a passphrase is refused, not prompted for."""


def _no_password() -> bytes:
    raise _Encrypted


def client_auth_of(tls: TlsConfig) -> str:
    """The effective ``client_auth``: ``required`` when a client CA is given and it is not set."""
    if tls.client_auth is not None:
        return tls.client_auth
    return "required" if tls.client_ca else "none"


def _read_certificates(path: str, key: str) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsError([f"{key}: cannot read {path}: {exc.strerror}"]) from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError([f"{key}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"])
    return certs


def build_context(tls: TlsConfig, path: str = "server.tls") -> ssl.SSLContext:
    """A server context from the files as they are now, or a TlsError naming what is wrong."""
    problems: list[str] = []
    assert tls.certificate is not None
    if tls.key is None:
        problems.append(f"{path}.key: required with {path}.certificate (a PEM private key file)")
    for name in ("certificate", "key", "client_ca"):
        file = getattr(tls, name)
        if file is not None and not Path(file).is_file():
            problems.append(f"{path}.{name}: no such file: {file}")
    if problems:
        raise TlsError(problems)
    assert tls.key is not None
    _read_certificates(tls.certificate, f"{path}.certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = VERSIONS[tls.min_version]
    try:
        context.load_cert_chain(tls.certificate, tls.key, password=_no_password)
    except _Encrypted:
        problem = f"{tls.key} is encrypted: give the node a key without a passphrase"
        raise TlsError([f"{path}.key: {problem}"]) from None
    except ssl.SSLError as exc:
        mismatch = "KEY_VALUES_MISMATCH" in str(exc)
        why = "it does not match the certificate" if mismatch else "not a PEM private key"
        problem = f"cannot use {tls.key} with {tls.certificate}: {why} ({exc.reason})"
        raise TlsError([f"{path}.key: {problem}"]) from None
    except OSError as exc:
        raise TlsError([f"{path}.key: cannot read {tls.key}: {exc.strerror}"]) from None
    mode = client_auth_of(tls)
    if tls.client_ca is not None:
        _read_certificates(tls.client_ca, f"{path}.client_ca")
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsError([f"{path}.client_ca: cannot load {tls.client_ca}: {exc}"]) from None
    context.verify_mode = CLIENT_AUTH[mode]
    return context


def describe(certificate: str) -> str:
    """Subject, issuer and validity of the first certificate of a file, for the log."""
    cert = _read_certificates(certificate, "certificate")[0]
    return (
        f"{cert.subject.rfc4514_string()} (issuer {cert.issuer.rfc4514_string()}, "
        f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
    )


def expiry_warning(certificate: str, now: datetime.datetime | None = None) -> str | None:
    """A warning when the certificate has expired or is not valid yet."""
    cert = _read_certificates(certificate, "certificate")[0]
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        return f"server.tls.certificate: {certificate} expired on {cert.not_valid_after_utc:%Y-%m-%d} UTC"
    if cert.not_valid_before_utc > now:
        start = cert.not_valid_before_utc
        return f"server.tls.certificate: {certificate} is not valid before {start:%Y-%m-%d} UTC"
    return None


class ServerTls:
    """The context new handshakes use; :meth:`reload` swaps in one built from the files again."""

    def __init__(self, tls: TlsConfig) -> None:
        self.config = tls
        self.handshake_timeout_s = tls.handshake_timeout_s
        self.context = self.listening = build_context(tls)
        self.listening.sni_callback = self._use_current
        assert tls.certificate is not None
        # An expired certificate is among config.startup_warnings, logged at start.
        log.info("TLS certificate: %s", describe(tls.certificate))

    def _use_current(self, connection: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        """Each ClientHello: serve the newest certificate (OpenSSL keeps the verify mode of the first)."""
        if self.context is not self.listening:
            connection.context = self.context

    def server_kwargs(self) -> dict[str, Any]:
        """The TLS arguments of ``loop.create_server``."""
        return {
            "ssl": self.listening,
            "ssl_handshake_timeout": self.handshake_timeout_s,
            # close_notify exchange at the end: a peer that never answers it is not waited for longer
            "ssl_shutdown_timeout": self.handshake_timeout_s,
        }

    def reload(self) -> bool:
        """Read the files again; on any problem keep the current context and log why."""
        assert self.config.certificate is not None
        try:
            context = build_context(self.config)
            summary = describe(self.config.certificate)
            warning = expiry_warning(self.config.certificate)
        except TlsError as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        self.context = context
        if warning is not None:
            log.warning("%s", warning)
        log.info("TLS certificate reloaded: %s", summary)
        return True
