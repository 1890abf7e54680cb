"""Compressing the arrays of calls over a slow link."""

import numpy as np
import pandas as pd
import xarray as xr
from ocean_tools_client import Client

import dagen

time = pd.date_range("2000-01-01", periods=24, freq="MS")
sst = xr.DataArray(np.random.default_rng(0).normal(15.0, 3.0, (24, 45, 90)),
                   dims=("time", "lat", "lon"), coords={"time": time}, name="sst")

with Client("localhost:50051", certs="certs/", identity="alice", compression="zstd") as remote:
    anom = remote.anomaly(sst)                    # arrays compressed with zstd both ways
    with dagen.call_options(compression="lz4"):   # or None: for the calls in the block
        clim = remote.climatology(sst)
