"""Serving: `dagen serve` leaves nothing behind in the temporary folder, however it ends,
and the runtime that generated server modules import needs no command line (no click)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DAGEN, SERVICES
from guarded import wait_until

ECHO = SERVICES / "echo_service.py"


def serve_with_tmpdir(tmpdir: Path, *args: str) -> subprocess.Popen[str]:
    """`dagen serve` of the echo service whose temporary folder is ``tmpdir``."""
    return subprocess.Popen(
        [*DAGEN, "serve", str(ECHO), "--host", "127.0.0.1", *args],
        env={**os.environ, "TMPDIR": str(tmpdir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"dagen serve still ran {timeout} s later")
    return process.returncode, stdout, stderr


def build_folders(tmpdir: Path) -> list[Path]:
    return sorted(tmpdir.glob("dagen-serve-*"))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stopped_server_leaves_no_build_folder(tmp_path: Path, stop: signal.Signals) -> None:
    process = serve_with_tmpdir(tmp_path, "--insecure", "--port", "0")
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert "dagen: serving" in banner, banner
    # the folder it built the service in is gone while it serves, so that not even a
    # SIGKILL can leave it behind
    assert build_folders(tmp_path) == []
    process.send_signal(stop)
    code, stdout, stderr = finish(process)
    assert code == 0, stderr
    assert "dagen: stopping" in stdout
    assert build_folders(tmp_path) == []


def test_a_server_stopped_while_building_leaves_no_build_folder(tmp_path: Path) -> None:
    process = serve_with_tmpdir(tmp_path, "--insecure", "--port", "0")
    # the moment its build folder exists, it is told to stop
    assert wait_until(lambda: build_folders(tmp_path) != [] or process.poll() is not None,
                      timeout=60, step=0.005)
    assert process.poll() is None, "dagen serve ended before it made its build folder"
    process.send_signal(signal.SIGTERM)
    code, stdout, stderr = finish(process)
    assert "dagen: serving" not in stdout
    assert code != 0  # it did not start
    assert "Traceback" not in stderr, stderr
    assert build_folders(tmp_path) == []


def test_a_server_that_cannot_start_leaves_no_build_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-certs"
    process = serve_with_tmpdir(tmp_path, "--certs", str(missing), "--port", "0")
    code, stdout, stderr = finish(process)
    assert code != 0
    assert "Error: " in stderr and "Traceback" not in stderr, stderr
    assert "dagen: serving" not in stdout
    assert build_folders(tmp_path) == []


def test_the_server_runtime_imports_without_click() -> None:
    """Generated server modules import dagen.server: it must not pull in the command line."""
    code = (
        "import sys\n"
        "sys.modules['click'] = None  # importing click now fails\n"
        "import dagen.server\n"
        "assert 'dagen._cli' not in sys.modules, 'dagen.server imported the command line'\n"
        "for name in dagen.server.__all__:\n"
        "    getattr(dagen.server, name)\n"
        "print('imported')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


def test_serving_generators_in_worker_processes_is_refused_with_a_clear_error(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        [*DAGEN, "serve", str(SERVICES / "stream_service.py"), "--insecure", "--port", "0",
         "--executor", "process"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    code, stdout, stderr = finish(process)
    assert code != 0
    assert "Traceback" not in stderr, stderr
    assert "forever(): class methods and generators run only with --executor thread" in stderr
    assert "dagen: serving" not in stdout
    assert build_folders(tmp_path) == []
