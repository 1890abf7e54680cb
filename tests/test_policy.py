"""Who may call what: the caller's identity inside a served function, the policy
(--policy FILE or [tool.dagen.policy]), and the deny-list (revoked.txt), against real
`dagen serve` subprocesses over mutual TLS."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DAGEN, import_client
from cryptography import x509
from guarded import GUARDED, SERVICE, MiB, raw_channel, serve, wait_until

import dagen
from dagen import PolicyError
from dagen._build import build
from dagen._cli import main
from dagen._security import (
    DenyList,
    Identity,
    Policy,
    format_serial,
    init_ca,
    issue_client,
    issue_server,
    parse_san,
)
from dagen._security._denylist import LOOK_EVERY

POLICY = """\
[groups]
ocean = ["alice", "bob"]
everyone = ["ocean", "carol"]

[allow]
add = ["*"]
whoami = ["*"]
whoami_array = ["everyone"]
total = ["ocean"]
secret = ["carol"]
Vault = ["ocean"]
"Vault.peek" = ["carol"]
sleep = ["dave@uni.example.org"]
"""


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    """A CA with alice (and her e-mail address), bob, carol and dave (known by e-mail)."""
    folder = tmp_path_factory.mktemp("team-certs")
    init_ca(folder)
    issue_server(folder, hosts=["localhost"], ips=["127.0.0.1"])
    issue_client(folder, "alice", sans=[parse_san("alice@uni.example.org")])
    for name in ("bob", "carol"):
        issue_client(folder, name)
    issue_client(folder, "dave", sans=[parse_san("email:dave@uni.example.org")])
    return folder


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def policed(team, policy_file, tmp_path_factory, guarded_build):
    served = serve("--certs", str(team), "--policy", str(policy_file),
                   tmp=tmp_path_factory.mktemp("policed"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def clients(guarded_client_module, policed, team):
    made = {name: guarded_client_module.Client(policed.target, certs=team, identity=name,
                                               timeout=60)
            for name in ("alice", "bob", "carol", "dave")}
    yield made
    for client in made.values():
        dagen.close(client)


def status(refused: pytest.ExceptionInfo[PermissionError]) -> grpc.StatusCode:
    """The gRPC status a PermissionError came from: the client raises it for both
    PERMISSION_DENIED and UNAUTHENTICATED, from within its handler of the grpc.RpcError
    (``raise ... from None`` hides that error in tracebacks but keeps it as __context__)."""
    rpc = refused.value.__context__
    assert isinstance(rpc, grpc.RpcError), f"not raised from an rpc error: {rpc!r}"
    return rpc.code()


def test_a_method_nobody_serves_is_unimplemented_not_refused(policed, team):
    """The guard wraps the served functions only: an unknown path is grpc's to answer
    (UNIMPLEMENTED, not PERMISSION_DENIED), whoever calls, and logs it as an unknown
    method, not as a refusal."""
    for identity in ("alice", "carol"):
        with raw_channel(policed.target, team, identity) as channel:
            with pytest.raises(grpc.RpcError) as unknown:
                channel.unary_unary(SERVICE + "Nope")(b"", timeout=10)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    lines = [line for line in policed.logged().splitlines() if "Nope" in line]
    assert len(lines) == 2 and all(f"unknown method {SERVICE}Nope called" in line
                                   for line in lines)


# -- identity -------------------------------------------------------------------------------------


def test_caller_is_the_certificate_that_called(clients, team):
    cert = x509.load_pem_x509_certificate((team / "alice.crt").read_bytes())
    assert clients["alice"].whoami() == [
        "alice", format_serial(cert.serial_number), "alice@uni.example.org"]
    assert clients["bob"].whoami()[0] == "bob"
    assert clients["dave"].whoami()[2:] == ["dave@uni.example.org"]


def test_caller_reaches_the_thread_that_runs_a_streaming_call(clients):
    assert clients["bob"].whoami_array(np.zeros(3)) == ["bob", "3"]
    assert clients["carol"].whoami_array(np.zeros(7)) == ["carol", "7"]


def test_caller_is_none_outside_a_served_call():
    assert dagen.caller() is None
    assert isinstance(Identity("x"), dagen.Identity)


@pytest.fixture(scope="module")
def who_module(tmp_path_factory) -> Path:
    """A module without classes, for --executor process (which serves no classes)."""
    folder = tmp_path_factory.mktemp("who")
    module = folder / "who_service.py"
    module.write_text(textwrap.dedent('''
        """Who calls, from a worker process."""
        import os

        import numpy as np

        import dagen


        def who(a: np.ndarray) -> list[str]:
            """The caller's name and the pid of the process that ran the function."""
            return [dagen.caller().name, str(os.getpid())]
    '''))
    return module


def test_caller_reaches_worker_processes(who_module, tmp_path, certs):
    built = build(str(who_module), tmp_path / "build")
    client_module = import_client(built.client, "who_service_client")
    served = serve("--certs", str(certs.folder), "--executor", "process", "--workers", "1",
                   tmp=tmp_path, module=who_module)
    try:
        for identity in ("alice", "bob"):
            with client_module.Client(served.target, certs=certs.folder, identity=identity,
                                      timeout=60) as client:
                name, pid = client.who(np.ones(4))
            assert name == identity
            assert int(pid) != served.pid  # it ran in a worker process
    finally:
        served.stop()


# -- the policy -----------------------------------------------------------------------------------


# A caller the policy allows, for each function someone is denied below.
PERMITTED = {"total": "alice", "secret": "carol", "Vault.open": "alice", "sleep": "dave",
             "whoami_array": "carol"}


@pytest.mark.parametrize("who, function, allowed", [
    ("alice", "add", True), ("carol", "add", True), ("dave", "add", True),
    ("alice", "total", True), ("bob", "total", True), ("carol", "total", False),
    ("dave", "total", False),
    ("carol", "secret", True), ("alice", "secret", False), ("bob", "secret", False),
    ("alice", "Vault.open", True), ("alice", "Vault.peek", True),
    ("carol", "Vault.peek", True), ("carol", "Vault.open", False),
    ("dave", "sleep", True), ("alice", "sleep", False),
    ("carol", "whoami_array", True), ("dave", "whoami_array", False),
])
def test_policy_decides_who_may_call_what(clients, policed, who, function, allowed):
    def call(who: str) -> bool:
        client = clients[who]
        return {
            "add": lambda: client.add(1, 2) == 3,
            "total": lambda: client.total(np.ones(10)) == 10.0,
            "secret": lambda: client.secret() == "the secret",
            "Vault.open": lambda: client.Vault("v").open() == "opened v",
            "Vault.peek": lambda: client.Vault("v").peek() == "peeked into v",
            "sleep": lambda: client.sleep(0.0) == 0.0,
            "whoami_array": lambda: client.whoami_array(np.ones(2)) == [who, "2"],
        }[function]()

    if allowed:
        assert call(who)
        return
    # a caller the policy allows runs the function, and the run is recorded...
    before = policed.records()
    assert call(PERMITTED[function])
    ran = policed.records()
    assert [line.split()[0] for line in ran[len(before):]] == [function]
    # ...but this caller's call is refused, and the function never runs
    with pytest.raises(PermissionError) as denied:
        call(who)
    assert status(denied) == grpc.StatusCode.PERMISSION_DENIED
    message = str(denied.value)
    assert f"{who} may not call {function}()" in message
    assert "policy" in message
    assert policed.records() == ran


def test_a_denied_upload_is_refused_before_its_bytes_are_sent(clients, policed):
    """carol may not call total(): a 64 MiB argument is refused at once, never received."""
    big = np.ones(8 * MiB)  # 64 MiB
    before = policed.records()
    policed.reset_peak()
    baseline = policed.rss()
    with pytest.raises(PermissionError, match=r"carol may not call total\(\)") as denied:
        clients["carol"].total(big)
    assert status(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert policed.peak() - baseline < 32 * MiB
    assert policed.records() == before


def test_denials_are_logged_with_identity_and_peer(policed, clients):
    with pytest.raises(PermissionError) as denied:
        clients["bob"].secret()
    assert status(denied) == grpc.StatusCode.PERMISSION_DENIED
    log = policed.logged()
    assert re.search(r"refused secret\(\) to bob from ipv[46]:.*not allowed by the policy", log)


def test_policy_from_the_pyproject_next_to_the_module(tmp_path, team, guarded_client_module):
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(GUARDED, folder / GUARDED.name)
    (folder / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "guarded"

        [tool.dagen.policy.groups]
        staff = ["bob"]

        [tool.dagen.policy.allow]
        "*" = ["staff"]
        add = ["alice"]
    """))
    served = serve("--certs", str(team), tmp=tmp_path, module=folder / GUARDED.name)
    try:
        assert "[tool.dagen.policy]" in served.logged()
        with guarded_client_module.Client(served.target, certs=team, identity="alice",
                                          timeout=30) as alice, \
             guarded_client_module.Client(served.target, certs=team, identity="bob",
                                          timeout=30) as bob:
            assert alice.add(1, 1) == 2
            with pytest.raises(PermissionError, match=r"alice may not call secret\(\)") as denied:
                alice.secret()
            assert status(denied) == grpc.StatusCode.PERMISSION_DENIED
            assert bob.secret() == "the secret"  # "*": every function
            assert bob.Vault("x").open() == "opened x"
    finally:
        served.stop()


def test_without_a_policy_every_certificate_of_the_ca_may_call_everything(
    guarded_client_module, tmp_path, team
):
    served = serve("--certs", str(team), tmp=tmp_path)
    try:
        for who in ("alice", "carol", "dave"):
            with guarded_client_module.Client(served.target, certs=team, identity=who,
                                              timeout=30) as client:
                assert client.secret() == "the secret"
        assert "callers: every certificate of the CA" in served.logged()
    finally:
        served.stop()


def serve_refused(*args: str) -> str:
    """`dagen serve GUARDED ARGS`, which must refuse to start; its error message."""
    done = subprocess.run([*DAGEN, "serve", str(GUARDED), "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    assert "dagen: serving" not in done.stdout
    return done.stderr


@pytest.mark.parametrize("text, message", [
    ('[allow]\nanomaly = ["alice"]\n',
     r"\[allow\] names 'anomaly', which the served module does not have \(it has: "),
    ('[allow]\n"Safe.open" = ["alice"]\n', r"names 'Safe.open'"),
    ('[allow]\nadd = "alice"\n', r"allow.add must be a list of names"),
    ('[groups]\na = ["b"]\nb = ["a"]\n[allow]\nadd = ["a"]\n', r"group 'a' contains itself"),
    ('[groups]\n[alow]\nadd = ["x"]\n', r"unknown policy key\(s\) alow"),
    ('[allow\n', r"is not valid TOML"),
    ('[groups]\nx = ["y"]\n', r"has no \[allow\] table"),
])
def test_a_policy_that_cannot_be_right_stops_the_server(tmp_path, team, text, message):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    stderr = serve_refused("--certs", str(team), "--policy", str(path))
    assert re.search(message, stderr), stderr
    assert str(path) in stderr


def test_a_policy_needs_mutual_tls(policy_file):
    stderr = serve_refused("--insecure", "--policy", str(policy_file))
    assert "needs mutual TLS" in stderr


def test_policy_matching_by_name_group_and_class():
    policy = Policy.from_toml(
        {"groups": {"g": ["h"], "h": ["x@y.org"]}, "allow": {"Model": ["g"], "f": ["*"]}},
        "test", ["f", "Model.predict", "Model.fit"])
    x = Identity("someone", sans=("x@y.org",))
    assert policy.allowed(x, "Model.predict") and policy.allowed(x, "Model.fit")
    assert policy.allowed(Identity("anyone"), "f")
    assert not policy.allowed(Identity("anyone"), "Model.fit")
    assert not policy.allowed(Identity("", authenticated=False), "f")  # plain text: nobody
    with pytest.raises(PolicyError, match="names 'Modle'"):
        Policy.from_toml({"allow": {"Modle": ["g"]}}, "test", ["Model.fit"])


# -- the deny-list --------------------------------------------------------------------------------


def until_looked_at() -> None:
    """Wait until a server has looked at revoked.txt again (every LOOK_EVERY s)."""
    time.sleep(LOOK_EVERY + 0.05)


def revoke(folder: Path, *names: str) -> str:
    result = CliRunner().invoke(main, ["certs", "revoke", str(folder), *names])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_revoked_certificate_is_refused_from_its_next_call_after_a_look(
    guarded_client_module, tmp_path, team
):
    folder = tmp_path / "certs"
    shutil.copytree(team, folder)
    served = serve("--certs", str(folder), tmp=tmp_path)
    try:
        with guarded_client_module.Client(served.target, certs=folder, identity="alice",
                                          timeout=30) as alice, \
             guarded_client_module.Client(served.target, certs=folder, identity="bob",
                                          timeout=30) as bob:
            assert alice.add(1, 2) == 3  # connected
            serial = format_serial(
                x509.load_pem_x509_certificate((folder / "alice.crt").read_bytes()).serial_number)
            assert f"serial {serial}" in revoke(folder, "alice")
            until_looked_at()
            # the same connection, the next call: refused, naming the certificate
            with pytest.raises(PermissionError) as refused:
                alice.add(1, 2)
            assert status(refused) == grpc.StatusCode.PERMISSION_DENIED
            assert f"the certificate of alice (serial {serial}) is revoked" in str(refused.value)
            before = served.records()
            with pytest.raises(PermissionError) as refused:
                alice.total(np.ones(3))
            assert status(refused) == grpc.StatusCode.PERMISSION_DENIED
            assert served.records() == before  # total() never ran...
            assert bob.add(2, 2) == 4  # others are not affected
            assert bob.total(np.ones(3)) == 3.0
            assert served.records() == [*before, "total "]  # ...which it records when it does
            # an identity by name, whatever its certificate
            with (folder / "revoked.txt").open("a") as f:
                f.write("bob  # left the project\n")
            until_looked_at()
            with pytest.raises(PermissionError, match="the identity 'bob' is revoked") as refused:
                bob.add(2, 2)
            assert status(refused) == grpc.StatusCode.PERMISSION_DENIED
            # lifting it: the file is read again when it changes
            (folder / "revoked.txt").write_text("# nobody\n")
            until_looked_at()
            assert alice.add(1, 2) == 3 and bob.add(2, 2) == 4
        assert "is revoked" in served.logged()
    finally:
        served.stop()


def test_deny_list_reads_serials_names_and_comments(tmp_path):
    path = tmp_path / "revoked.txt"
    deny = DenyList(path)
    assert deny.refused(Identity("alice", serial=0xABCD)) is None  # no file: nothing denied
    path.write_text("# comment\nserial:ab:cd  # alice's laptop\nserial:nonsense\n\nmallory\n")
    assert "serial ab:cd" in deny.refused(Identity("alice", serial=0xABCD))
    assert deny.refused(Identity("alice", serial=0xABCE)) is None
    assert "'mallory'" in deny.refused(Identity("x", sans=("mallory",)))


def test_a_revocation_is_honoured_on_a_server_with_a_policy_too(
    guarded_client_module, tmp_path, team, policy_file
):
    """The policy lets alice call add(); revoking her certificate refuses her from
    the next call, unary or streaming, all the same."""
    folder = tmp_path / "certs"
    shutil.copytree(team, folder)
    served = serve("--certs", str(folder), "--policy", str(policy_file), tmp=tmp_path)
    try:
        with guarded_client_module.Client(served.target, certs=folder, identity="alice",
                                          timeout=30) as alice:
            assert alice.add(1, 2) == 3
            revoke(folder, "alice")
            until_looked_at()
            for call in (lambda: alice.add(1, 2), lambda: alice.total(np.ones(3))):
                with pytest.raises(PermissionError, match="is revoked") as refused:
                    call()
                assert status(refused) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        served.stop()


def test_an_absent_deny_list_is_noticed_when_it_appears_and_when_it_goes(tmp_path):
    """A revoked.txt created while the server runs is read at the next look; removed,
    it denies nothing again."""
    folder = tmp_path / "certs"
    folder.mkdir()
    deny = DenyList(folder / "revoked.txt", look_every=0)  # a look on every call
    assert deny.empty() and deny.empty()
    (folder / "revoked.txt").write_text("mallory\n")
    assert not deny.empty()
    assert "'mallory'" in deny.refused(Identity("mallory"))
    (folder / "revoked.txt").unlink()
    assert deny.empty()


def test_the_deny_list_is_looked_at_every_look_every_seconds_at_most(tmp_path):
    """A server looks whether revoked.txt changed at most every ``look_every`` seconds
    (a look costs a tiny call ~2.5 % of its time); a change shows at the next look."""
    path = tmp_path / "revoked.txt"
    deny = DenyList(path, look_every=0.5)
    assert deny.empty()  # the first look
    path.write_text("mallory\n")
    looked_at: list[str] = []
    real_stat = os.stat
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "stat", lambda p, *a, **k: looked_at.append(str(p)) or real_stat(p, *a, **k))
        assert deny.empty()  # not looked at again yet: as it was
    assert looked_at == []
    time.sleep(0.55)
    assert not deny.empty()
    assert "'mallory'" in deny.refused(Identity("mallory"), refresh=False)
    assert LOOK_EVERY <= 0.1  # what the README promises of a revocation


def test_a_deny_list_that_cannot_be_looked_at_refuses_rather_than_lets_in(tmp_path):
    """A path that cannot be checked (here its folder is a file) is an error on every
    call, never taken for an absent list, however soon the calls follow each other."""
    not_a_folder = tmp_path / "certs"
    not_a_folder.write_text("")
    deny = DenyList(not_a_folder / "revoked.txt")
    for _ in range(2):
        with pytest.raises(NotADirectoryError):
            deny.empty()


def test_a_deny_list_that_cannot_be_read_refuses_rather_than_lets_in(tmp_path):
    """revoked.txt that can be looked at but not read (here a folder of that name) is
    an error on every call, never taken for an empty list."""
    (tmp_path / "revoked.txt").mkdir()
    deny = DenyList(tmp_path / "revoked.txt")
    for _ in range(2):
        with pytest.raises(IsADirectoryError):
            deny.empty()


def test_calls_in_flight_are_not_cut_by_a_revocation(guarded_client_module, tmp_path, team):
    """The deny-list is checked when a call starts; one running finishes."""
    folder = tmp_path / "certs"
    shutil.copytree(team, folder)
    served = serve("--certs", str(folder), tmp=tmp_path)
    results: list[float] = []
    try:
        with guarded_client_module.Client(served.target, certs=folder, identity="dave",
                                          timeout=30) as dave:
            assert dave.add(1, 1) == 2  # connected
            call = threading.Thread(target=lambda: results.append(dave.sleep(1.5)))
            call.start()
            assert wait_until(lambda: "sleep" in served.records(), 15)  # the call runs
            revoke(folder, "dave")
            call.join(15)
            assert results == [1.5]
            with pytest.raises(PermissionError, match="revoked") as refused:
                dave.sleep(0.0)
            assert status(refused) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        served.stop()
