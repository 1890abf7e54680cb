"""Certificates for mutual TLS, made with the ``cryptography`` library.

One folder holds everything, under fixed names that ``dagen serve`` and the client
look for::

    ca.crt, ca.key              the certificate authority (keep ca.key private)
    server.crt, server.key      the server, with its host names and IPs
    <identity>.crt / .key       one pair per client; the identity is the subject CN

Private keys are written with mode 0600. Keys are ECDSA P-256: small, fast, and
understood by every TLS stack gRPC uses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._exceptions import CertificateError

DEFAULT_DAYS = 365
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
_IDENTITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")



def _write(path: Path, data: bytes, private: bool, force: bool) -> None:
    if path.exists() and not force:
        raise CertificateError(f"{path} exists already (use --force to replace it)")
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (the file is what protects it: mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The certificate and key of the folder's CA, which sign the others."""
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    for path in (cert_path, key_path):
        if not path.is_file():
            raise CertificateError(f"{path} is missing: run 'dagen certs init {folder}' first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def certificate_builder(
    subject: x509.Name, issuer: x509.Name, public_key: object, days: int
) -> x509.CertificateBuilder:
    """A certificate valid from 5 minutes ago for ``days``, with a random serial:
    add its extensions and sign it."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=days))
    )


def init_ca(
    folder: str | Path, *, name: str = "dagen CA", days: int = DEFAULT_DAYS, force: bool = False
) -> Path:
    """Create a certificate authority in ``folder``; return the certificate's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        certificate_builder(_name(name), _name(name), key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / CA_KEY, private_key_pem(key), private=True, force=force)
    _write(
        folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False, force=True
    )
    return folder / CA_CERT


def _issue(
    folder: Path,
    stem: str,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
    force: bool,
) -> Path:
    ca_cert, ca_key = load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        certificate_builder(_name(common_name), ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(folder / f"{stem}.key", private_key_pem(key), private=True, force=force)
    _write(
        folder / f"{stem}.crt",
        cert.public_bytes(serialization.Encoding.PEM),
        private=False,
        force=True,
    )
    return folder / f"{stem}.crt"


def issue_server(
    folder: str | Path,
    *,
    hosts: list[str],
    ips: list[str],
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> Path:
    """A server certificate valid for the given host names and IP addresses."""
    if not hosts and not ips:
        raise CertificateError("give at least one --host or --ip the server is reached by")
    sans: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    for ip in ips:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise CertificateError(f"{ip!r} is not an IP address") from None
    return _issue(
        Path(folder),
        "server",
        (hosts or ips)[0],
        sans,
        ExtendedKeyUsageOID.SERVER_AUTH,
        days,
        force,
    )


def issue_client(
    folder: str | Path, identity: str, *, days: int = DEFAULT_DAYS, force: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> Path:
    """A client certificate whose subject CN is ``identity``, with alternative names
    ``sans`` (e.g. an e-mail address) that a server's policy may name too."""
    if not _IDENTITY_RE.fullmatch(identity) or identity in ("ca", "server"):
        raise CertificateError(
            f"{identity!r} is not a usable identity: use letters, digits and _.@- "
            "(and not 'ca' or 'server')"
        )
    return _issue(
        Path(folder), identity, identity, list(sans or []), ExtendedKeyUsageOID.CLIENT_AUTH,
        days, force,
    )
