"""Helpers of the relay tests (tests/test_relay.py, and the relay example of
tests/test_docs.py): certificates and SSH keys for a published name, `dagen relay` and
`dagen serve --relay` as real subprocesses on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from conftest import DAGEN

from dagen._security import issue_server


@dataclass
class Setup:
    folder: Path
    name: str  # the name the server publishes
    module: Path  # what it serves
    certs: Path  # CA, the server certificate for NAME, alice
    other_certs: Path  # the same CA, a server certificate for another name
    services: Path
    host_key: Path
    key: Path  # the server's SSH key, listed for NAME
    stranger_key: Path  # listed nowhere


def ssh_key(path: Path, comment: str) -> str:
    """A new ed25519 key in ``path`` (0600); returns its public key line."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return key.export_public_key().decode().strip()


def make_setup(folder: Path, ca: Path, name: str, other: str, module: Path) -> Setup:
    """In ``folder``: certificate folders (the CA and alice of ``ca``) with a server
    certificate for ``name`` and for ``other``, SSH keys of the two servers and of a
    stranger, the relay's host key and a services file letting each key publish its name."""
    relay_certs = folder / "certs"
    other_certs = folder / "other-certs"
    for dest in (relay_certs, other_certs):
        dest.mkdir()
        for file in ("ca.crt", "ca.key", "alice.crt", "alice.key"):
            shutil.copy(ca / file, dest / file)
    issue_server(relay_certs, hosts=[name], ips=[])
    issue_server(other_certs, hosts=[other], ips=[])
    server_pub = ssh_key(folder / "server_key", "ocean@login1")
    other_pub = ssh_key(folder / "other_key", "other@login2")
    ssh_key(folder / "stranger_key", "stranger")
    services = folder / "relay-services.toml"
    services.write_text(f'[services."{name}"]\nkeys = ["{server_pub}"]\n\n'
                        f'[services."{other}"]\nkeys = ["{other_pub}"]\n')
    host_key = folder / "relay_host_key"
    ssh_key(host_key, "relay")
    return Setup(folder, name, module, relay_certs, other_certs, services, host_key,
                 folder / "server_key", folder / "stranger_key")


@dataclass
class Relay:
    process: subprocess.Popen[str]
    visitor_port: int
    tunnel_port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.visitor_port}"

    @property
    def url(self) -> str:
        return f"ssh://dagen@127.0.0.1:{self.tunnel_port}"


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def start_relay(setup: Setup, visitors: int = 0, tunnels: int = 0,
                services: Path | None = None) -> Relay:
    """`dagen relay` on 127.0.0.1; returns once it says where it listens, with its host key
    pinned in the servers' relay_known_hosts."""
    process = subprocess.Popen(
        [*DAGEN, "relay", "--listen", f"127.0.0.1:{visitors}", "--tunnels",
         f"127.0.0.1:{tunnels}", "--services", str(services or setup.services), "--host-key",
         str(setup.host_key)],
        stdout=subprocess.PIPE, stderr=(setup.folder / "relay.log").open("a"), text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"visitors on 127\.0\.0\.1:(\d+), tunnels on 127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"dagen relay did not start: {line!r}")
    relay = Relay(process, int(match.group(1)), int(match.group(2)))
    # The servers pin the relay's host key.
    key = relay_public_key(setup)
    for folder in (setup.certs, setup.other_certs):
        (folder / "relay_known_hosts").write_text(f"[127.0.0.1]:{relay.tunnel_port} {key}\n")
    return relay


def relay_public_key(setup: Setup) -> str:
    private = asyncssh.import_private_key(setup.host_key.read_bytes())
    return private.export_public_key().decode().strip()


def serve_command(setup: Setup, relay: Relay, certs: Path | None = None,
                  key: Path | None = None, *extra: str) -> list[str]:
    return [*DAGEN, "serve", str(setup.module), "--certs", str(certs or setup.certs),
            "--relay", relay.url, "--relay-key", str(key or setup.key), *extra]


def start_relayed_server(setup: Setup, relay: Relay) -> tuple[subprocess.Popen[str], str]:
    """`dagen serve --relay`; returns once it says it is published."""
    process = subprocess.Popen(serve_command(setup, relay), stdout=subprocess.PIPE, text=True,
                               stderr=(setup.folder / "server.log").open("a"))
    assert process.stdout is not None
    line = process.stdout.readline()
    if f"published as {setup.name}" not in line:
        process.kill()
        raise RuntimeError(f"dagen serve --relay did not start: {line!r}")
    return process, line
