"""Large payloads and real data through mutual TLS."""

import numpy as np
import pytest
import xarray as xr
from conftest import SHARED_DATA
from xarray.testing import assert_identical

ERA_INTERIM = SHARED_DATA / "eraint_uvz.nc"


@pytest.mark.slow
def test_256_mib_dataarray_round_trip(echo):
    rng = np.random.default_rng(7)
    da = xr.DataArray(
        rng.standard_normal((64, 512, 1024)),  # 256 MiB of float64
        dims=("time", "lat", "lon"),
        coords={"lat": np.linspace(-90, 90, 512), "lon": np.linspace(0, 360, 1024, endpoint=False)},
        name="big",
        attrs={"units": "1"},
    )
    assert da.nbytes == 256 * 2**20
    out = echo.echo(da)
    assert_identical(out, da)
    assert out.values.flags.writeable  # a normal array the caller owns


@pytest.mark.skipif(not ERA_INTERIM.exists(), reason=f"{ERA_INTERIM} is absent (shared data folder)")
def test_era_interim_through_a_remote_function(ocean):
    import sys

    from conftest import EXAMPLE

    sys.path.insert(0, str(EXAMPLE.parent))
    import ocean_tools

    with xr.open_dataset(ERA_INTERIM, engine="scipy") as ds:
        ds = ds.load()
    for name in ("u", "v", "z"):
        local = ocean_tools.zonal_mean(ds[name], lon="longitude")
        remote = ocean.zonal_mean(ds[name], lon="longitude")
        assert_identical(remote, local)
        assert remote.dtype == local.dtype
    # The whole variable, with its CF attributes and coordinates, round-trips exactly.
    echoed = ocean.zonal_mean(ds["u"].expand_dims(lon=1), lon="lon")
    assert_identical(echoed, ds["u"].expand_dims(lon=1).mean("lon", keep_attrs=True))
