"""Who is calling, and who may call what.

* :class:`Identity` is a caller as its client certificate names it (subject CN and
  subject alternative names, as gRPC's auth context gives them, and the serial).
  Inside a served function, :func:`caller` returns it.
* :class:`Policy` says which identities (or groups of them) may call which functions
  and classes. It is read from TOML: a file given to ``dagen serve --policy``, or the
  ``[tool.dagen.policy]`` table of the pyproject.toml of the served module::

      [groups]
      ocean = ["alice", "bob@uni.example.org"]     # a CN or a SAN entry

      [allow]
      "*" = ["carol"]               # every function
      anomaly = ["ocean", "dave"]   # a function
      Model = ["ocean"]             # every method of a class
      "Model.predict" = ["*"]       # every certificate the CA signed

  Without a policy, every certificate the CA signed may call everything. With one,
  a function no entry names can be called by nobody.
* :class:`DenyList` is ``revoked.txt`` in the certificate folder: certificate serials
  and identities refused on every call, read again whenever the file changes.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import threading
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from .._exceptions import PolicyError

EVERYONE = "*"
DENY_LIST = "revoked.txt"


# -- identities -----------------------------------------------------------------------------------


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


# -- the policy -----------------------------------------------------------------------------------



@dataclass(frozen=True)
class Policy:
    """Which identities may call which functions (by function key, e.g. ``"anomaly"``
    or ``"Model.predict"``). Groups are already expanded to identities here."""

    allow: Mapping[str, frozenset[str]]  # function key, class name or "*" -> names
    source: str = ""  # where it was read from, for messages and logs

    @classmethod
    def from_toml(
        cls,
        table: Mapping[str, Any],
        source: str,
        functions: Iterable[str] | None = None,
    ) -> Policy:
        """Check and expand a policy table; ``functions`` (the keys of the served
        functions) lets a misspelt function or class name stop the server."""
        unknown = set(table) - {"groups", "allow"}
        if unknown:
            raise PolicyError(
                f"{source}: unknown policy key(s) {', '.join(sorted(unknown))}: "
                "a policy has [groups] and [allow]"
            )
        groups = _string_lists(table.get("groups", {}), source, "groups")
        allow = _string_lists(table.get("allow", {}), source, "allow")
        if "allow" not in table:
            raise PolicyError(f"{source}: the policy has no [allow] table, so it allows nothing")
        if functions is not None:
            keys = set(functions)
            known = keys | {k.split(".", 1)[0] for k in keys if "." in k} | {EVERYONE}
            wrong = sorted(set(allow) - known)
            if wrong:
                raise PolicyError(
                    f"{source}: [allow] names {', '.join(map(repr, wrong))}, which the served "
                    f"module does not have (it has: {', '.join(sorted(keys))})"
                )
        expanded = {
            key: frozenset(_expand(members, groups, source, f"allow.{key}"))
            for key, members in allow.items()
        }
        return cls(expanded, source)

    @classmethod
    def load(cls, path: str | Path, functions: Iterable[str] | None = None) -> Policy:
        """A policy file: its top level, or its ``[tool.dagen.policy]`` table."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise PolicyError(f"cannot read the policy {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{path} is not valid TOML: {e}") from None
        table = data.get("tool", {}).get("dagen", {}).get("policy")
        if table is None:
            table = data
        return cls.from_toml(table, str(path), functions)

    def allowed(self, identity: Identity, function: str) -> bool:
        names = set(identity.names)
        if not identity.authenticated or not names:
            return False
        owner = function.split(".", 1)[0] if "." in function else None
        for key in (function, owner, EVERYONE):
            members = self.allow.get(key) if key is not None else None
            if members and (EVERYONE in members or names & members):
                return True
        return False

    def describe(self) -> str:
        return f"{self.source} ({len(self.allow)} rules)"


def find_pyproject_policy(module_file: str | None, functions: Iterable[str]) -> Policy | None:
    """The ``[tool.dagen.policy]`` of the nearest pyproject.toml above a module, if any."""
    if not module_file:
        return None
    for folder in Path(module_file).resolve().parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text())
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise PolicyError(f"cannot read {candidate}: {e}") from None
            table = data.get("tool", {}).get("dagen", {}).get("policy")
            if table is None:
                return None
            return Policy.from_toml(table, f"{candidate} [tool.dagen.policy]", functions)
    return None


