"""Looking after a certificate folder: list, show, renew and revoke certificates.

``dagen certs list DIR`` and ``dagen certs show FILE`` read certificates;
``dagen certs renew DIR NAME`` issues a new certificate for the same subject and
names, signed by the folder's CA (keeping the key unless ``--new-key``), and writes it
in place atomically, so that a running server picks it up at its next handshake
(see :mod:`dagen._security._reload`); ``dagen certs revoke DIR NAME`` adds the certificate's
serial to ``revoked.txt``, which a running server honours from its next look at it
(every 0.1 s).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._exceptions import CertificateError
from ._certs import CA_CERT, certificate_builder, load_ca, private_key_pem
from ._denylist import DENY_LIST, DenyList
from ._identity import Identity, format_serial
from ._reload import EXPIRY_WARNING_DAYS


@dataclass(frozen=True)
class CertInfo:
    path: Path
    subject: str
    common_name: str
    sans: tuple[str, ...]
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    kind: str  # "CA", "server", "client" or "other"
    key: str
    fingerprint: str

    def status(self, now: dt.datetime | None = None) -> str:
        now = now or dt.datetime.now(dt.UTC)
        left = self.not_after - now
        if left <= dt.timedelta(0):
            return "EXPIRED"
        if self.not_before > now:
            return "not yet valid"
        if left <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
            days = left.days
            return f"expires in {days} day{'s' if days != 1 else ''}" if days else (
                f"expires in {left.total_seconds() / 3600:.0f} hours"
            )
        return "valid"


def _san_strings(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        else:
            out.append(str(name.value))
    return tuple(out)


def _kind(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "CA"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return "other"
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usages:
        return "client"
    return "other"


def _key_text(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    size = getattr(key, "key_size", None)
    return f"{type(key).__name__.removesuffix('PublicKey').lstrip('_')} {size or ''}".strip()


def describe(path: str | Path) -> CertInfo:
    path = Path(path)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as e:
        raise CertificateError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(
        path=path,
        subject=cert.subject.rfc4514_string(),
        common_name=str(cns[0].value) if cns else "",
        sans=_san_strings(cert),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        kind=_kind(cert),
        key=_key_text(cert),
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(":"),
    )


def list_folder(folder: str | Path) -> list[tuple[CertInfo, str]]:
    """Every certificate of a folder with its status (revoked, expired, expiring...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CertificateError(f"{folder} is not a folder")
    deny = DenyList(folder / DENY_LIST)
    out = []
    for path in sorted(folder.glob("*.crt")):
        try:
            info = describe(path)
        except CertificateError as e:
            out.append((CertInfo(path, "", "", (), "", 0, dt.datetime.min.replace(tzinfo=dt.UTC),
                                 dt.datetime.min.replace(tzinfo=dt.UTC), "?", "", ""), str(e)))
            continue
        status = info.status()
        identity = Identity(info.common_name, serial=info.serial)
        if info.kind == "client" and deny.refused(identity):
            status = "REVOKED"
        out.append((info, status))
    return out


def show_lines(info: CertInfo) -> list[str]:
    def when(t: dt.datetime) -> str:
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")

    return [
        f"file:        {info.path}",
        f"kind:        {info.kind}",
        f"subject:     {info.subject}",
        f"names (SAN): {', '.join(info.sans) if info.sans else '(none)'}",
        f"issuer:      {info.issuer}",
        f"serial:      {format_serial(info.serial)}",
        f"valid from:  {when(info.not_before)}",
        f"expires:     {when(info.not_after)}  ({info.status()})",
        f"key:         {info.key}",
        f"sha256:      {info.fingerprint}",
    ]


def _atomic_write(path: Path, data: bytes, private: bool) -> None:
    """Replace ``path`` at once: a server that reads it sees the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def renew(folder: str | Path, name: str, *, days: int, new_key: bool = False) -> Path:
    """Issue ``NAME.crt`` again (``ca`` for the CA itself) with the same subject, names
    and usages, valid for ``days`` from now; with ``new_key``, for a new key pair."""
    folder = Path(folder)
    stem = Path(name).name.removesuffix(".crt")
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    if not cert_path.is_file():
        raise CertificateError(f"{cert_path} is missing: nothing to renew")
    old = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca_cert, ca_key = load_ca(folder)
    is_ca = stem == Path(CA_CERT).stem
    if is_ca:
        if new_key:
            raise CertificateError(
                "a CA keeps its key when renewed (the certificates it signed stay valid); "
                "for a new CA, run 'dagen certs init' in another folder"
            )
        key = ca_key
    elif new_key:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        if not key_path.is_file():
            raise CertificateError(f"{key_path} is missing: renew with --new-key")
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        key = loaded
    if not is_ca and old.issuer != ca_cert.subject:
        raise CertificateError(f"{cert_path} was not issued by the CA of {folder}")
    builder = certificate_builder(old.subject, old.subject if is_ca else ca_cert.subject,
                                  key.public_key(), days)
    for ext in old.extensions:
        if isinstance(ext.value, x509.AuthorityKeyIdentifier):
            value: x509.ExtensionType = x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key())
        elif isinstance(ext.value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        else:
            value = ext.value
        builder = builder.add_extension(value, critical=ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    if new_key:
        _atomic_write(key_path, private_key_pem(key), private=True)
    _atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert_path


def serial_of(folder: str | Path, name: str) -> tuple[int, str]:
    """The serial of ``NAME.crt`` (or of a certificate file) and its common name."""
    path = Path(name) if name.endswith(".crt") else Path(folder) / f"{name}.crt"
    info = describe(path)
    if info.kind == "CA":
        raise CertificateError("the CA cannot be revoked: make a new one with 'dagen certs init'")
    return info.serial, info.common_name


def parse_san(text: str) -> x509.GeneralName:
    """``email:a@b``, ``dns:host``, ``uri:x``, ``ip:1.2.3.4``; bare: email if it has @."""
    kind, sep, value = text.partition(":")
    if not sep or kind.lower() not in ("email", "dns", "uri", "ip"):
        kind, value = ("email" if "@" in text else "dns"), text
    kind = kind.lower()
    if not value:
        raise CertificateError(f"empty alternative name {text!r}")
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        raise CertificateError(f"{value!r} is not an IP address") from None
