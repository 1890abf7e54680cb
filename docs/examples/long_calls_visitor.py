"""Calling the long-call functions: progress, a generator, a timeout, several at once."""

import asyncio

import numpy as np
import pandas as pd
import xarray as xr
from long_calls_client import Client

import dagen

time = pd.date_range("2000-01-01", periods=24, freq="MS")
sst = xr.DataArray(np.random.default_rng(0).normal(15.0, 3.0, (24, 8, 16)),
                   dims=("time", "lat", "lon"), coords={"time": time}, name="sst")

reports = []
with Client("localhost:50051", certs="certs/", identity="alice", timeout=600) as remote:
    with dagen.call_options(on_progress=reports.append):  # a callback instead of the bar
        coarse = remote.regrid(sst)
    print(reports[-1].fraction, reports[-1].message)

    for month, mean in enumerate(remote.monthly_means(sst), start=1):
        print(month, float(mean.mean()))  # an iterator: leaving the loop early cancels the call

    with dagen.call_options(timeout=3):
        rough = remote.refine(1e-300)        # returns before its deadline, with what it has
    print(f"error {rough:.1e}")

    try:
        with dagen.call_options(timeout=1):  # seconds, for the calls inside the block
            remote.wait(60)
    except TimeoutError as error:            # the server stopped the function too
        print(error)

    # several calls at once: each a concurrent.futures.Future
    futures = [dagen.submit(remote.regrid, sst, factor) for factor in (2, 4, 8)]
    sizes = [future.result().sizes["lat"] for future in futures]
    slow = dagen.submit(remote.wait, 60)
    slow.cancel()                            # even running: the server stops the function

    async def both():                        # in an event loop; in Jupyter, just await
        return await asyncio.gather(dagen.acall(remote.refine, 1e-3),
                                    dagen.acall(remote.regrid, sst, 4))

    fine, coarse4 = asyncio.run(both())
