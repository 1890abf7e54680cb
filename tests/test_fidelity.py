"""Issue 14 §3: what real data needs to come back exactly, through a real server over
mutual TLS (the golden module tests/inputs/fidelity/ served by `dagen serve`)."""

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import import_client, start_server
from xarray.testing import assert_identical

import dagen
from dagen._build import build

INPUTS = Path(__file__).parent / "inputs" / "fidelity"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ERA_INTERIM = DATA / "eraint_uvz.nc"


@pytest.fixture(scope="module")
def remote(tmp_path_factory, certs):
    out = tmp_path_factory.mktemp("fidelity")
    lock = out / "fidelity.dagen.lock"
    result = build(str(INPUTS / "fidelity.py"), out / "build", lock=lock)
    server = start_server(INPUTS / "fidelity.py", "--certs", str(certs.folder), "--lock", str(lock))
    client = import_client(result.client, "fidelity_client").Client(
        server.target, certs=certs.folder, identity="alice", timeout=60
    )
    yield client
    dagen.close(client)
    server.stop()


@pytest.fixture(scope="module")
def era(tmp_path_factory):
    if not ERA_INTERIM.is_file():
        pytest.skip(f"the ERA-Interim sample {ERA_INTERIM} is absent (a clone outside this machine)")
    copy = tmp_path_factory.mktemp("era") / ERA_INTERIM.name  # the data folder is read-only
    shutil.copy(ERA_INTERIM, copy)
    with pytest.warns(xr.SerializationWarning), xr.open_dataset(copy) as ds:
        return ds.load()


def test_index_set_on_a_non_dimension_coordinate_survives(remote, era):
    ds = era.assign_coords(hpa=("level", era.level.values * 100)).set_xindex("hpa")
    out = remote.echo_dataset(ds)
    assert_identical(out, ds)
    assert list(out.xindexes) == list(ds.xindexes)
    assert float(out.z.sel(hpa=50000, month=1).mean()) == float(ds.z.sel(level=500, month=1).mean())
    da = ds.z.isel(month=0, latitude=slice(0, 3), longitude=slice(0, 4))
    assert_identical(remote.echo_dataarray(da), da)


def test_index_kept_by_rename_dims_survives(remote, era):
    ds = era[["u"]].rename_dims(level="plev")
    assert "level" in ds.xindexes  # a coordinate "level" on dimension "plev", indexed
    out = remote.echo_dataset(ds)
    assert_identical(out, ds)
    assert_identical(remote.echo_dataarray(ds.u), ds.u)


def test_dropped_index_of_a_dimension_coordinate_stays_dropped(remote, era):
    da = era.v.isel(latitude=slice(0, 5)).drop_indexes("longitude")
    out = remote.echo_dataarray(da)
    assert "longitude" not in out.xindexes
    assert_identical(out, da)


def test_dict_result_keeps_its_order(remote, era):
    out = remote.per_level(era, [200, 850, 500])
    assert list(out) == ["200", "850", "500"]
    assert out == {str(k): float(era.z.sel(level=k).mean()) for k in (200, 850, 500)}
    assert list(remote.per_level(era, [850, 200])) == ["850", "200"]


def test_datetime64_is_accepted_for_a_datetime_parameter(remote):
    time = xr.date_range("1979-01-01", periods=3, freq="6h").values
    assert remote.hours_since(time[2]) == 12.0  # ds.time.values[i] as the user has it
    assert remote.hours_since(np.datetime64("2000-01-01"), start=np.datetime64("1999-12-31")) == 24.0
    assert remote.hours_since(dt.datetime(1979, 1, 1, 3)) == 3.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.datetime64("NaT"), "NaT"),
        (np.datetime64("1979-01-01T00:00:00.000000001"), "below the microsecond"),
        (np.datetime64("10000-01-01"), "years 1 to 9999"),
    ],
)
def test_datetime64_without_a_datetime_is_refused_with_the_reason(remote, value, message):
    with pytest.raises(TypeError, match=message):
        remote.hours_since(value)
