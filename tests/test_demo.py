"""The README's `make demo` job, run end to end in a temporary folder."""

import subprocess
import sys

from conftest import ROOT


def test_demo_runs_end_to_end(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "serving ocean_tools.OceanTools on 127.0.0.1:" in out
    assert "mutual TLS" in out
    assert "anomaly: sst {'time': 36, 'lat': 90, 'lon': 180}" in out
    assert "a remote ValueError arrives as ValueError: salinity must not be negative" in out
    assert "demo finished: the server is stopped" in out
    assert (tmp_path / "certs" / "alice.key").stat().st_mode & 0o077 == 0
    # the client went into the visitor's folder, not into the environment running the tests
    assert (tmp_path / "visitor-packages" / "ocean_tools_client").is_dir()
    installed = subprocess.run([sys.executable, "-m", "pip", "show", "ocean_tools_client"],
                               capture_output=True, text=True)
    assert installed.returncode != 0, installed.stdout
