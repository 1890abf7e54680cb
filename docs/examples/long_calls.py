"""Long calls: a function that reports progress and stops when asked, one that watches
its deadline, a generator."""

import time
from collections.abc import Iterator

import xarray as xr

import dagen


def regrid(da: xr.DataArray, factor: int = 2,
           progress: dagen.Progress = dagen.NO_PROGRESS) -> xr.DataArray:
    """Coarsen ``da`` by ``factor`` along lat and lon, one time step at a time."""
    steps = []
    with progress.step("regridding", total=da.sizes["time"]):  # steps nest; closing one
        for i in range(da.sizes["time"]):                       # counts one unit of the
            if progress.cancelled:                              # step around it
                raise RuntimeError("stopped")                   # or dagen.cancelled()
            steps.append(da.isel(time=i).coarsen(lat=factor, lon=factor).mean())
            progress.advance(message=f"time step {i + 1}")      # or update(fraction=...)
    return xr.concat(steps, "time")


def monthly_means(da: xr.DataArray) -> Iterator[xr.DataArray]:
    """The mean field of each calendar month, each sent as soon as it is computed."""
    for _, month in da.groupby("time.month"):
        yield month.mean("time")


def refine(tolerance: float) -> float:
    """Halve an error estimate until it is below ``tolerance``, or until a second is
    left before the caller's timeout: then the estimate so far, not a TimeoutError."""
    error = 1.0
    while error > tolerance:
        left = dagen.time_remaining()  # seconds; None when the caller set no timeout
        if left is not None and left < 1.0:
            break
        time.sleep(0.05)
        error /= 2
    return error


def wait(seconds: float) -> float:
    """Wait ``seconds``, or less when the call is cancelled."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not dagen.cancelled():
        time.sleep(0.05)
    return seconds
