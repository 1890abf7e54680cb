"""Looking after certificates: `dagen certs list/show/renew/revoke`, warnings about
certificates that expire soon, and a running server that reloads its certificate and
CA when their files change, without dropping the connections it has."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import threading
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from guarded import serve, wait_until

import dagen
from dagen import CertificateExpiryWarning
from dagen._cli import main
from dagen._security import CertificateReloader, format_serial, init_ca, issue_client, issue_server


def run(*args: str | Path) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "certs"
    init_ca(folder)
    issue_server(folder, hosts=["localhost"], ips=["127.0.0.1"])
    issue_client(folder, "alice")
    issue_client(folder, "bob", days=3)
    return folder


def test_list_shows_every_certificate_with_its_status(folder):
    out = run("certs", "list", folder)
    print(out)
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"alice", "bob", "ca", "server"}
    assert re.search(r"alice\s+client\s+alice\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+valid", lines["alice"])
    assert re.search(r"bob .*expires in 2 days", lines["bob"])
    assert re.search(r"ca\s+CA\s+dagen CA", lines["ca"])
    assert re.search(r"server\s+server\s+localhost", lines["server"])
    run("certs", "revoke", folder, "alice")
    assert "REVOKED" in [line for line in run("certs", "list", folder).splitlines()
                         if line.startswith("alice")][0]


def test_show_gives_subject_names_issuer_serial_and_expiry(folder):
    out = run("certs", "show", folder / "server.crt")
    print(out)
    cert = load(folder / "server.crt")
    assert "subject:     CN=localhost" in out
    assert "names (SAN): DNS:localhost, IP:127.0.0.1" in out
    assert "issuer:      CN=dagen CA" in out
    assert f"serial:      {format_serial(cert.serial_number)}" in out
    assert cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%S UTC") in out
    assert "ECDSA secp256r1" in out
    bad = CliRunner().invoke(main, ["certs", "show", str(folder / "ca.key")])
    assert bad.exit_code != 0 and "is not a PEM certificate" in bad.output


def test_client_certificates_carry_alternative_names(folder):
    run("certs", "client", folder, "carol", "--san", "carol@uni.example.org",
        "--san", "uri:https://uni.example.org/carol")
    out = run("certs", "show", folder / "carol.crt")
    assert "email:carol@uni.example.org, URI:https://uni.example.org/carol" in out


@pytest.mark.parametrize("name", ["server", "bob", "ca"])
def test_renew_keeps_subject_names_and_usage(folder, name):
    old = load(folder / f"{name}.crt")
    key_before = (folder / f"{name}.key").read_bytes()
    out = run("certs", "renew", folder, name, "--days", "30")
    assert f"renewed {folder / name}.crt" in out
    new = load(folder / f"{name}.crt")
    assert new.subject == old.subject and new.issuer == old.issuer
    assert new.serial_number != old.serial_number
    assert (new.not_valid_after_utc - dt.datetime.now(dt.UTC)).days in (29, 30)
    for ext in old.extensions:
        if not isinstance(ext.value, x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier):
            assert new.extensions.get_extension_for_oid(ext.oid).value == ext.value
    assert (folder / f"{name}.key").read_bytes() == key_before  # kept
    # every certificate of the folder still chains to its CA
    ca = load(folder / "ca.crt")
    for stem in ("server", "alice", "bob"):
        load(folder / f"{stem}.crt").verify_directly_issued_by(ca)


def test_renew_with_a_new_key(folder):
    before = (folder / "alice.key").read_bytes()
    run("certs", "renew", folder, "alice", "--new-key")
    assert (folder / "alice.key").read_bytes() != before
    assert os.stat(folder / "alice.key").st_mode & 0o777 == 0o600
    refused = CliRunner().invoke(main, ["certs", "renew", str(folder), "ca", "--new-key"])
    assert refused.exit_code != 0 and "keeps its key" in refused.output


# -- expiry warnings ------------------------------------------------------------------------------


def test_client_warns_when_its_certificate_expires_within_14_days(
    folder, guarded_client_module
):
    with pytest.warns(CertificateExpiryWarning, match=r"bob\.crt expires in 2 days .*renew"):
        guarded_client_module.Client("localhost:1", certs=folder, identity="bob").__dagen__.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guarded_client_module.Client("localhost:1", certs=folder, identity="alice").__dagen__.close()


def test_server_warns_at_start_when_its_certificate_expires_soon(folder, tmp_path):
    issue_server(folder, hosts=["localhost"], ips=["127.0.0.1"], days=5, force=True)
    served = serve("--certs", str(folder), tmp=tmp_path)
    try:
        assert wait_until(lambda: "server.crt expires in 4 days" in served.logged(), 5)
        assert f"dagen certs renew {folder} server" in served.logged()
    finally:
        served.stop()


# -- reloading ------------------------------------------------------------------------------------


def test_server_reloads_renewed_certificates_without_dropping_connections(
    folder, tmp_path, guarded_client_module
):
    """Rotate to a new CA while a call runs: the call finishes on its connection, and
    clients of the new CA get in, with no restart."""
    served = serve("--certs", str(folder), tmp=tmp_path)
    old_side = tmp_path / "old-side"  # what alice holds: the old CA and her pair
    shutil.copytree(folder, old_side)
    new = tmp_path / "new-ca"
    init_ca(new, name="the new CA")
    issue_server(new, hosts=["localhost"], ips=["127.0.0.1"])
    issue_client(new, "zed")
    Client = guarded_client_module.Client
    results: list[float] = []
    try:
        alice = Client(served.target, certs=old_side, identity="alice", timeout=30)
        assert alice.add(1, 1) == 2  # connected
        call = threading.Thread(target=lambda: results.append(alice.sleep(2.0)))
        call.start()
        assert wait_until(lambda: "sleep" in served.records(), 15)  # the call runs
        with pytest.raises(dagen.ServerUnavailable):  # zed's CA is not trusted yet
            Client(served.target, certs=new, identity="zed", timeout=10).add(1, 1)
        # the operator rotates: both CAs trusted for a while, the server's new pair
        bundle = (folder / "ca.crt").read_bytes() + (new / "ca.crt").read_bytes()
        for name, data in [("ca.crt", bundle), ("server.key", (new / "server.key").read_bytes()),
                           ("server.crt", (new / "server.crt").read_bytes())]:
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, folder / name)
        with Client(served.target, certs=new, identity="zed", timeout=10) as zed:
            assert zed.add(2, 3) == 5  # a new connection: the new certificates
        call.join(15)
        assert results == [2.0]  # the call in flight was not dropped
        assert alice.add(3, 4) == 7  # nor was its connection (a new one would fail now:)
        dagen.close(alice)
        with pytest.raises(dagen.ServerUnavailable, match="TLS handshake failed"):
            Client(served.target, certs=old_side, identity="alice", timeout=10).add(1, 1)
        assert "reloaded the certificates" in served.logged()
    finally:
        served.stop()


def test_a_half_written_set_is_not_loaded(folder, tmp_path, caplog):
    reloader = CertificateReloader(folder)
    assert reloader.fetch() is None  # nothing changed
    other = tmp_path / "other"
    init_ca(other)
    issue_server(other, hosts=["localhost"], ips=[])
    shutil.copy(other / "server.crt", folder / "server.crt")  # the key is still the old one
    with caplog.at_level("WARNING", logger="dagen.server"):
        assert reloader.fetch() is None
        assert reloader.fetch() is None  # and said once
    assert "server.crt does not match server.key" in caplog.text
    assert caplog.text.count("not reloading") == 1
    shutil.copy(other / "server.key", folder / "server.key")
    assert reloader.fetch() is None  # the pair matches, but the CA did not sign it
    assert "server.crt is not signed by ca.crt" in caplog.text
    shutil.copy(other / "ca.crt", folder / "ca.crt")
    assert reloader.fetch() is not None
    assert reloader.reloads == 1
