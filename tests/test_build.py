"""`dagen build`: what it writes, what it refuses, and that the output works."""

import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
import xarray as xr
from conftest import DAGEN, EXAMPLE, ROOT

sys.path.insert(0, str(EXAMPLE.parent))
ocean_tools = importlib.import_module("ocean_tools")


def test_build_writes_contract_compiled_modules_server_and_client(ocean_build):
    out = ocean_build.out
    for name in ["ocean_tools.proto", "ocean_tools_pb2.py", "ocean_tools_pb2_grpc.py",
                 "ocean_tools_server.py", "ocean_tools_client/pyproject.toml",
                 "ocean_tools_client/ocean_tools_client/__init__.py",
                 "ocean_tools_client/ocean_tools_client/ocean_tools_pb2.py",
                 "ocean_tools_client/ocean_tools_client/ocean_tools_pb2_grpc.py"]:
        assert (out / name).is_file(), name
    proto = (out / "ocean_tools.proto").read_text()
    assert "package ocean_tools;" in proto
    assert 'import "dagen/v1/xarray.proto";' in proto
    assert "rpc Anomaly(stream AnomalyInput) returns (stream AnomalyOutput);" in proto
    assert "rpc SeaWaterDensity(SeaWaterDensityRequest) returns (SeaWaterDensityResponse);" in proto
    assert "// Departure of each time step from its month's climatology." in proto
    assert "// Sea pressure in dbar." in proto  # parameter docs become field comments
    assert "optional bool skipna = 3;" in proto
    client_pyproject = (out / "ocean_tools_client/pyproject.toml").read_text()
    assert '"dagen-grpc>=' in client_pyproject
    assert "xarray" not in client_pyproject.split("dependencies")[1]  # only what the client needs


def test_client_functions_have_the_original_signatures_and_docstrings(ocean_client_module):
    for name in ocean_tools.__all__:
        original = getattr(ocean_tools, name)
        for generated in (getattr(ocean_client_module, name), getattr(ocean_client_module.Client, name)):
            # the same text, indented as the generated def's body
            assert inspect.getdoc(generated) == inspect.getdoc(original)
            assert generated.__name__ == original.__name__
        assert getattr(ocean_client_module, name).__doc__ == original.__doc__  # same indent
        assert inspect.signature(getattr(ocean_client_module, name)) == inspect.signature(original)
        method = inspect.signature(getattr(ocean_client_module.Client, name))
        assert list(method.parameters)[0] == "_dagen_self"  # a name no served module may use
        assert method.replace(parameters=list(method.parameters.values())[1:]) == inspect.signature(original)


def test_signature_kinds_and_defaults_survive(echo_client_module):
    sys.path.insert(0, str(ROOT / "tests" / "services"))
    echo_service = importlib.import_module("echo_service")
    for name in ("positional", "scalars", "nested", "echo_many", "nothing"):
        assert inspect.signature(getattr(echo_client_module, name)) == inspect.signature(
            getattr(echo_service, name)
        )


