"""`dagen certs init/server/client` through the real command line."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import DAGEN
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dagen._cli import main

SKEW = dt.timedelta(minutes=5)  # not_valid_before is backdated by this much
TOLERANCE = dt.timedelta(seconds=5)


def run(*args: str | Path) -> Result:
    """`dagen ARGS` in process (click's runner): fast, and stderr kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args])


def run_subprocess(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m dagen._cli ARGS` in a subprocess with umask 0, so that only dagen
    itself can make private keys private."""
    return subprocess.run(
        [*DAGEN, *map(str, args)], capture_output=True, text=True, timeout=60, umask=0
    )


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def common_name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value  # type: ignore[return-value]


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def lifetime(cert: x509.Certificate) -> dt.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def init(folder: Path, *args: str) -> None:
    result = run("certs", "init", folder, *args)
    assert result.exit_code == 0, result.output


def failure(result: Result) -> str:
    """The error message of a refused command, which must not be a crash."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result.output


# -- one real run of the three commands, checked from every side ---------------------------------


@dataclass
class Issued:
    folder: Path
    outputs: list[str]
    started: dt.datetime


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    folder = tmp_path_factory.mktemp("cli-certs") / "certs"  # created by `certs init`
    started = dt.datetime.now(dt.UTC)
    outputs = []
    for args in (
        ("certs", "init", folder),
        (
            "certs",
            "server",
            folder,
            "--host",
            "localhost",
            "--host",
            "svc.example.org",
            "--ip",
            "127.0.0.1",
            "--ip",
            "::1",
        ),
        ("certs", "client", folder, "alice"),
    ):
        done = run_subprocess(*args)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    return Issued(folder, outputs, started)


def test_files_exist_and_outputs_name_them(issued: Issued) -> None:
    names = {p.name for p in issued.folder.iterdir()}
    assert names == {"ca.crt", "ca.key", "server.crt", "server.key", "alice.crt", "alice.key"}
    init_out, server_out, client_out = issued.outputs
    assert str(issued.folder / "ca.crt") in init_out and "0600" in init_out
    assert str(issued.folder / "server.crt") in server_out
    assert "svc.example.org" in server_out and "::1" in server_out
    assert str(issued.folder / "alice.crt") in client_out and "'alice'" in client_out


@pytest.mark.parametrize("name", ["ca.key", "server.key", "alice.key"])
def test_private_keys_are_mode_0600_even_with_umask_0(issued: Issued, name: str) -> None:
    assert mode(issued.folder / name) == 0o600


@pytest.mark.parametrize("stem", ["ca", "server", "alice"])
def test_each_key_matches_its_certificate(issued: Issued, stem: str) -> None:
    cert = load_cert(issued.folder / f"{stem}.crt")
    key = load_key(issued.folder / f"{stem}.key")
    assert isinstance(key.curve, ec.SECP256R1)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize("stem", ["ca", "server", "alice"])
def test_default_validity_is_365_days_plus_skew(issued: Issued, stem: str) -> None:
    cert = load_cert(issued.folder / f"{stem}.crt")
    assert abs(lifetime(cert) - (dt.timedelta(days=365) + SKEW)) < TOLERANCE
    # valid right now, backdated by about the skew allowance
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    assert abs(issued.started - SKEW - cert.not_valid_before_utc) < dt.timedelta(seconds=30)


def test_ca_is_a_self_signed_ca(issued: Issued) -> None:
    ca = load_cert(issued.folder / "ca.crt")
    assert common_name(ca) == "dagen CA"
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign


def test_server_certificate_has_the_sans_and_server_auth(issued: Issued) -> None:
    cert = load_cert(issued.folder / "server.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["localhost", "svc.example.org"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert common_name(cert) == "localhost"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_client_certificate_has_identity_cn_and_client_auth(issued: Issued) -> None:
    cert = load_cert(issued.folder / "alice.crt")
    assert common_name(cert) == "alice"
    assert eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("stem", ["server", "alice"])
def test_certificates_are_signed_by_the_ca(issued: Issued, stem: str, tmp_path: Path) -> None:
    ca = load_cert(issued.folder / "ca.crt")
    cert = load_cert(issued.folder / f"{stem}.crt")
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # A CA with the same name but another key did not sign it: the check is the signature.
    impostor = tmp_path / "impostor"
    init(impostor)
    assert load_cert(impostor / "ca.crt").subject == ca.subject
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(load_cert(impostor / "ca.crt"))


# -- options --------------------------------------------------------------------------------------


def test_days_changes_the_validity(tmp_path: Path) -> None:
    init(tmp_path, "--days", "30", "--name", "Test CA")
    assert run("certs", "server", tmp_path, "--ip", "127.0.0.1", "--days", "7").exit_code == 0
    assert run("certs", "client", tmp_path, "bob", "--days", "2").exit_code == 0
    for stem, days in (("ca", 30), ("server", 7), ("bob", 2)):
        cert = load_cert(tmp_path / f"{stem}.crt")
        assert abs(lifetime(cert) - (dt.timedelta(days=days) + SKEW)) < TOLERANCE, stem
    assert common_name(load_cert(tmp_path / "ca.crt")) == "Test CA"
    # an IP-only server certificate is named after its first IP
    server = load_cert(tmp_path / "server.crt")
    assert common_name(server) == "127.0.0.1"
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []


@pytest.mark.parametrize("days", ["0", "-1", "36501", "many"])
def test_days_out_of_range_is_a_usage_error(tmp_path: Path, days: str) -> None:
    result = run("certs", "init", tmp_path / "ca", "--days", days)
    assert result.exit_code == 2
    assert "--days" in result.output
    assert not (tmp_path / "ca" / "ca.key").exists()


# -- refusals -------------------------------------------------------------------------------------


def test_init_refuses_to_overwrite_the_ca_key(tmp_path: Path) -> None:
    init(tmp_path)
    before = snapshot(tmp_path)
    message = failure(run("certs", "init", tmp_path))
    assert str(tmp_path / "ca.key") in message and "--force" in message
    assert snapshot(tmp_path) == before  # neither the key nor the certificate changed


def test_server_refuses_to_overwrite_its_key(tmp_path: Path) -> None:
    init(tmp_path)
    assert run("certs", "server", tmp_path, "--host", "localhost").exit_code == 0
    before = snapshot(tmp_path)
    message = failure(run("certs", "server", tmp_path, "--host", "other.example.org"))
    assert str(tmp_path / "server.key") in message and "--force" in message
    assert snapshot(tmp_path) == before


def test_client_refuses_to_overwrite_its_key(tmp_path: Path) -> None:
    init(tmp_path)
    assert run("certs", "client", tmp_path, "alice").exit_code == 0
    before = snapshot(tmp_path)
    message = failure(run("certs", "client", tmp_path, "alice"))
    assert str(tmp_path / "alice.key") in message and "--force" in message
    assert snapshot(tmp_path) == before


def test_force_replaces_keys_and_makes_them_private_again(tmp_path: Path) -> None:
    init(tmp_path)
    assert run("certs", "client", tmp_path, "alice").exit_code == 0
    before = snapshot(tmp_path)
    for name in ("ca.key", "alice.key"):
        os.chmod(tmp_path / name, 0o644)
    assert run("certs", "init", tmp_path, "--force").exit_code == 0
    assert run("certs", "client", tmp_path, "alice", "--force").exit_code == 0
    after = snapshot(tmp_path)
    for name in ("ca.key", "ca.crt", "alice.key", "alice.crt"):
        assert after[name] != before[name], name
    for name in ("ca.key", "alice.key"):
        assert mode(tmp_path / name) == 0o600, name
    load_cert(tmp_path / "alice.crt").verify_directly_issued_by(load_cert(tmp_path / "ca.crt"))


@pytest.mark.parametrize(
    "identity",
    [
        "ca",
        "server",
        "../escape",
        "a/b",
        ".hidden",
        "_under",
        "has space",
        "semi;colon",
        "x" * 65,
        "é",
    ],
)
def test_bad_identity_names_are_refused(tmp_path: Path, identity: str) -> None:
    folder = tmp_path / "certs"
    init(folder)
    before = snapshot(folder)
    message = failure(run("certs", "client", folder, identity))
    assert "is not a usable identity" in message and repr(identity) in message
    assert snapshot(folder) == before  # in particular ca.key is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certs"]  # nothing escaped


@pytest.mark.parametrize("identity", ["bob", "alice.smith@lab-1", "A_9", "7", "x" * 64])
def test_good_identity_names_are_accepted(tmp_path: Path, identity: str) -> None:
    init(tmp_path)
    result = run("certs", "client", tmp_path, identity)
    assert result.exit_code == 0, result.output
    assert common_name(load_cert(tmp_path / f"{identity}.crt")) == identity
    assert mode(tmp_path / f"{identity}.key") == 0o600


def test_server_without_host_or_ip_is_refused(tmp_path: Path) -> None:
    init(tmp_path)
    message = failure(run("certs", "server", tmp_path))
    assert "--host" in message and "--ip" in message
    assert not (tmp_path / "server.key").exists() and not (tmp_path / "server.crt").exists()


def test_server_with_a_bad_ip_is_refused(tmp_path: Path) -> None:
    init(tmp_path)
    message = failure(run("certs", "server", tmp_path, "--host", "localhost", "--ip", "300.1.1.1"))
    assert "'300.1.1.1' is not an IP address" in message
    assert not (tmp_path / "server.key").exists()


@pytest.mark.parametrize(
    "args", [("client", "alice"), ("server", "--host", "localhost")], ids=["client", "server"]
)
@pytest.mark.parametrize("exists", [True, False], ids=["empty-folder", "no-folder"])
def test_issuing_before_init_says_to_run_init(
    tmp_path: Path, args: tuple[str, ...], exists: bool
) -> None:
    folder = tmp_path / "certs"
    if exists:
        folder.mkdir()
    message = failure(run("certs", args[0], folder, *args[1:]))
    assert f"dagen certs init {folder}" in message
    assert str(folder / "ca.crt") in message and "missing" in message
    assert list(tmp_path.iterdir()) == ([folder] if exists else [])
    if exists:
        assert list(folder.iterdir()) == []


def test_refusals_from_the_real_command_exit_1_on_stderr(tmp_path: Path) -> None:
    done = run_subprocess("certs", "client", tmp_path, "alice")
    assert done.returncode == 1
    assert "Error:" in done.stderr and "dagen certs init" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
