"""The visitor's install (issue 14): `dagen build` writes build/wheels, and a fresh virtual
environment installs the client from it with one pip command, no index and no access to
this repository, then calls a real server over mutual TLS."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from conftest import DAGEN, EXAMPLE, ROOT

import dagen

# The data owner's side (the `server` extra): never in a visitor's environment.
BUILD_TIME = ("grpc_tools", "jinja2", "docstring_parser", "click")
# What `python -m venv` puts there before anything is installed.
VENV_OWN = ("pip", "setuptools", "pkg_resources", "_distutils_hack")


def _local_wheel_folders() -> list[Path]:
    """The folders of wheels on this machine that pip is set up with (`pip config list`):
    its find-links, and the folders that file:// indexes link their files in."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                          capture_output=True, text=True, check=True)
    folders: list[Path] = []
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        for item in value.strip().strip("'\"").split():
            path = Path(item.removeprefix("file://"))
            if key.endswith(".find-links"):
                folders.append(path)
            elif key.endswith("index-url") and item.startswith("file://"):
                page = next(path.glob("*/index.html"), None)  # a project's page
                link = re.search(r'href="([^"#]+)', page.read_text()) if page else None
                if page and link:
                    folders.append((page.parent / link.group(1)).resolve().parent)
    return list(dict.fromkeys(f for f in folders if f.is_dir()))


def _install_offline(python: Path, folders: list[Path], fetched: Path, *requirements: str) -> list[str]:
    """``pip install --no-index`` from ``folders`` (the wheelhouse first). A third-party
    requirement that no local folder meets (this machine's copies can be older than the
    grpcio that the build's grpcio-tools asks for) is fetched into ``fetched`` from the
    index pip is configured with, and the install tried again. Returns what was fetched."""
    got: list[str] = []
    for _ in range(8):
        links = [arg for folder in [*folders, fetched] for arg in ("--find-links", str(folder))]
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", *links,
                               *requirements], capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return got
        missing = re.search(r"No matching distribution found for (\S+)", done.stderr)
        assert missing, done.stderr
        requirement = missing.group(1)
        name = re.split(r"[<>=!~\[;]", requirement)[0].lower().replace("_", "-")
        assert name not in ("dagen-grpc", "ocean-tools-client"), f"the wheelhouse lacks {requirement}"
        fetch = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                "--only-binary", ":all:", "-d", str(fetched), requirement],
                               capture_output=True, text=True, timeout=900)
        if fetch.returncode != 0 and not os.environ.get("CI"):
            pytest.skip(f"{requirement} is in no local wheel folder ({folders[1:]}) and cannot "
                        f"be fetched: {fetch.stderr.strip()[-300:]}")
        assert fetch.returncode == 0, fetch.stderr
        got.append(requirement)
    pytest.fail(f"pip install still fails after fetching {got}")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