def _string_lists(table: Any, source: str, where: str) -> dict[str, list[str]]:
    if not isinstance(table, dict):
        raise PolicyError(f"{source}: [{where}] must be a table of lists of names")
    for key, value in table.items():
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise PolicyError(
                f"{source}: {where}.{key} must be a list of names, like [\"alice\", \"ocean\"]"
            )
    return table


def _expand(
    members: list[str], groups: dict[str, list[str]], source: str, where: str,
    seen: tuple[str, ...] = (),
) -> set[str]:
    names: set[str] = set()
    for member in members:
        if member in groups:
            if member in seen:
                raise PolicyError(f"{source}: group {member!r} contains itself ({where})")
            names |= _expand(groups[member], groups, source, where, (*seen, member))
        else:
            names.add(member)
    return names


# -- the deny-list ----------------------------------------------------------------------------


# How often a server looks whether revoked.txt changed: a revocation refuses calls
# that start this long after it at the latest. Looking on every call cost a tiny call
# ~15 µs of its ~600 (a stat and its result object, run with cold caches).
LOOK_EVERY = 0.1


class DenyList:
    """``revoked.txt``: one entry a line, ``serial:HEX`` for a certificate (as ``dagen
    certs list`` shows serials) or an identity name (CN or SAN); ``#`` starts a comment.
    Read again when the file changes (looked at every ``look_every`` seconds at most);
    a missing file denies nothing."""

    def __init__(self, path: str | Path, look_every: float = LOOK_EVERY) -> None:
        self.path = Path(path)
        self.look_every = look_every
        self._next_look = 0.0  # (monotonic clock)
        self._fspath = str(self.path)  # stat'ed often: no Path conversion each time
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self.serials: frozenset[int] = frozenset()
        self.names: frozenset[str] = frozenset()

    def _refresh(self) -> None:
        try:
            st = os.stat(self._fspath)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            serials: set[int] = set()
            names: set[str] = set()
            if stamp is not None:
                try:
                    text = self.path.read_text()
                except FileNotFoundError:
                    return  # replaced while we looked: the next look reads it
                # any other error (a folder of that name, no permission) raises: a list
                # that cannot be read refuses every call rather than lets anyone in
                for line in text.splitlines():
                    entry = line.split("#", 1)[0].strip()
                    if not entry:
                        continue
                    if entry.lower().startswith("serial:"):
                        try:
                            serials.add(parse_serial(entry[len("serial:"):]))
                        except ValueError:
                            continue  # a typo must not lift the other entries
                    else:
                        names.add(entry)
            self.serials, self.names = frozenset(serials), frozenset(names)
            self._stamp = stamp

    def empty(self) -> bool:
        """Whether the list refuses nobody, as the file said ``look_every`` ago at most.
        A file that cannot be looked at raises on every call until it can."""
        now = time.monotonic()
        if now >= self._next_look:
            self._refresh()
            self._next_look = now + self.look_every
        return not self.serials and not self.names

    def refused(self, identity: Identity, *, refresh: bool = True) -> str | None:
        """Why the deny-list refuses this caller, or None (``refresh=False``: as the
        file was when last read, e.g. by :meth:`empty` a moment ago)."""
        if refresh:
            self._refresh()
        if identity.serial is not None and identity.serial in self.serials:
            return f"the certificate of {identity} (serial {identity.serial_hex}) is revoked"
        for name in identity.names:
            if name in self.names:
                return f"the identity {name!r} is revoked"
        return None


def revoke(folder: str | Path, serial: int, note: str) -> Path:
    """Append a certificate serial to the folder's deny-list."""
    path = Path(folder) / DENY_LIST
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    new = not path.exists()
    with path.open("a") as f:
        if new:
            f.write(
                "# Certificates and identities a dagen server refuses (read again on change).\n"
                "# One entry a line: serial:HEX for a certificate, or an identity name.\n"
            )
        f.write(f"serial:{format_serial(serial)}  # {note}, revoked {stamp}\n")
    return path
