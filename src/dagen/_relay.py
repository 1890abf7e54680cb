"""The relay (``dagen relay``): servers with no inbound port, reached by name.

A server on a login node dials out to the relay over SSH (see :mod:`dagen._tunnel`);
visitors connect to the relay's one open port with TLS. The relay has two listeners:

- **tunnels** (an asyncssh SSH server): a server authenticates with its SSH public key
  and asks for a remote forward (``tcpip-forward``) whose listen host is the name it
  publishes, the host name in its dagen certificate. ``relay-services.toml`` says
  which key may publish which names; unknown keys and names not allowed for a key are
  refused. The relay opens no port for a forward: the name goes into its routing
  table, and a visitor's connection becomes a ``forwarded-tcpip`` channel on that
  server's SSH connection (which asyncssh's client side hands to the server's 0600
  Unix socket).
- **visitors** (TCP): the relay reads the TLS ClientHello up to its server name (SNI)
  without terminating TLS, and pipes the raw bytes, the ClientHello first, to the
  tunnel published under that name. TLS runs end to end between visitor and server:
  the relay holds no dagen key and sees no plaintext, and a byte it changed would fail
  the TLS record's authentication. A name with no tunnel gets the TLS alert
  ``unrecognized_name`` at once (the relay cannot speak TLS for the name, but an alert
  before the handshake is plain text), which the client reports as "no server is
  connected under that name".

Keepalives: both ends send an SSH keepalive after ``KEEPALIVE_INTERVAL`` s without
traffic and drop the link after ``KEEPALIVE_COUNT_MAX`` unanswered ones, so a dead link
is detected within (``KEEPALIVE_COUNT_MAX`` + 1) x ``KEEPALIVE_INTERVAL`` = 60 s; the
relay then forgets the name, and the server reconnects (with backoff) and publishes it
again.

asyncssh is an optional dependency (``pip install 'dagen-grpc[relay]'``); the plain server
and client never import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ._exceptions import RelayError

log = logging.getLogger("dagen.relay")

KEEPALIVE_INTERVAL = 15.0  # seconds without traffic before a keepalive
KEEPALIVE_COUNT_MAX = 3  # unanswered keepalives before the link is dropped: 60 s in all
# AES-GCM first: with AES-NI it is several times faster than chacha20 (asyncssh's first
# choice); TLS inside is not compressible, so no SSH compression.
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                   "chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr"]
COMPRESSION_ALGS = ["none"]
# SSH flow control: a channel sends at most this much before the peer acknowledges it.
# asyncssh's default (2 MiB) limits one call's throughput over a link with latency.
WINDOW = 16 << 20
READ_BYTES = 1 << 18
HELLO_TIMEOUT = 10.0  # seconds a visitor has to send its ClientHello
MAX_HELLO_BYTES = 1 << 16
# TLS alert record: handshake not started (plain text), TLS 1.2 record version, 2 bytes:
# level fatal (2), description unrecognized_name (112).
UNRECOGNIZED_NAME_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112])
_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
SERVICES_EXAMPLE = """\
[services."ocean.relay.example.org"]
keys = ["ssh-ed25519 AAAA... ocean-tools@login1"]"""


def asyncssh_module() -> ModuleType:
    """asyncssh, or a clear error naming the extra that installs it."""
    try:
        with warnings.catch_warnings():  # its DSA support warns on import
            warnings.simplefilter("ignore")
            import asyncssh
        if not logging.getLogger("asyncssh").level:  # it logs every connection at INFO
            logging.getLogger("asyncssh").setLevel(logging.WARNING)
    except ImportError:
        raise RelayError(
            "the relay needs asyncssh, on the relay and on the server: "
            "pip install 'dagen-grpc[relay]' (or pip install asyncssh)"
        ) from None
    return asyncssh


# -- which key may publish which names ------------------------------------------------------


@dataclass(frozen=True)
class Services:
    """relay-services.toml: for each name, the SSH public keys (their wire blobs) that
    may publish it."""

    keys: Mapping[str, frozenset[bytes]]

    def known_key(self, key: bytes) -> bool:
        return any(key in keys for keys in self.keys.values())

    def may_publish(self, key: bytes, name: str) -> bool:
        return key in self.keys.get(name, frozenset())


def load_services(path: str | os.PathLike[str]) -> Services:
    """Read and check a services file; RelayError names what is wrong and where."""
    asyncssh = asyncssh_module()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise RelayError(f"cannot read the services file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RelayError(f"{path} is not valid TOML: {e}") from None
    services = data.get("services")
    extra = set(data) - {"services"}
    if extra or not isinstance(services, dict) or not services:
        what = f"unknown table(s) {sorted(extra)}" if extra else "no [services.\"NAME\"] table"
        raise RelayError(f"{path}: {what}; it should look like:\n{SERVICES_EXAMPLE}")
    out: dict[str, frozenset[bytes]] = {}
    for name, entry in services.items():
        where = f'{path}: [services."{name}"]'
        if not _NAME.match(name):
            raise RelayError(f"{where}: not a host name in lower case (the DNS name in the "
                             "server's certificate, e.g. ocean.relay.example.org)")
        if not isinstance(entry, dict) or set(entry) != {"keys"}:
            raise RelayError(f"{where}: needs exactly one entry, keys = [\"ssh-ed25519 ...\"]")
        keys = entry["keys"]
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise RelayError(f"{where}: keys must be a non-empty list of public keys "
                             "(lines of the servers' .pub files)")
        blobs = set()
        for i, text in enumerate(keys):
            try:
                blobs.add(asyncssh.import_public_key(text.strip()).public_data)
            except (asyncssh.KeyImportError, ValueError) as e:
                raise RelayError(f"{where}: keys[{i}] is not an SSH public key ({e})") from None
        out[name] = frozenset(blobs)
    return Services(out)


class _ServicesFile:
    """The services file, read again when it changes (checked at each SSH login)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._stat()
        self.services = load_services(path)

    def _stat(self) -> tuple[int, int] | None:
        with contextlib.suppress(OSError):
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        return None

    def current(self) -> Services:
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.services = load_services(self.path)
                log.info("read %s again: %d names", self.path, len(self.services.keys))
            except RelayError as e:
                log.error("%s; keeping the previous services", e)
        return self.services


