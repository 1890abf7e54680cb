"""Opening a remote dataset lazily, reading part of it, passing a selection back."""

from ocean_data_client import Client

import dagen

with Client("localhost:50051", certs="certs/", identity="alice") as remote:
    ds = remote.era_interim()                       # at once: dims, coordinates, attrs
    print(ds.u.chunks)                              # dask arrays, the owner's chunking
    jet = ds.u.sel(level=200, latitude=slice(60, 20)).mean("longitude")
    jet = jet.compute()                             # reads only the blocks it touches
    z500 = remote.zonal_mean(ds.z.sel(level=500))   # a reference travels; the result returns
    try:
        wind = ds[["u", "v"]].isel(month=0).load()
    except dagen.DatasetExpired:                    # unused for --dataset-idle-timeout
        ds = remote.era_interim()                   # open it again
        wind = ds[["u", "v"]].isel(month=0).load()
    ds.close()                                      # frees it on the server now
