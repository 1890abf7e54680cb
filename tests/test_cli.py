"""The command line explains itself: help texts and the version."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DAGEN

import dagen
from dagen._cli import main

# Each command's help and what it must mention to be useful.
HELP = {
    (): [
        "secure gRPC services",
        "build",
        "serve",
        "certs",  # the commands
        "dagen certs init",
        "dagen certs client",
        "dagen serve",
        "--certs",
        "--version",
    ],
    ("build",): ["MODULE", "client package", "server module", "--out", "type annotations"],
    ("serve",): [
        "MODULE",
        "mutual TLS",
        "--certs",
        "ca.crt",
        "server.crt",
        "server.key",
        "--host",
        "--port",
        "--insecure",
        "loopback",
        "--allow-remote-insecure",
        "--workers",
        "--chunk-size",
        "--debug",
    ],
    ("certs",): ["mutual TLS", "certificate authority", "init", "server", "client", "ca.key"],
    ("certs", "init"): [
        "FOLDER",
        "certificate authority",
        "--name",
        "--days",
        "--force",
        "default: 365",
    ],
    ("certs", "server"): [
        "FOLDER",
        "server.crt",
        "server.key",
        "--host",
        "--ip",
        "--days",
        "--force",
    ],
    ("certs", "client"): [
        "FOLDER",
        "IDENTITY",
        "IDENTITY.crt",
        "IDENTITY.key",
        "--days",
        "--force",
    ],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: " ".join(c) or "dagen")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_explains_each_command(command: tuple[str, ...], flag: str) -> None:
    result = CliRunner().invoke(main, [*command, flag], prog_name="dagen")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: dagen {' '.join(command)}".rstrip() + " [OPTIONS]")
    text = " ".join(result.output.split())  # independent of where lines wrap
    missing = [word for word in HELP[command] if word not in text]
    assert not missing, f"'dagen {' '.join(command)} --help' does not mention {missing}"


def test_help_through_the_real_module_entry_point() -> None:
    done = subprocess.run([*DAGEN, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Turn annotated Python functions into secure gRPC services" in done.stdout
    for command in ("build", "serve", "certs"):
        assert f"\n  {command} " in done.stdout  # listed under Commands


def test_version_prints_dagen_version() -> None:
    done = subprocess.run([*DAGEN, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"dagen, version {dagen.__version__}"


def test_version_matches_the_installed_distribution() -> None:
    assert dagen.__version__ == importlib.metadata.version("dagen-grpc")


def test_console_script_is_installed_and_runs() -> None:
    script = Path(sys.executable).parent / "dagen"
    if not script.exists():
        pytest.skip("the dagen console script is not installed next to this interpreter")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert dagen.__version__ in done.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["deploy"], prog_name="dagen")
    assert result.exit_code == 2
    assert "No such command 'deploy'" in result.output


def test_missing_argument_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["certs", "client", "certs/"], prog_name="dagen")
    assert result.exit_code == 2
    assert "IDENTITY" in result.output


def test_the_dataset_defaults_of_dagen_serve_are_the_servers():
    from dagen._cli import DEFAULT_DATASET_IDLE_TIMEOUT, DEFAULT_MAX_DATASETS_PER_IDENTITY
    from dagen._datasets import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_PER_IDENTITY

    assert DEFAULT_DATASET_IDLE_TIMEOUT == DEFAULT_IDLE_TIMEOUT
    assert DEFAULT_MAX_DATASETS_PER_IDENTITY == DEFAULT_MAX_PER_IDENTITY


def test_the_servers_default_chunk_size_is_the_wire_default():
    from dagen._cli import DEFAULT_CHUNK_SIZE
    from dagen._security import parse_size
    from dagen._wire import DEFAULT_CHUNK_BYTES

    assert parse_size(DEFAULT_CHUNK_SIZE) == DEFAULT_CHUNK_BYTES
    assert DEFAULT_CHUNK_BYTES + 1024 < 4 << 20  # a chunk frame fits gRPC's default limit