# -- the relay's SSH host key ---------------------------------------------------------------


def load_or_create_host_key(path: str | os.PathLike[str]) -> Any:
    """The relay's SSH host key from ``path``; a new ed25519 key (mode 0600) when the
    file does not exist."""
    asyncssh = asyncssh_module()
    path = Path(path)
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="dagen relay host key")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
        log.info("created the relay's host key %s", path)
        return key
    try:
        return asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError, ValueError) as e:
        raise RelayError(f"cannot read the relay's host key {path}: {e}") from None


def known_hosts_line(key: Any, host: str, port: int) -> str:
    """The known-hosts line servers put in their relay_known_hosts."""
    where = host if port == 22 else f"[{host}]:{port}"
    return f"{where} {key.export_public_key('openssh').decode().split(' dagen')[0].strip()}"


# -- the visitor's ClientHello ------------------------------------------------------------


class NotTLS(Exception):
    """What a visitor sent is not the start of a TLS handshake with a server name."""


async def read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, str]:
    """The bytes of the visitor's TLS records up to the end of its ClientHello (to be
    forwarded unchanged), and the server name it asks for."""
    raw = bytearray()
    handshake = bytearray()
    try:
        while True:
            header = await reader.readexactly(5)
            raw += header
            if header[0] != 22 or header[1] != 3:
                raise NotTLS("not a TLS handshake (a plain-text client?)")
            length = int.from_bytes(header[3:5], "big")
            if not 0 < length <= 1 << 14:
                raise NotTLS(f"a TLS record of {length} bytes")
            body = await reader.readexactly(length)
            raw += body
            handshake += body
            if len(handshake) >= 4:
                if handshake[0] != 1:
                    raise NotTLS("the first TLS handshake message is not a ClientHello")
                total = 4 + int.from_bytes(handshake[1:4], "big")
                if total > MAX_HELLO_BYTES:
                    raise NotTLS(f"a ClientHello of {total} bytes")
                if len(handshake) >= total:
                    return bytes(raw), server_name(bytes(handshake[4:total]))
    except asyncio.IncompleteReadError:
        raise NotTLS("the connection closed before the ClientHello ended") from None


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise NotTLS("a malformed ClientHello")
        self.at += n
        return self.data[self.at - n:self.at]

    def vector(self, size: int) -> _Cursor:
        """The next length-prefixed field (a length of ``size`` bytes)."""
        return _Cursor(self.take(int.from_bytes(self.take(size), "big")))

    def more(self) -> bool:
        return self.at < len(self.data)