def _build(tmp_path, source: str):
    module = tmp_path / "bad_tools.py"
    module.write_text(textwrap.dedent(source))
    return subprocess.run([*DAGEN, "build", str(module), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)


@pytest.mark.parametrize(
    ("source", "line", "expected"),
    [
        ("""\
            import pandas as pd

            def ok(a: int) -> int:
                return a

            def table(
                n: int,
                frame: pd.Index,
            ) -> int:
                return n
            """, 8, r"bad_tools\.table, parameter 'frame': annotation pandas\.Index: .*send it as a pandas\.Series"),
        ("""\
            def untyped(a, b: int) -> int:
                return b
            """, 1, r"bad_tools\.untyped, parameter 'a': missing annotation"),
        ("""\
            def star(*values: int) -> int:
                return 0
            """, 1, r"bad_tools\.star, parameter 'values': \*args and \*\*kwargs"),
        ("""\
            def default_none(dim: str = None) -> int:
                return 0
            """, 1, r"parameter 'dim': the default is None, so the annotation must allow it"),
        ("""\
            def no_return(a: int):
                return a
            """, 1, r"bad_tools\.no_return: missing return annotation"),
        ("""\
            def complex_numbers(a: complex) -> int:
                return 0
            """, 1, r"parameter 'a': annotation complex: complex is not a supported type"),
    ],
)
def test_unsupported_modules_are_refused_with_module_function_parameter_and_line(
    tmp_path, source, line, expected
):
    done = _build(tmp_path, source)
    assert done.returncode != 0
    assert re.search(expected, done.stderr), done.stderr
    assert f"bad_tools.py:{line}:" in done.stderr
    assert not (tmp_path / "out").exists()


def test_module_without_functions_is_refused(tmp_path):
    done = _build(tmp_path, "X = 1\n")
    assert done.returncode != 0
    assert "no public functions" in done.stderr


def test_build_by_module_name(tmp_path):
    done = subprocess.run([*DAGEN, "build", "echo_service", "-o", str(tmp_path)],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(ROOT / "tests" / "services"), os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "echo_service.proto").is_file()


def test_generated_server_module_runs(ocean_build, ocean_client_module, certs):
    """`python -m ocean_tools_server` from the build folder serves the module."""
    server = start_server_module(ocean_build.out, certs)
    try:
        with ocean_client_module.Client(f"localhost:{server[1]}", certs=certs.folder,
                                        identity="alice") as client:
            assert client.sea_water_density(10.0, 35.0) == pytest.approx(1027.0)
    finally:
        server[0].terminate()
        server[0].wait(timeout=15)


def start_server_module(build_dir, certs):
    process = subprocess.Popen(
        [sys.executable, "-m", "ocean_tools_server", "--certs", str(certs.folder), "--port", "0"],
        cwd=build_dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = process.stdout.readline()
    match = re.search(r":(\d+) ", line)
    assert match, line
    return process, int(match.group(1))


def test_stock_protobuf_client_calls_every_kind_of_rpc(ocean_build, ocean_server, certs):
    """The .proto is the whole truth: protoc's own classes and stub, with chunks built
    as plain protobuf messages (no dagen code), can call unary and streaming rpcs."""
    sys.path.insert(0, str(ocean_build.out))
    try:
        pb2 = importlib.import_module("ocean_tools_pb2")
        pb2_grpc = importlib.import_module("ocean_tools_pb2_grpc")
    finally:
        sys.path.remove(str(ocean_build.out))
    from dagen.v1 import array_pb2

    credentials = grpc.ssl_channel_credentials(
        (certs.folder / "ca.crt").read_bytes(),
        (certs.folder / "alice.key").read_bytes(),
        (certs.folder / "alice.crt").read_bytes(),
    )
    with grpc.secure_channel(f"localhost:{ocean_server.port}", credentials) as channel:
        stub = pb2_grpc.OceanToolsStub(channel)
        reply = stub.SeaWaterDensity(pb2.SeaWaterDensityRequest(temperature=10.0, salinity=35.0))
        assert reply.result == pytest.approx(1027.0)

        values = np.arange(100, dtype="<f8")
        request = pb2.HistogramRequest(bins=4)
        request.values.CopyFrom(array_pb2.NDArray(id=7, dtype="<f8", shape=[100], nbytes=800))
        frames = [pb2.HistogramInput(request=request)]
        for start in range(0, 100, 30):  # protobuf-encoded chunks, in reverse order
            block = values[start:start + 30]
            frames.insert(1, pb2.HistogramInput(chunk=array_pb2.Chunk(
                array_id=7, start=[start], shape=[len(block)], data=block.tobytes())))
        replies = list(stub.Histogram(iter(frames)))
        header = replies[0].response.result
        assert header.dtype == np.dtype(int).str and list(header.shape) == [4]
        data = b"".join(r.chunk.data for r in replies[1:])
        np.testing.assert_array_equal(np.frombuffer(data, header.dtype), [25, 25, 25, 25])


def test_real_dataarray_through_the_example(ocean, ocean_client_module):
    import pandas as pd

    time = pd.date_range("2000-01-01", periods=24, freq="MS")
    da = xr.DataArray(np.random.default_rng(1).normal(size=(24, 3, 4)), dims=("time", "lat", "lon"),
                      coords={"time": time, "lat": [-10.0, 0.0, 10.0], "lon": np.arange(4.0)},
                      name="sst", attrs={"units": "degC"})
    xr.testing.assert_identical(ocean.anomaly(da), ocean_tools.anomaly(da))
    xr.testing.assert_identical(ocean.climatology(da), ocean_tools.climatology(da))
    xr.testing.assert_identical(ocean.zonal_mean(da), ocean_tools.zonal_mean(da))
    np.testing.assert_array_equal(ocean.histogram(da.values.ravel(), bins=5),
                                  ocean_tools.histogram(da.values.ravel(), bins=5))


RUFF_FORMAT = ["format", "--check", "--isolated", "--line-length", "100"]


def test_builds_are_reproducible_and_formatted(tmp_path):
    """The same module and lock give byte-identical output in any folder, formatted."""
    import shutil

    from ruff.__main__ import find_ruff_bin

    outputs = []
    for place in ("one", "elsewhere/deeper/two"):
        folder = tmp_path / place
        folder.mkdir(parents=True)
        for name in ("ocean_tools.py", "ocean_tools.dagen.lock"):
            shutil.copy(EXAMPLE.parent / name, folder / name)
        out = folder / "build"
        done = subprocess.run([*DAGEN, "build", str(folder / "ocean_tools.py"), "--out", str(out)],
                              capture_output=True, text=True, cwd=folder)
        assert done.returncode == 0, done.stderr
        files = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        outputs.append(files)
        check = subprocess.run([find_ruff_bin(), *RUFF_FORMAT, str(out)], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert str(tmp_path) not in b"".join(files.values()).decode(errors="replace")
        long = [line for p, text in files.items() if p.suffix == ".py" and "pb2" not in p.name
                for line in text.decode().splitlines() if len(line) > 100]
        assert not long, long
    assert outputs[0].keys() == outputs[1].keys()
    for path in outputs[0]:
        assert outputs[0][path] == outputs[1][path], path


def test_the_server_module_finds_the_module_relative_to_itself(tmp_path):
    """The build folder moved elsewhere with the module beside it still serves."""
    import shutil

    (tmp_path / "src").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "src" / "ocean_tools.py")
    out = tmp_path / "src" / "build"
    done = subprocess.run([*DAGEN, "build", str(tmp_path / "src" / "ocean_tools.py"), "--out",
                           str(out), "--lock", str(tmp_path / "x.lock")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "src", moved)
    check = subprocess.run([sys.executable, "-c", "import ocean_tools_server as s; print(s.ocean_tools.__file__)"],
                           capture_output=True, text=True, cwd=moved / "build",
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")})
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(moved / "ocean_tools.py")


def test_an_import_time_failure_of_the_generated_code_is_a_build_error(tmp_path, monkeypatch):
    """dagen build imports what it generated (in a fresh interpreter) before it reports
    success: here the served module fails when imported anywhere but in the build."""
    import dagen
    from dagen._build import build

    module = tmp_path / "fragile.py"
    module.write_text(textwrap.dedent("""\
        import os

        if os.environ.get("FRAGILE_OK") != "1":
            raise RuntimeError("fragile needs FRAGILE_OK=1")


        def f(x: int) -> int:
            return x
        """))
    monkeypatch.setenv("FRAGILE_OK", "1")
    build(str(module), tmp_path / "ok", lock=tmp_path / "x.lock")  # imports fine
    monkeypatch.setenv("FRAGILE_OK", "0")  # what the subprocess sees
    with pytest.raises(dagen.BuildError, match="does not import: RuntimeError: fragile needs"):
        build(str(module), tmp_path / "bad", lock=tmp_path / "x.lock")


def test_client_docstrings_drop_the_parameters_the_client_does_not_take(tmp_path):
    from conftest import import_client

    from dagen._build import build

    module = tmp_path / "documented.py"
    module.write_text(textwrap.dedent('''\
        import dagen


        def run(n: int, progress: dagen.Progress = dagen.NO_PROGRESS, *, label: str = "") -> int:
            """Count to n.

            Parameters
            ----------
            n : int
                How far.
            progress : dagen.Progress
                Filled in by the server.

                Reports each step.
            label : str
                A label.

            Returns
            -------
            int
                n.
            """
            return n
        '''))
    result = build(str(module), tmp_path / "out", lock=tmp_path / "x.lock")
    client = import_client(result.client, "documented_client")
    for fn in (client.run, client.Client.run):
        doc = inspect.getdoc(fn)
        assert "progress" not in doc and "Reports each step" not in doc
        assert "n : int\n    How far.\nlabel : str\n    A label.\n\nReturns" in doc
    assert list(inspect.signature(client.run).parameters) == ["n", "label"]
