"""The visitor's side: call the ocean tools served with `dagen serve` as if they were local."""

import numpy as np
import pandas as pd
import xarray as xr
from ocean_tools_client import Client

time = pd.date_range("2000-01-01", periods=24, freq="MS")
sst = xr.DataArray(np.random.default_rng(0).normal(15.0, 3.0, (24, 4, 8)),
                   dims=("time", "lat", "lon"), coords={"time": time}, name="sst",
                   attrs={"units": "degC"})

with Client("localhost:50051", certs="certs/", identity="alice") as remote:
    anom = remote.anomaly(sst)           # same signature, docstring and result as the original
    rho = remote.sea_water_density(12.0, 35.0)
    try:
        remote.sea_water_density(12.0, -1.0)
    except ValueError as error:          # a remote ValueError arrives as a ValueError
        print("refused:", error)

print(anom.sizes, f"{rho:.2f} kg/m3")
