"""Who is calling: the identity a client certificate gives its caller.

:class:`Identity` is a caller as its client certificate names it (subject CN and
subject alternative names, as gRPC's auth context gives them, and the serial).
Inside a served function, :func:`caller` returns it; the server sets it for each call
(:func:`set_caller`, see :mod:`._guard`). Serial numbers are written as ``dagen
certs`` shows them (:func:`format_serial`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509


@dataclass(frozen=True)
class Identity:
    """A caller, as its client certificate names it.

    ``name`` is the certificate's subject common name (the identity ``dagen certs
    client`` issued it for); ``sans`` its subject alternative names; ``serial`` its
    serial number. A caller over plain text has no certificate: ``name`` is ``""``
    and ``authenticated`` is False. ``peer`` is the address it called from.
    """

    name: str
    sans: tuple[str, ...] = ()
    subject: str = ""
    serial: int | None = None
    peer: str = ""
    authenticated: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a policy can match: the common name, then the SAN entries."""
        return tuple(n for n in (self.name, *self.sans) if n)

    @property
    def serial_hex(self) -> str:
        return format_serial(self.serial) if self.serial is not None else ""

    def __str__(self) -> str:
        return self.name if self.authenticated and self.name else f"anonymous ({self.peer})"


class LazyIdentity:
    """The caller of one rpc, identified when first asked for. gRPC answers every
    question about the caller's certificate by building the whole TLS auth context
    (its PEM included), a good part of a tiny call's time: a server without a policy
    or a deny-list asks only when a function calls :func:`caller` or an identity's
    call limit is in reach."""

    __slots__ = ("_context", "_identity")

    def __init__(self, context: Any) -> None:  # a grpc.ServicerContext
        self._context = context
        self._identity: Identity | None = None

    def get(self) -> Identity:
        identity = self._identity
        if identity is None:  # two threads may both get here: both compute the same
            context = self._context
            identity = identity_from_auth(context.auth_context() or {}, context.peer())
            self._identity = identity
        return identity

    def name(self) -> str:
        """What call limits count by: the common name, or "anonymous"."""
        return self.get().name or "anonymous"


_caller: contextvars.ContextVar[Identity | LazyIdentity | None] = contextvars.ContextVar(
    "dagen_caller", default=None
)


def caller() -> Identity | None:
    """The identity of the caller of the remote call being served, or None outside one.

    Inside a function that ``dagen serve`` runs, this is the client certificate the
    caller presented: ``dagen.caller().name`` is its subject CN (the identity that
    ``dagen certs client`` issued it for), ``.sans`` its alternative names. Use it to
    log, or to decide what to return.
    """
    value = _caller.get()
    return value.get() if isinstance(value, LazyIdentity) else value


# Set and reset the caller of the call this thread serves: each one call into C.
set_caller = _caller.set
reset_caller = _caller.reset


_serials: dict[bytes, int] = {}
_serials_lock = threading.Lock()


def _serial_of(pem: bytes) -> int | None:
    """The serial number of a PEM certificate (remembered: parsing costs ~50 µs)."""
    with _serials_lock:
        serial = _serials.get(pem)
    if serial is None:
        try:
            serial = x509.load_pem_x509_certificate(pem).serial_number
        except ValueError:
            return None
        with _serials_lock:
            if len(_serials) >= 4096:
                _serials.clear()
            _serials[pem] = serial
    return serial


def identity_from_auth(auth: Mapping[str, Iterable[bytes]], peer: str) -> Identity:
    """The identity gRPC's auth context (``context.auth_context()``) describes."""

    def values(key: str) -> tuple[str, ...]:
        return tuple(v.decode(errors="replace") for v in auth.get(key) or ())

    common = values("x509_common_name")
    pem = tuple(auth.get("x509_pem_cert") or ())
    if not common and not pem:
        return Identity("", peer=peer, authenticated=False)
    subject = values("x509_subject")
    return Identity(
        name=common[0] if common else "",
        sans=values("x509_subject_alternative_name"),
        subject=subject[0] if subject else "",
        serial=_serial_of(pem[0]) if pem else None,
        peer=peer,
    )


def format_serial(serial: int) -> str:
    """A serial number as ``dagen certs`` shows it: colon-separated hex bytes."""
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return ":".join(f"{b:02x}" for b in raw)


def parse_serial(text: str) -> int:
    """A serial written as colon-separated hex bytes, plain hex or ``0x...``."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned:
        raise ValueError("empty serial number")
    return int(cleaned, 16)
