"""The server's side of a relay (``dagen serve --relay ssh://USER@HOST:PORT``).

The server listens on no TCP port, only on its 0600 Unix socket; a :class:`Tunnel`
dials out to the relay over SSH (asyncssh's client), authenticates with the server's
SSH key, pins the relay's host key (``relay_known_hosts`` beside the certificates;
a relay whose key is not there is refused), and asks for a remote forward whose
listen host is the name it publishes: the host name of its certificate. Each
visitor's connection then arrives as a ``forwarded-tcpip`` channel that asyncssh
hands to the Unix socket; TLS runs end to end between visitor and server
(see :mod:`dagen._relay`).

It stays up by itself: keepalives detect a dead link within 60 s (see
``dagen._relay.KEEPALIVE_INTERVAL``; a relay that stops or restarts ends the link at
once), and the tunnel connects again, with backoff from ``INITIAL_BACKOFF`` doubling
up to ``MAX_BACKOFF`` s, and publishes its name again. So after a relay restart the
server is reachable again at most ``MAX_BACKOFF`` s (plus an SSH login, ~0.1 s) after
the relay is back. Calls in flight when the link drops end with ServerUnavailable
on the caller's side (their connection closes).

The tunnel runs in its own thread with its own event loop: ``start()`` returns once
the name is published, or once the relay could not be reached (then it keeps trying
in the background); it raises :class:`~dagen.RelayError` when the relay refused the
tunnel (host key, SSH key or name), which retrying would not fix.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import shutil
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ._exceptions import RelayError
from ._relay import (
    COMPRESSION_ALGS,
    ENCRYPTION_ALGS,
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    WINDOW,
    asyncssh_module,
)
from ._security._certs import SERVER_CERT

log = logging.getLogger("dagen.tunnel")

RELAY_KNOWN_HOSTS = "relay_known_hosts"  # in the certificate folder, by default
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 10.0
CONNECT_TIMEOUT = 10.0
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class RelayAddress:
    user: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


def parse_relay(url: str) -> RelayAddress:
    """``ssh://USER@HOST:PORT`` (USER defaults to the local user, PORT to 22)."""
    bad = RelayError(f"--relay {url!r}: expected ssh://USER@HOST:PORT, "
                     "e.g. ssh://dagen@relay.example.org:2222")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.password:
        raise bad
    try:
        port = parts.port or 22
    except ValueError:
        raise bad from None
    return RelayAddress(parts.username or getpass.getuser(), parts.hostname, port)


def certificate_names(certs: str | os.PathLike[str]) -> list[str]:
    """The DNS names of the server certificate in ``certs``."""
    from cryptography import x509

    path = Path(certs) / SERVER_CERT
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as e:
        raise RelayError(f"cannot read the DNS names of {path}: {e}") from None
    return [name.lower() for name in sans.get_values_for_type(x509.DNSName)]


def published_name(certs: str | os.PathLike[str], name: str | None = None) -> str:
    """The name to publish: ``name`` if the server certificate has it, else its first
    DNS name. Visitors check the certificate against the name they ask the relay for,
    so a name the certificate does not have could never be called."""
    names = certificate_names(certs)
    hint = f"make one with 'dagen certs server {certs} --host NAME --force'"
    if name is None:
        if not names:
            raise RelayError(f"{Path(certs) / SERVER_CERT} has no DNS name to publish on the "
                             f"relay: {hint}")
        return names[0]
    if name.lower() not in names:
        raise RelayError(f"{Path(certs) / SERVER_CERT} is not valid for {name!r} (its names: "
                         f"{', '.join(names) or 'none'}); visitors asking the relay for "
                         f"{name!r} would refuse it: {hint}")
    return name.lower()


