"""The relay (issue 17): `dagen relay`, `dagen serve --relay` and the generated client as
three real processes on 127.0.0.1; TLS end to end through the relay."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import DAGEN, SERVICES, stop_process
from guarded import wait_until

import dagen

asyncssh = pytest.importorskip("asyncssh")

from relaying import (  # noqa: E402
    Relay,
    Setup,
    free_port,
    make_setup,
    relay_public_key,
    serve_command,
    start_relay,
    start_relayed_server,
)

from dagen._relay import (  # noqa: E402 - after the importorskip
    NotTLS,
    load_services,
    server_name,
)
from dagen._tunnel import MAX_BACKOFF, published_name  # noqa: E402

NAME = "ocean.relay.test"  # published by the key "server"
OTHER = "other.relay.test"  # a name the key "server" may not publish
ECHO = SERVICES / "echo_service.py"


@pytest.fixture(scope="module")
def setup(certs, tmp_path_factory) -> Setup:
    return make_setup(tmp_path_factory.mktemp("relay"), certs.folder, NAME, OTHER, ECHO)


@pytest.fixture(scope="module")
def relay(setup) -> Relay:
    relay = start_relay(setup)
    yield relay
    stop_process(relay.process)


@pytest.fixture(scope="module")
def relayed_server(setup, relay):
    process, line = start_relayed_server(setup, relay)
    yield process, line
    stop_process(process)


def _client(module, target: str, setup: Setup, name: str = NAME, **kwargs):
    return module.Client(target, server_name=name, certs=setup.certs, identity="alice",
                         **kwargs)


# -- which sockets a process listens on -------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", link):
            out.add(int(match.group(1)))
    return out


def tcp_listening(pid: int) -> set[str]:
    """The local addresses of the TCP sockets ``pid`` listens on (from /proc)."""
    mine = _socket_inodes(pid)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and int(fields[9]) in mine:  # 0A: LISTEN
                found.add(fields[1])
    return found


# -- end to end -------------------------------------------------------------------------------


def test_call_through_the_relay_with_no_listening_port(setup, relay, relayed_server,
                                                         echo_client_module):
    process, line = relayed_server
    assert tcp_listening(relay.process.pid)  # the check sees listening sockets...
    assert tcp_listening(process.pid) == set()  # ...and the server has none
    path = re.search(r"on unix:(\S+),", line).group(1)
    assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600

    client = _client(echo_client_module, relay.target, setup)
    da = xr.DataArray(np.random.default_rng(1).normal(size=(300, 2000)), dims=("t", "x"),
                      coords={"t": np.arange(300)}, name="sst", attrs={"units": "K"})
    xr.testing.assert_identical(client.echo(da), da)  # ~4.8 MB: several chunks
    assert client.add(2, 3) == 5


def test_a_name_with_no_server_gets_a_clear_error_fast(setup, relay, relayed_server,
                                                        echo_client_module):
    for name in ("nobody.relay.test", OTHER):  # unknown; known but not connected
        client = _client(echo_client_module, relay.target, setup, name=name)
        start = time.monotonic()
        with pytest.raises(dagen.ServerUnavailable, match="no server connected under that name"):
            client.add(1, 2)
        assert time.monotonic() - start < 2.0
    log = (setup.folder / "relay.log").read_text()
    assert "asked for 'nobody.relay.test': no server may publish it" in log
    assert f"asked for '{OTHER}': no server is connected under it" in log


def test_a_key_may_publish_only_its_names(setup, relay):
    """The server key of NAME serving a certificate for OTHER is refused; so is a key
    the services file does not list; both servers exit with a message saying why."""
    cases = [
        (serve_command(setup, relay, certs=setup.other_certs),
         f"refused to publish '{OTHER}' for the SSH key"),
        (serve_command(setup, relay, key=setup.stranger_key), "refused the SSH key"),
    ]
    for command, message in cases:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert message in done.stderr
    log = (setup.folder / "relay.log").read_text()
    assert f"refused to publish '{OTHER}'" in log and "refused SSH key" in log


def test_the_server_refuses_a_relay_whose_host_key_changed(setup, relay, tmp_path):
    known = tmp_path / "known_hosts"
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    known.write_text(f"[127.0.0.1]:{relay.tunnel_port} {impostor}")
    done = subprocess.run(
        [*serve_command(setup, relay), "--relay-known-hosts", str(known)],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing the relay" in done.stderr and "host key" in done.stderr


def test_the_relay_grants_a_listed_key_nothing_but_publishing(setup, relay, relayed_server):
    """No shell, no command, no connection to elsewhere from the relay (local forwarding):
    a server key can only publish its names."""
    import asyncio

    async def attempt() -> list[str]:
        refused = []
        async with asyncssh.connect(
                "127.0.0.1", relay.tunnel_port, username="dagen", config=None,
                client_keys=[str(setup.key)], agent_path=None,
                known_hosts=str(setup.certs / "relay_known_hosts")) as conn:
            for what, action in [
                ("command", lambda: conn.run("id", check=True)),
                ("shell", lambda: conn.open_session()),
                ("local forward", lambda: conn.open_connection("127.0.0.1", relay.tunnel_port)),
            ]:
                try:
                    await action()
                except (asyncssh.ChannelOpenError, asyncssh.ProcessError):
                    refused.append(what)
        return refused

    assert asyncio.run(attempt()) == ["command", "shell", "local forward"]


class TamperingProxy:
    """A TCP proxy in front of the relay that flips one bit of the byte number
    ``flip_at`` of what flows back to the visitor (None: flips nothing)."""

    def __init__(self, upstream: int, flip_at: int | None) -> None:
        self.upstream = upstream
        self.flip_at = flip_at
        self.flipped = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                visitor, _ = self.listener.accept()
            except OSError:
                return
            relay = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._copy, args=(visitor, relay, None), daemon=True).start()
            threading.Thread(target=self._copy, args=(relay, visitor, self.flip_at),
                             daemon=True).start()

    def _copy(self, src: socket.socket, dst: socket.socket, flip_at: int | None) -> None:
        seen = 0
        try:
            while data := src.recv(1 << 16):
                if flip_at is not None and not self.flipped and seen <= flip_at < seen + len(data):
                    data = bytearray(data)
                    data[flip_at - seen] ^= 0x01
                    self.flipped = True
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("flip", [False, True], ids=["faithful", "one-bit-flipped"])
def test_a_relay_that_changes_a_byte_fails_the_call(setup, relay, relayed_server,
                                                    echo_client_module, flip):
    a = np.arange(1 << 18, dtype=np.float64)  # 2 MiB each way
    proxy = TamperingProxy(relay.visitor_port, 500_000 if flip else None)
    try:
        client = _client(echo_client_module, f"127.0.0.1:{proxy.port}", setup, timeout=30)
        if not flip:  # the proxy itself is faithful
            np.testing.assert_array_equal(client.echo_array(a), a)
            return
        with pytest.raises(dagen.ServerUnavailable):
            client.echo_array(a)
        assert proxy.flipped
    finally:
        proxy.close()


def test_relay_restart(setup, echo_client_module, tmp_path, monkeypatch):
    """A call in flight when the relay stops raises ServerUnavailable promptly; once the
    relay is back, the server is published again within MAX_BACKOFF s (measured ~1 s)."""
    relay = start_relay(setup)
    monkeypatch.setenv("DAGEN_TEST_MARKS", str(tmp_path))  # echo_service.sleep marks its start
    server, _ = start_relayed_server(setup, relay)
    try:
        client = _client(echo_client_module, relay.target, setup, timeout=60)
        assert client.add(1, 1) == 2
        outcome: dict[str, object] = {}

        def slow_call() -> None:
            try:
                outcome["result"] = client.sleep(30.0)
            except Exception as e:  # noqa: BLE001 - the test looks at it
                outcome["error"] = e
            outcome["ended"] = time.monotonic()

        caller = threading.Thread(target=slow_call)
        caller.start()
        assert wait_until((tmp_path / "sleep.started").exists, 15)  # the call is running
        relay.process.send_signal(signal.SIGKILL)  # a crash, not a goodbye
        killed = time.monotonic()
        caller.join(15)
        assert not caller.is_alive()
        assert isinstance(outcome.get("error"), dagen.ServerUnavailable), outcome
        assert "broke during the call" in str(outcome["error"])  # it was in flight
        assert outcome["ended"] - killed < 5.0  # type: ignore[operator]
        relay.process.wait()

        relay = start_relay(setup, relay.visitor_port, relay.tunnel_port)
        back = time.monotonic()
        while True:
            try:
                assert _client(echo_client_module, relay.target, setup).add(2, 2) == 4
                break
            except dagen.ServerUnavailable:
                assert time.monotonic() - back < MAX_BACKOFF + 5.0, "not published again"
                time.sleep(0.1)
        print(f"reachable again {time.monotonic() - back:.2f} s after the relay restarted")
        assert server.poll() is None
    finally:
        stop_process(server)
        stop_process(relay.process)


def test_a_server_started_before_the_relay_publishes_once_it_is_up(setup, echo_client_module):
    port, visitors = free_port(), free_port()
    (setup.certs / "relay_known_hosts").write_text(f"[127.0.0.1]:{port} {relay_public_key(setup)}")
    server = subprocess.Popen(
        serve_command(setup, Relay(None, visitors, port)),  # type: ignore[arg-type]
        stdout=subprocess.PIPE, text=True, stderr=(setup.folder / "early.log").open("w"))
    relay = None
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"publishing as {NAME} on the relay" in line and "once it is reachable" in line
        assert "cannot reach the relay" in (setup.folder / "early.log").read_text()
        relay = start_relay(setup, visitors, port)
        assert wait_until(lambda: _reachable(echo_client_module, relay, setup),
                          MAX_BACKOFF + 10, step=0.2)
    finally:
        stop_process(server)
        if relay is not None:
            stop_process(relay.process)


def _reachable(module, relay: Relay, setup: Setup) -> bool:
    try:
        return _client(module, relay.target, setup).add(2, 2) == 4
    except dagen.ServerUnavailable:
        return False


def test_a_key_taken_out_of_the_services_file_loses_its_name(setup, echo_client_module,
                                                              tmp_path):
    """The relay reads the services file again when it changes: a key no longer listed
    loses its tunnel at the next visit, and gets it back once listed again."""
    services = tmp_path / "services.toml"
    text = setup.services.read_text()
    services.write_text(text)
    relay = start_relay(setup, services=services)
    server, _ = start_relayed_server(setup, relay)
    try:
        assert _reachable(echo_client_module, relay, setup)
        services.write_text(text.replace(f'[services."{NAME}"]', '[services."gone.relay.test"]'))
        assert not _reachable(echo_client_module, relay, setup)
        services.write_text(text)
        assert wait_until(lambda: _reachable(echo_client_module, relay, setup),
                          MAX_BACKOFF + 10, step=0.2)
        assert server.poll() is None
    finally:
        stop_process(server)
        stop_process(relay.process)


# -- pieces -----------------------------------------------------------------------------------


def _client_hello(name: str | None) -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_server_name_is_read_from_a_real_client_hello():
    hello = _client_hello("Ocean.Relay.Test")
    assert server_name(hello[5 + 4:]) == NAME  # record header, handshake header
    with pytest.raises(NotTLS, match="no server name"):
        server_name(_client_hello(None)[9:])
    with pytest.raises(NotTLS, match="malformed"):
        server_name(hello[9:60])


def test_services_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "s.toml"
    cases = {
        "": "no \\[services",
        '[services."Bad_Name"]\nkeys = ["x"]': "not a host name",
        '[services."a.example"]\nkey = ["x"]': "needs exactly one entry",
        '[services."a.example"]\nkeys = ["ssh-ed25519 AAAAnope"]': "keys\\[0\\] is not an SSH",
        "[services": "not valid TOML",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(dagen.RelayError, match=message):
            load_services(path)
    with pytest.raises(dagen.RelayError, match="cannot read"):
        load_services(tmp_path / "missing.toml")


def test_published_name_must_be_in_the_certificate(setup):
    assert published_name(setup.certs) == NAME
    with pytest.raises(dagen.RelayError, match="is not valid for 'elsewhere.test'"):
        published_name(setup.certs, "elsewhere.test")


# -- stock OpenSSH as the relay (docs/deployment.md) ------------------------------------------


SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def test_stock_openssh_as_the_relay(setup, echo_client_module, tmp_path):
    """The recipe of docs/deployment.md: sshd with its own config on the relay host, an
    account restricted to one forwarded port, `ssh -R PORT:SOCKET` on the login node
    (where `dagen serve --socket` listens on no TCP port); visitors reach the server on
    the relay's forwarded port, TLS end to end."""
    if not (os.path.exists(SSHD) and shutil.which("ssh")):
        reason = "needs OpenSSH (apt-get install openssh-server)"
        if os.environ.get("CI") and os.geteuid() == 0:  # .ci/debian-packages.sh installs it
            pytest.fail(f"OpenSSH was to be installed for CI by make test, but it {reason}")
        pytest.skip(reason)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
    ssh_port, public_port = free_port(), free_port()
    host_key = tmp_path / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True)
    server_pub = (setup.folder / "server_key").read_bytes()
    pub = asyncssh.import_private_key(server_pub).export_public_key().decode().strip()
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(f'restrict,port-forwarding,permitlisten="127.0.0.1:{public_port}" '
                          f"{pub}\n")
    config = tmp_path / "sshd_config"
    config.write_text(f"""\
Port {ssh_port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {tmp_path / "sshd.pid"}
AuthorizedKeysFile {authorized}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding remote
AllowStreamLocalForwarding no
GatewayPorts clientspecified
PermitTTY no
X11Forwarding no
ClientAliveInterval 15
ClientAliveCountMax 3
""")
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                            stderr=(tmp_path / "sshd.log").open("w"))
    sock = tmp_path / "server.sock"
    server = subprocess.Popen(
        [*DAGEN, "serve", str(ECHO), "--certs", str(setup.certs), "--socket", str(sock)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_port} {Path(f'{host_key}.pub').read_text()}")
    tunnel = None
    try:
        assert server.stdout is not None and "unix:" in server.stdout.readline()
        assert tcp_listening(server.pid) == set()
        user = getpass.getuser()
        tunnel = subprocess.Popen(
            ["ssh", "-N", "-i", str(setup.key), "-p", str(ssh_port), "-F", "/dev/null",
             "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
             "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15",
             "-o", "ServerAliveCountMax=3", "-o", "IdentitiesOnly=yes",
             "-R", f"127.0.0.1:{public_port}:{sock}", f"{user}@127.0.0.1"],
            stderr=(tmp_path / "ssh.log").open("w"))
        client = _client(echo_client_module, f"127.0.0.1:{public_port}", setup)
        deadline = time.monotonic() + 20
        while True:
            try:
                da = xr.DataArray(np.arange(1000.0), dims="x", name="x")
                xr.testing.assert_identical(client.echo(da), da)
                break
            except dagen.ServerUnavailable:
                assert tunnel.poll() is None, (tmp_path / "ssh.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "sshd.log").read_text()
                time.sleep(0.2)
        # The restriction holds: the key may not listen on another port.
        other = free_port()
        refused = subprocess.run(
            ["ssh", "-N", "-i", str(setup.key), "-p", str(ssh_port), "-F", "/dev/null",
             "-o", f"UserKnownHostsFile={known}", "-o", "ExitOnForwardFailure=yes",
             "-o", "IdentitiesOnly=yes", "-R", f"127.0.0.1:{other}:{sock}",
             f"{user}@127.0.0.1"], capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and "forwarding failed" in refused.stderr
    finally:
        for p in (tunnel, server, sshd):
            if p is not None:
                stop_process(p)  # type: ignore[arg-type]
