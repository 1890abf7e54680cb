"""The emitted .proto is the whole truth: a Node.js client built from it with stock
tools (@grpc/grpc-js, @grpc/proto-loader, protobufjs; examples/js_client) calls every
function of the example service over mutual TLS, array functions included, and gets
what the Python module computes locally. The protocol: docs/other-languages.md."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import EXAMPLE, ROOT, start_server

JS_CLIENT = ROOT / "examples" / "js_client"
NPM_TIMEOUT = 180
NETWORK_ERRORS = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network|request to \S+ failed|socket hang up|self.signed|certificate",
    re.IGNORECASE,
)


def _load_example():
    """examples/ocean_tools.py, the module the server runs, to compute locally."""
    spec = importlib.util.spec_from_file_location("ocean_tools_local", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ocean_tools = _load_example()


@pytest.fixture(scope="module")
def js_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/js_client copied to a temporary folder, its pinned packages installed
    with `npm ci` from the committed package-lock.json."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the JavaScript client example needs node and npm on PATH (Node.js 18 or later)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if not match or int(match.group(1)) < 18:
        pytest.skip(f"the JavaScript client example needs Node.js 18 or later, found {version!r}")
    folder = tmp_path_factory.mktemp("js") / "js_client"
    shutil.copytree(JS_CLIENT, folder, ignore=shutil.ignore_patterns("node_modules"))
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"`npm ci` did not finish within {NPM_TIMEOUT} s: is the npm registry reachable?")
    if done.returncode != 0:
        network = NETWORK_ERRORS.search(done.stderr)
        if network:
            pytest.skip(f"`npm ci` could not reach the npm registry ({network.group(0)}); "
                        f"its first lines:\n" + "\n".join(done.stderr.splitlines()[:4]))
        pytest.fail(f"`npm ci` failed:\n{done.stderr[-4000:]}")
    return folder


@pytest.fixture(scope="module")
def small_chunk_server(certs):
    """The example service sending 16-byte chunks: rows split into n-d blocks."""
    server = start_server(EXAMPLE, "--certs", str(certs.folder), "--chunk-size", "16")
    yield server
    server.stop()


def run_client(folder: Path, target: str, build_out: Path, certs_folder: Path,
               *options: str) -> dict[str, dict]:
    """Run call_ocean_tools.js; its JSON lines by call ("SeaWaterDensity!" for the error)."""
    done = subprocess.run(
        ["node", "call_ocean_tools.js", target, str(build_out), str(certs_folder),
         "--protos", str(ROOT / "protos"), *options],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"call_ocean_tools.js failed:\n{done.stderr}"
    assert done.stderr == "", done.stderr  # no warnings either
    calls = {}
    for line in done.stdout.splitlines():
        record = json.loads(line)
        calls[record["call"] + ("!" if "error" in record else "")] = record
    return calls


def doubles(request: dict) -> dict[str, float]:
    """Arguments of double fields as printed (JSON writes -1.0 as -1) as Python floats."""
    return {name: float(value) for name, value in request.items()}


def array(values: list, dtype: str, shape: list[int]) -> np.ndarray:
    """An array printed by the script: 64-bit counts may be decimal strings; NaN is "NaN"."""
    if dtype[1] in "Mm":  # datetime64 / timedelta64: int64 counts of the unit
        return np.array([int(v) for v in values], dtype="int64").view(dtype).reshape(shape)
    if dtype[1] == "f":
        return np.array([float(v) for v in values], dtype=dtype).reshape(shape)
    return np.array([int(v) for v in values], dtype=dtype).reshape(shape)


def received(result: dict) -> xr.DataArray:
    """The DataArray the script received, rebuilt as xarray."""
    coords = {name: (c["dims"], array(c["values"], c["dtype"], c["shape"]))
              for name, c in result["coords"].items()}
    return xr.DataArray(array(result["values"], result["dtype"], result["shape"]),
                        dims=result["dims"], coords=coords, name=result["name"],
                        attrs=result["attrs"])


def sent(request: dict, **coords: np.ndarray) -> xr.DataArray:
    """The DataArray the script sent, rebuilt from what it says it sent."""
    shape = tuple(len(coords[d]) for d in request["dims"])
    values = np.array([float(v) for v in request["values"]], dtype="<f8").reshape(shape)
    return xr.DataArray(values, dims=request["dims"], coords={d: (d, c) for d, c in coords.items()},
                        name=request["name"], attrs=request["attrs"])


@pytest.mark.parametrize("chunks", ["default", "small"])
def test_js_client_calls_every_function(chunks, js_client, ocean_build, ocean_server,
                                        small_chunk_server, certs):
    if chunks == "default":
        calls = run_client(js_client, ocean_server.target, ocean_build.out, certs.folder)
    else:  # both directions cut rows into n-d blocks: 24-byte chunks up, 16-byte ones down
        calls = run_client(js_client, small_chunk_server.target, ocean_build.out, certs.folder,
                           "--chunk-bytes", "24")
    assert set(calls) == {"SeaWaterDensity", "SeaWaterDensity!", "Histogram", "ZonalMean",
                          "Describe", "Climatology", "Anomaly"}, "every function, and the error"

    # (a) unary
    density = calls["SeaWaterDensity"]
    assert density["result"] == ocean_tools.sea_water_density(**doubles(density["request"]))

    # (b) an ndarray in, an int64 ndarray out, reassembled as a BigInt64Array
    histogram = calls["Histogram"]
    values = np.array([float(v) for v in histogram["request"]["values"]])
    assert values.shape == (1000,) and np.isnan(values[3])
    expected = ocean_tools.histogram(values, bins=histogram["request"]["bins"])
    result = histogram["result"]
    assert result["type"] == "BigInt64Array"
    assert result["dtype"] == expected.dtype.str == "<i8" and result["shape"] == [8]
    np.testing.assert_array_equal(array(result["values"], result["dtype"], result["shape"]), expected)
    if chunks == "small":
        assert histogram["chunks"] == {"sent": 334, "received": 4}  # 3 and 2 values a chunk

    # (c) a DataArray in and out
    zonal = calls["ZonalMean"]
    request = zonal["request"]
    da = sent(request, lat=np.array(request["lat"], float), lon=np.array(request["lon"], float))
    assert da.shape == (3, 4)
    xr.testing.assert_identical(received(zonal["result"]), ocean_tools.zonal_mean(da))
    if chunks == "small":
        assert zonal["chunks"]["sent"] == 3 * 2 + 1 + 2  # data: (1, 3) + (1, 1) a row; lat; lon

    # (d) the remote ValueError, from the dagen-error-bin trailer
    failed = calls["SeaWaterDensity!"]
    with pytest.raises(ValueError) as raised:
        ocean_tools.sea_water_density(**doubles(failed["request"]))
    message = str(raised.value)
    assert failed["error"] == {
        "code": 2,
        "code_name": "UNKNOWN",
        "details": f"ValueError: {message}",
        "remote_error": {"type": "ValueError", "module": "builtins", "message": message,
                         "traceback": "", "function": "sea_water_density",
                         "args": repr((message,)),
                         "bases": ["builtins.Exception", "builtins.BaseException"]},
    }

    # (e) unary with a list and a dict
    describe = calls["Describe"]
    assert describe["result"] == ocean_tools.describe(describe["request"]["names"],
                                                      describe["request"]["units"]["value"])

    # (f) a datetime64[ns] coordinate in and out
    for name, function in (("Climatology", ocean_tools.climatology), ("Anomaly", ocean_tools.anomaly)):
        request = calls[name]["request"]
        time = np.array([int(t) for t in request["time_ns"]], dtype="int64").view("M8[ns]")
        da = sent(request, time=time, lat=np.array(request["lat"], float))
        assert da.shape == (24, 3)
        xr.testing.assert_identical(received(calls[name]["result"]), function(da))