def test_the_visitor_installs_from_the_wheelhouse_and_calls_the_server(
        ocean_build, ocean_server, certs, tmp_path):
    wheels = ocean_build.wheelhouse
    assert wheels is not None and wheels.runtime is not None, wheels
    assert sorted(p.name for p in wheels.folder.iterdir()) == sorted(
        [wheels.client.name, wheels.runtime.name])
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    got = _install_offline(python, [wheels.folder, *_local_wheel_folders()], fetched,
                           "ocean_tools_client")

    check = textwrap.dedent(f"""
        import importlib.util, inspect, sys
        import numpy as np, pandas as pd, xarray as xr
        import dagen, ocean_tools_client
        for module in (dagen, ocean_tools_client):
            assert module.__file__.startswith({str(venv)!r}), module.__file__
        for name in {BUILD_TIME!r}:
            assert importlib.util.find_spec(name) is None, name + " is installed"
        sys.path.insert(0, {str(EXAMPLE.parent)!r})
        import ocean_tools
        for name in ocean_tools.__all__:
            a, b = getattr(ocean_tools, name), getattr(ocean_tools_client, name)
            assert inspect.signature(a) == inspect.signature(b), name
            assert a.__doc__ == b.__doc__, name
        da = xr.DataArray(np.random.default_rng(0).normal(size=(24, 3, 4)),
                          dims=("time", "lat", "lon"),
                          coords={{"time": pd.date_range("2000-01-01", periods=24, freq="MS"),
                                   "lat": [-10.0, 0.0, 10.0], "lon": np.arange(4.0)}},
                          name="sst", attrs={{"units": "degC"}})
        with ocean_tools_client.Client({ocean_server.target!r}, certs={str(certs.folder)!r},
                                       identity="alice", timeout=60) as remote:
            assert remote.sea_water_density(10.0, 35.0) == ocean_tools.sea_water_density(10.0, 35.0)
            xr.testing.assert_identical(remote.anomaly(da), ocean_tools.anomaly(da))
        print("called", len(ocean_tools.__all__))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("DAGEN_")}
    done = subprocess.run([str(python), "-c", check], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "called 6"

    # The dagen command is the data owner's: without its extra it says which to install.
    command = subprocess.run([str(venv / "bin" / "dagen"), "build", str(EXAMPLE)],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert command.returncode == 1
    assert "pip install 'dagen-grpc[server]'" in command.stderr, command.stderr
    assert "Traceback" not in command.stderr

    # An installed wheel of dagen makes the same runtime wheel again, byte for byte.
    again = tmp_path / "again"
    remake = subprocess.run(
        [str(python), "-c", "import sys, pathlib; from dagen._wheelhouse import runtime_source, "
         "write_wheel; print(write_wheel(pathlib.Path(sys.argv[1]), runtime_source()))", str(again)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert remake.returncode == 0, remake.stderr
    assert Path(remake.stdout.strip()).read_bytes() == wheels.runtime.read_bytes()

    site = next((venv / "lib").glob("python3*/site-packages"))
    own = sum(_size(p) for p in site.iterdir() if p.name.split("-")[0] in VENV_OWN)
    print(f"the visitor's site-packages: {(_size(site) - own) / 2**20:.0f} MiB "
          f"({_size(site) / 2**20:.0f} MiB with the venv's pip and setuptools)"
          + (f"; fetched from the index: {', '.join(got)}" if got else ""))


def test_the_runtime_wheel_carries_the_runtime_and_names_the_server_extra(ocean_build):
    wheels = ocean_build.wheelhouse
    assert wheels is not None and wheels.runtime is not None, wheels
    with zipfile.ZipFile(wheels.runtime) as wheel:
        names = set(wheel.namelist())
        info = f"dagen_grpc-{dagen.__version__}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert {"dagen/__init__.py", "dagen/client.py", "dagen/v1/array_pb2.py",
            "dagen/_data/protos/dagen/v1/array.proto",
            "dagen/_data/codegen/client_package/pyproject.toml.j2"} <= names
    assert not any("__pycache__" in n for n in names)
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.M)
    always = [r for r in requires if "extra ==" not in r]
    assert {re.split(r"[<>=]", r)[0] for r in always} == {
        "grpcio", "protobuf", "numpy", "xarray", "cryptography", "tqdm"}
    for name in ("grpcio-tools", "click", "jinja2", "docstring_parser"):
        assert any(r.startswith(name) and 'extra == "server"' in r for r in requires), name
    assert "dagen = dagen.__main__:main" in entry_points
    with zipfile.ZipFile(wheels.client) as wheel:
        client_metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith("/METADATA")))
    assert f"Requires-Dist: dagen-grpc>={dagen.__version__}".encode() in client_metadata


def test_build_says_when_the_runtime_wheel_cannot_be_made(tmp_path):
    """dagen run from a bare copy of its package (no pyproject.toml, no dist-info): the
    build still writes the client's wheel, and its output says the runtime's is missing."""
    bare = tmp_path / "bare" / "dagen"
    shutil.copytree(ROOT / "src" / "dagen", bare, ignore=shutil.ignore_patterns("__pycache__"))
    for folder in ("protos", "codegen"):
        shutil.copytree(ROOT / folder, bare / "_data" / folder)
    done = subprocess.run(
        [*DAGEN, "build", str(EXAMPLE), "-o", str(tmp_path / "out"), "--lock", str(tmp_path / "lock")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(bare.parent)},
    )
    assert done.returncode == 0, done.stderr
    assert "the dagen runtime's wheel could not be made" in done.stderr
    assert f"dagen runs from {bare.resolve()}" in done.stderr
    assert [p.name for p in (tmp_path / "out" / "wheels").iterdir()] == [
        f"ocean_tools_client-{dagen.__version__}+r1-py3-none-any.whl"]


def test_build_names_the_visitors_command(tmp_path):
    done = subprocess.run(
        [*DAGEN, "build", str(EXAMPLE), "-o", str(tmp_path / "out"), "--lock", str(tmp_path / "lock")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    wheels = tmp_path / "out" / "wheels"
    assert f"pip install --find-links {wheels} ocean_tools_client" in done.stdout
    assert sorted(p.name for p in wheels.iterdir()) == [
        f"dagen_grpc-{dagen.__version__}-py3-none-any.whl",
        f"ocean_tools_client-{dagen.__version__}+r1-py3-none-any.whl"]
