"""Shared fixtures: real certificates, real builds, real `dagen serve` subprocesses."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dagen._build import build
from dagen._security import init_ca, issue_client, issue_server

ROOT = Path(__file__).resolve().parents[1]
SERVICES = Path(__file__).resolve().parent / "services"
EXAMPLE = ROOT / "examples" / "ocean_tools.py"
SHARED_DATA = ROOT.parent / "shared" / "data"
DAGEN = [sys.executable, "-m", "dagen._cli"]


@dataclass
class Certs:
    folder: Path  # ca, server, alice and bob
    other: Path  # another CA, with its own client "mallory"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    folder = tmp_path_factory.mktemp("certs")
    init_ca(folder)
    issue_server(folder, hosts=["localhost"], ips=["127.0.0.1", "::1"])
    issue_client(folder, "alice")
    issue_client(folder, "bob")
    other = tmp_path_factory.mktemp("other-ca")
    init_ca(other, name="someone else's CA")
    issue_server(other, hosts=["localhost"], ips=["127.0.0.1"])
    issue_client(other, "mallory")
    return Certs(folder, other)


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM (a server's graceful stop), then SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_server(module: Path, *args: str, log: Path | None = None) -> Server:
    """`dagen serve MODULE --port 0 ...` in a subprocess; waits for its address line.
    Its log (stderr) goes to ``log`` when given."""
    process = subprocess.Popen(
        [*DAGEN, "serve", str(module), "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE, text=True,
        stderr=subprocess.DEVNULL if log is None else log.open("w"),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"dagen serve did not start: {line!r}")
    return Server(process, int(match.group(1)))


@pytest.fixture(scope="session")
def echo_server(certs: Certs) -> Iterator[Server]:
    server = start_server(SERVICES / "echo_service.py", "--certs", str(certs.folder))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ocean_server(certs: Certs) -> Iterator[Server]:
    server = start_server(EXAMPLE, "--certs", str(certs.folder))
    yield server
    server.stop()


def import_client(project: Path, package: str):
    """Import a generated client package from its project folder."""
    sys.path.insert(0, str(project))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(project))


@pytest.fixture(scope="session")
def echo_build(tmp_path_factory: pytest.TempPathFactory):
    return build(str(SERVICES / "echo_service.py"), tmp_path_factory.mktemp("echo-build"))


@pytest.fixture(scope="session")
def ocean_build(tmp_path_factory: pytest.TempPathFactory):
    return build(str(EXAMPLE), tmp_path_factory.mktemp("ocean-build"))


@pytest.fixture(scope="session")
def echo_client_module(echo_build):
    return import_client(echo_build.client, "echo_service_client")


@pytest.fixture(scope="session")
def ocean_client_module(ocean_build):
    return import_client(ocean_build.client, "ocean_tools_client")


@pytest.fixture(scope="session")
def progress_build(tmp_path_factory: pytest.TempPathFactory):
    return build(str(SERVICES / "progress_service.py"), tmp_path_factory.mktemp("progress-build"))


@pytest.fixture(scope="module")
def progress_server(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """tests/services/progress_service.py served with 12 workers; its log at ``.log``."""
    log = tmp_path_factory.mktemp("progress-server") / "server.log"
    server = start_server(SERVICES / "progress_service.py", "--certs", str(certs.folder),
                          "--workers", "12", log=log)
    server.log = log  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def progress_client_module(progress_build):
    return import_client(progress_build.client, "progress_service_client")


@pytest.fixture(scope="session")
def guarded_build(tmp_path_factory: pytest.TempPathFactory):
    """The service of the policy, hostile-input, fault and load tests (tests/guarded.py)."""
    return build(str(SERVICES / "guarded_service.py"), tmp_path_factory.mktemp("guarded-build"))


@pytest.fixture(scope="session")
def guarded_client_module(guarded_build):
    return import_client(guarded_build.client, "guarded_service_client")


@pytest.fixture(scope="session")
def echo(echo_client_module, echo_server: Server, certs: Certs):
    """A client of the echo service as alice, over mutual TLS."""
    with echo_client_module.Client(echo_server.target, certs=certs.folder, identity="alice",
                                   timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def ocean(ocean_client_module, ocean_server: Server, certs: Certs):
    with ocean_client_module.Client(ocean_server.target, certs=certs.folder, identity="alice",
                                    timeout=120) as client:
        yield client


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("DAGEN_"):
            monkeypatch.delenv(name)
    return monkeypatch


# -- figures ---------------------------------------------------------------------------------
# Tests that measure (latencies, RSS, cancellation times) print their figures; pytest
# would hide them for passing tests, so they are shown in a summary section at the end.

_FIGURE_MODULES = ("test_load.py", "test_faults.py", "test_cancel.py", "test_streams.py",
                   "test_hostile.py", "test_progress.py", "test_wheelhouse.py", "test_cluster.py",
                   "test_futures.py")
_figures: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.capstdout.strip():
        if report.nodeid.split("::")[0].endswith(_FIGURE_MODULES):
            _figures.append((report.nodeid, report.capstdout.strip()))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's object
    if _figures:
        terminalreporter.section("figures measured by the tests")
        for nodeid, text in _figures:
            terminalreporter.write_line(nodeid)
            for line in text.splitlines():
                terminalreporter.write_line(f"    {line}")