def server_name(hello: bytes) -> str:
    """The host name of the server_name extension of a ClientHello's body."""
    body = _Cursor(hello)
    body.take(2 + 32)  # client_version, random
    for size in (1, 2, 1):  # session id, cipher suites, compression methods
        body.vector(size)
    extensions = body.vector(2) if body.more() else _Cursor(b"")
    while extensions.more():
        kind = int.from_bytes(extensions.take(2), "big")
        data = extensions.vector(2)
        if kind != 0:  # not server_name
            continue
        names = data.vector(2)
        while names.more():
            name_type = names.take(1)[0]
            name = names.vector(2).data
            if name_type == 0:  # host_name
                try:
                    return name.decode("ascii").lower().rstrip(".")
                except UnicodeDecodeError:
                    raise NotTLS("a server name that is not ASCII") from None
    raise NotTLS("the ClientHello has no server name (SNI)")


# -- the relay ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Route:
    """A name published by a server: new visitors to it become channels on ``conn``."""

    name: str
    conn: Any  # asyncssh.SSHServerConnection
    port: int
    key: bytes  # the public key that published it


class Relay:
    """Route visitors' TLS connections by server name to the tunnels servers publish.

    ``await start()`` binds both listeners (port 0 picks a free one; see
    ``visitor_port`` and ``tunnel_port``), ``await close()`` stops.
    """

    def __init__(self, services: str | os.PathLike[str], host_key: str | os.PathLike[str], *,
                 listen: tuple[str, int] = ("127.0.0.1", 0),
                 tunnels: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.asyncssh = asyncssh_module()
        self.services = _ServicesFile(Path(services))
        self.host_key = load_or_create_host_key(host_key)
        self.listen = listen
        self.tunnels = tunnels
        self.routes: dict[str, _Route] = {}
        self._ssh: Any = None
        self._visitors: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.visitor_port = 0
        self.tunnel_port = 0

    async def start(self) -> None:
        asyncssh = self.asyncssh
        relay = self

        class TunnelServer(asyncssh.SSHServer):  # type: ignore[misc, name-defined]
            """One server's SSH connection."""

            def __init__(self) -> None:
                self.conn: Any = None
                self.key: Any = None

            def connection_made(self, conn: Any) -> None:
                self.conn = conn

            def connection_lost(self, exc: Exception | None) -> None:
                relay._forget(self.conn)

            def begin_auth(self, username: str) -> bool:
                return True

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: Any) -> bool:
                if relay.services.current().known_key(key.public_data):
                    self.key = key
                    return True
                log.warning("refused SSH key %s from %s: no name in %s lists it",
                            key.get_fingerprint(), _peer(self.conn), relay.services.path)
                return False

            def server_requested(self, listen_host: str, listen_port: int) -> Any:
                return relay._publish(self.conn, self.key, listen_host)

        self._ssh = await asyncssh.listen(
            self.tunnels[0], self.tunnels[1], server_factory=TunnelServer,
            server_host_keys=[self.host_key], config=None,
            keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT_MAX,
            encryption_algs=ENCRYPTION_ALGS, compression_algs=COMPRESSION_ALGS,
            password_auth=False, kbdint_auth=False, allow_pty=False,
            agent_forwarding=False, x11_forwarding=False,
        )
        self.tunnel_port = self._ssh.get_port()
        self._visitors = await asyncio.start_server(self._visit, self.listen[0], self.listen[1],
                                                    limit=READ_BYTES)
        self.visitor_port = self._visitors.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._visitors is not None:
            self._visitors.close()
        if self._ssh is not None:
            self._ssh.close()
            await self._ssh.wait_closed()
        for task in list(self._pipes):
            task.cancel()
        self.routes.clear()

    # -- tunnels --

    def _publish(self, conn: Any, key: Any, name: str) -> Any:
        fingerprint = key.get_fingerprint() if key is not None else "?"
        if key is None or not self.services.current().may_publish(key.public_data, name):
            log.warning("refused to publish %r for key %s from %s: %s does not allow it",
                        name, fingerprint, _peer(conn), self.services.path)
            return False
        old = self.routes.get(name)
        route = _Route(name, conn, self.visitor_port, key.public_data)
        self.routes[name] = route  # the newest wins: the old link may be dead, not yet detected
        log.info("published %r by key %s from %s%s", name, fingerprint, _peer(conn),
                 " (replacing an older tunnel)" if old is not None else "")
        return _NameListener(self, route)

    def _unpublish(self, route: _Route) -> None:
        if self.routes.get(route.name) is route:
            del self.routes[route.name]
            log.info("%r is no longer published", route.name)

    def _forget(self, conn: Any) -> None:
        for route in [r for r in self.routes.values() if r.conn is conn]:
            self._unpublish(route)

    # -- visitors --

    async def _visit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            try:
                hello, name = await asyncio.wait_for(read_client_hello(reader), HELLO_TIMEOUT)
            except (NotTLS, TimeoutError) as e:
                log.info("visitor %s: %s; closed", _addr(peer), e or "no ClientHello in time")
                return
            route = self.routes.get(name)
            services = self.services.current()
            if route is not None and not services.may_publish(route.key, name):
                # The services file changed: end that server's link (it reconnects, and
                # is refused until the file allows it again).
                log.warning("%r: the key that published it may no longer; closing its tunnel",
                            name)
                self._unpublish(route)
                route.conn.close()
                route = None
            if route is None:
                why = ("no server is connected under it"
                       if name in services.keys else "no server may publish it")
                log.info("visitor %s asked for %r: %s; sent unrecognized_name", _addr(peer),
                         name, why)
                writer.write(UNRECOGNIZED_NAME_ALERT)
                await writer.drain()
                return
            try:
                chan_reader, chan_writer = await route.conn.open_connection(
                    name, route.port, str(peer[0]), int(peer[1]), window=WINDOW)
            except (self.asyncssh.Error, OSError) as e:
                log.warning("visitor %s asked for %r: its tunnel refused a channel (%s)",
                            _addr(peer), name, e)
                writer.write(UNRECOGNIZED_NAME_ALERT)
                await writer.drain()
                return
            chan_writer.write(hello)
            await _splice((reader, writer), (chan_reader, chan_writer))
        except (ConnectionError, OSError):
            pass
        finally:
            self._pipes.discard(task)
            writer.close()


class _NameListener:
    """What ``server_requested`` returns for a published name: no socket, a route.
    (asyncssh asks a listener only for its port, and closes it when the forward is
    cancelled or the connection ends.)"""

    def __init__(self, relay: Relay, route: _Route) -> None:
        self.relay = relay
        self.route = route

    def get_port(self) -> int:
        return self.route.port

    def close(self) -> None:
        self.relay._unpublish(self.route)

    async def wait_closed(self) -> None:
        return None


async def _splice(a: tuple[Any, Any], b: tuple[Any, Any]) -> None:
    """Copy bytes both ways until both directions have ended; when one fails, close
    both connections (which ends the other direction too)."""

    async def copy(reader: Any, writer: Any) -> None:
        try:
            while data := await reader.read(READ_BYTES):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except Exception:
            a[1].close()
            b[1].close()

    await asyncio.gather(copy(a[0], b[1]), copy(b[0], a[1]))
    a[1].close()
    b[1].close()


def _addr(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


def _peer(conn: Any) -> str:
    return _addr(conn.get_extra_info("peername")) if conn is not None else "?"

