"""Who is refused whatever the policy says: :class:`DenyList` is ``revoked.txt`` in
the certificate folder, certificate serials and identities refused on every call,
read again whenever the file changes; :func:`revoke` (``dagen certs revoke``) adds a
certificate's serial to it.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

from ._identity import Identity, format_serial, parse_serial

DENY_LIST = "revoked.txt"


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
