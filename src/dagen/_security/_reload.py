"""Server credentials that follow the certificate folder, and expiry warnings.

gRPC asks :class:`CertificateReloader` for the server's certificate configuration
at every new TLS handshake (``grpc.dynamic_ssl_server_credentials``). It looks at
``ca.crt``, ``server.crt`` and ``server.key`` (a ``stat`` each) and, when one has
changed and the three make a consistent set, hands gRPC the new ones: new
connections use them, connections already open keep theirs and are not dropped.
A set caught half-written (a certificate that does not match its key) is ignored
until it is complete.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import warnings
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .._exceptions import CertificateError, CertificateExpiryWarning
from ._certs import CA_CERT, SERVER_CERT, SERVER_KEY

log = logging.getLogger("dagen.server")

EXPIRY_WARNING_DAYS = 14



def expiry_problem(path: Path, now: dt.datetime | None = None,
                   days: int = EXPIRY_WARNING_DAYS) -> str | None:
    """A sentence about ``path`` when its certificate expires within ``days``, else None."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None  # missing or unreadable: whoever uses it says so
    now = now or dt.datetime.now(dt.UTC)
    left = cert.not_valid_after_utc - now
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    if left <= dt.timedelta(0):
        return f"the certificate {path} expired on {until}"
    if left <= dt.timedelta(days=days):
        return (f"the certificate {path} expires in {_days(left)} ({until})")
    return None


def _days(left: dt.timedelta) -> str:
    if left < dt.timedelta(days=1):
        return f"{left.total_seconds() / 3600:.1f} hours"
    return f"{left.days} days"


def renew_hint(path: Path) -> str:
    return f"renew it with 'dagen certs renew {path.parent} {path.stem}'"


def warn_if_expiring(paths: list[Path], *, server: bool) -> list[str]:
    """Warn about certificates that expire within 14 days: in the server's log, or as
    a :class:`CertificateExpiryWarning` on the client. Returns the messages."""
    messages = []
    for path in paths:
        problem = expiry_problem(path)
        if problem is None:
            continue
        hint = renew_hint(path) if server or path.stem != "ca" else (
            "ask the server's operator for a renewed one"
        )
        message = f"{problem}: {hint}"
        messages.append(message)
        if server:
            log.warning("%s", message)
        else:
            warnings.warn(message, CertificateExpiryWarning, stacklevel=3)
    return messages


class CertificateReloader:
    """The server's certificate configuration, read again whenever its files change."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.paths = [self.folder / n for n in (CA_CERT, SERVER_CERT, SERVER_KEY)]
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self._rejected: tuple[object, ...] | None = None
        self.reloads = 0
        ca, cert, key = (p.read_bytes() for p in self.paths)
        problem = _check_set(ca, cert, key)  # as for a reload: grpc would only say "bind failed"
        if problem is not None:
            raise CertificateError(f"the certificates in {self.folder} cannot be served: {problem}")
        self.initial = self._configuration(ca, cert, key)

    def _stamps(self) -> tuple[object, ...]:
        out: list[object] = []
        for p in self.paths:
            try:
                st = os.stat(p)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    @staticmethod
    def _configuration(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate configuration fetcher: the new configuration, or None
        when nothing (usable) changed. Never raises: gRPC would fail the handshake."""
        try:
            return self._fetch()
        except Exception as e:  # noqa: BLE001 - keep serving with the certificates in use
            log.warning("could not reload the certificates in %s: %s", self.folder, e)
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        stamp = self._stamps()
        if stamp == self._stamp:
            return None
        with self._lock:
            if stamp == self._stamp or stamp == self._rejected:
                return None
            try:
                ca, cert, key = (p.read_bytes() for p in self.paths)
                problem = _check_set(ca, cert, key)
            except OSError as e:
                problem = str(e)
            if problem is not None:
                if stamp != self._rejected:
                    log.warning("not reloading the certificates in %s yet: %s",
                                self.folder, problem)
                self._rejected = stamp
                return None
            self._stamp = stamp
            self.reloads += 1
        log.info("reloaded the certificates in %s (new connections use them)", self.folder)
        warn_if_expiring(self.paths[:2], server=True)
        return self._configuration(ca, cert, key)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=True
        )


def _check_set(ca: bytes, cert: bytes, key: bytes) -> str | None:
    """Why the three files do not make a usable set, or None."""
    try:
        authorities = x509.load_pem_x509_certificates(ca)  # a bundle, while rotating CAs
        server_cert = x509.load_pem_x509_certificate(cert)
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        return f"a file does not parse ({e})"
    if server_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return f"{SERVER_CERT} does not match {SERVER_KEY}"
    for authority in authorities:
        try:
            server_cert.verify_directly_issued_by(authority)
            return None
        except Exception:  # noqa: BLE001, S112 - InvalidSignature, ValueError, TypeError
            continue
    return f"{SERVER_CERT} is not signed by {CA_CERT}"