class Tunnel:
    """An SSH link to the relay that publishes ``name``, forwarding to ``socket``."""

    def __init__(self, relay: str, *, key: str | os.PathLike[str],
                 known_hosts: str | os.PathLike[str], name: str,
                 socket: str | os.PathLike[str]) -> None:
        self.asyncssh = asyncssh_module()
        self.relay = parse_relay(relay)
        self.name = name
        self.socket = str(socket)
        self.key_path = Path(key).expanduser()
        try:
            self.key = self.asyncssh.read_private_key(str(self.key_path))
        except self.asyncssh.KeyImportError as e:
            raise RelayError(f"cannot use the SSH key {self.key_path}: {e} (the server needs a "
                             "key without a passphrase: ssh-keygen -t ed25519 -N '' -f FILE)"
                             ) from None
        except OSError as e:
            raise RelayError(f"cannot read the SSH key {self.key_path}: {e.strerror}") from None
        self.known_hosts = Path(known_hosts).expanduser()
        if not self.known_hosts.is_file():
            raise RelayError(
                f"{self.known_hosts} is missing: the server trusts only the relay host key "
                f"listed there. Add the line 'dagen relay' prints at startup (or "
                f"ssh-keyscan -p {self.relay.port} {self.relay.host} > {self.known_hosts})")
        self.published = threading.Event()  # set while the name is published
        self._settled = threading.Event()
        self._error: RelayError | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- the caller's thread --

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),),
                                        name="dagen-relay-tunnel", daemon=True)
        self._thread.start()
        self._settled.wait(timeout)
        if self._error is not None:
            self.stop()
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    # -- the tunnel's thread --

    def _settle(self, error: RelayError | None) -> None:
        if not self._settled.is_set():
            self._error = error
            self._settled.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        delay = INITIAL_BACKOFF
        while not stopping.is_set():
            try:
                await self._link(stopping)
                delay = INITIAL_BACKOFF
            except RelayError as e:  # refused: retrying helps only if the relay changes
                log.error("%s", e)
                self._settle(e)
                delay = MAX_BACKOFF
            except (OSError, TimeoutError, self.asyncssh.Error) as e:
                log.warning("cannot reach the relay %s: %s; trying again in %.1f s",
                            self.relay, e or type(e).__name__, delay)
                self._settle(None)
            except Exception:  # noqa: BLE001 - a bug must not end the tunnel for good
                log.exception("the tunnel to the relay %s failed; trying again in %.1f s",
                              self.relay, delay)
                self._settle(None)
            finally:
                self.published.clear()
            if stopping.is_set():
                break
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_BACKOFF)

    async def _link(self, stopping: asyncio.Event) -> None:
        """One SSH connection: publish, then wait until it ends or the tunnel stops."""
        asyncssh = self.asyncssh
        try:
            conn = await asyncssh.connect(
                self.relay.host, self.relay.port, username=self.relay.user,
                client_keys=[self.key], known_hosts=str(self.known_hosts), config=None,
                agent_path=None, preferred_auth="publickey", connect_timeout=CONNECT_TIMEOUT,
                keepalive_interval=KEEPALIVE_INTERVAL, keepalive_count_max=KEEPALIVE_COUNT_MAX,
                encryption_algs=ENCRYPTION_ALGS, compression_algs=COMPRESSION_ALGS,
            )
        except asyncssh.HostKeyNotVerifiable as e:
            raise RelayError(
                f"refusing the relay {self.relay}: its host key is not the one in "
                f"{self.known_hosts} ({e.reason}). If the relay's key was changed on purpose, "
                "put its new line there") from None
        except asyncssh.PermissionDenied:
            raise RelayError(
                f"the relay {self.relay} refused the SSH key {self.key_path} "
                f"({self.key.get_fingerprint()}): its services file must list the public key "
                f"under [services.\"{self.name}\"]") from None
        async with conn:
            socket = self.socket
            try:
                await conn.create_server(
                    lambda _host, _port: conn.forward_unix_connection(socket),
                    self.name, 0, window=WINDOW)
            except asyncssh.ChannelListenError:
                raise RelayError(
                    f"the relay {self.relay} refused to publish {self.name!r} for the SSH key "
                    f"{self.key.get_fingerprint()}: its services file must list this key under "
                    f"[services.\"{self.name}\"]") from None
            self.published.set()
            self._settle(None)
            log.info("published %r on the relay %s", self.name, self.relay)
            closed = asyncio.ensure_future(conn.wait_closed())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait([closed, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not stopping.is_set():
                self.published.clear()
                log.warning("the link to the relay %s ended; connecting again", self.relay)


class RelayTunnel:
    """What ``dagen serve --relay`` needs: the Unix socket to serve on (a private one
    when no ``--socket`` was given) and the tunnel to start once the server listens."""

    def __init__(self, relay: str, *, certs: str | None, key: str | None,
                 known_hosts: str | None, name: str | None, socket: str | None) -> None:
        if certs is None:
            raise RelayError("--relay needs --certs: TLS runs end to end through the relay, "
                             "which routes by the name in the server's certificate")
        if key is None:
            raise RelayError("--relay needs --relay-key FILE, the SSH private key the relay's "
                             "services file lists for this server")
        self._folder: str | None = None
        if socket is None:
            self._folder = tempfile.mkdtemp(prefix="dagen-relay-")  # mode 0700
            socket = os.path.join(self._folder, "server.sock")
        self.socket = socket
        self.tunnel = Tunnel(relay, key=key, name=published_name(certs, name),
                             known_hosts=known_hosts or Path(certs) / RELAY_KNOWN_HOSTS,
                             socket=socket)

    def start(self) -> None:
        self.tunnel.start()

    def stop(self) -> None:
        self.tunnel.stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def describe(self) -> str:
        where = f"{self.tunnel.name} on the relay {self.tunnel.relay}"
        if self.tunnel.published.is_set():
            return f"published as {where}"
        return f"publishing as {where} once it is reachable"
