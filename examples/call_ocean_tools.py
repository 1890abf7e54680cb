"""What a visitor writes: call the remote ocean tools as if they were local.

The connection comes from the environment (DAGEN_TARGET, DAGEN_CERTS,
DAGEN_IDENTITY); ``Client("host:port", certs=..., identity=...)`` works too.
"""

import numpy as np
import pandas as pd
import xarray as xr
from ocean_tools_client import anomaly, sea_water_density, zonal_mean


def sample_sst(years: int = 3, nlat: int = 90, nlon: int = 180) -> xr.DataArray:
    """A synthetic monthly sea surface temperature field with a seasonal cycle."""
    time = pd.date_range("2000-01-01", periods=12 * years, freq="MS")
    lat = np.linspace(-89, 89, nlat)
    lon = np.linspace(0, 358, nlon)
    rng = np.random.default_rng(0)
    season = np.cos(2 * np.pi * (time.month.to_numpy() - 2) / 12)[:, None, None]
    base = 28 * np.cos(np.deg2rad(lat))[None, :, None] - 2
    data = base + 3 * season * np.sign(lat)[None, :, None] + rng.normal(0, 0.5, (len(time), nlat, nlon))
    return xr.DataArray(
        data.astype("float32"),
        dims=("time", "lat", "lon"),
        coords={"time": time, "lat": lat, "lon": lon},
        name="sst",
        attrs={"units": "degC", "long_name": "sea surface temperature"},
    )


def main() -> None:
    sst = sample_sst()
    print(f"sending {sst.nbytes / 2**20:.1f} MiB of SST {dict(sst.sizes)}")
    anom = anomaly(sst)
    print(f"anomaly: {anom.name} {dict(anom.sizes)}, mean {float(anom.mean()):+.2e} {anom.attrs['units']}")
    zm = zonal_mean(anom.isel(time=slice(0, 12)))
    print(f"zonal mean of the first year's anomaly: {dict(zm.sizes)}, "
          f"max |value| {float(abs(zm).max()):.3f}")
    print(f"sea water density at 12 degC, 35 g/kg: {sea_water_density(12.0, 35.0):.3f} kg/m3")
    try:
        sea_water_density(12.0, -1.0)
    except ValueError as e:
        print(f"a remote ValueError arrives as ValueError: {e}")


if __name__ == "__main__":
    main()
