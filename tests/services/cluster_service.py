"""Functions the dask executor tests call through a real `dagen serve --executor dask`."""

import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

import dagen


def job_id() -> str:
    """The SLURM job this call runs in ("" outside one), and the worker's pid."""
    return f"{os.environ.get('SLURM_JOB_ID', '')}:{os.getpid()}"


def whoami() -> str:
    """The caller's name, as the function sees it."""
    identity = dagen.caller()
    return identity.name if identity is not None else ""


def remaining() -> float | None:
    """The seconds left before this call's deadline, as the task on the worker sees them."""
    return dagen.time_remaining()


def wind_speed(path: str, progress: dagen.Progress) -> xr.DataArray:
    """sqrt(u^2 + v^2) of a file the workers can read; reports the job it ran in."""
    progress.update(fraction=0.0, message=f"job {os.environ.get('SLURM_JOB_ID', '')}")
    with xr.open_dataset(path) as ds:
        speed = (ds.u**2 + ds.v**2) ** 0.5
        speed.attrs["slurm_job_id"] = os.environ.get("SLURM_JOB_ID", "")
        result = speed.load()
    progress.update(fraction=1.0, message="done")
    return result


def count(n: int, progress: dagen.Progress) -> int:
    """Report progress ``n`` times, then return ``n``."""
    for i in range(n):
        progress.update(fraction=(i + 1) / n, message=f"step {i + 1} of {n}")
    return n


def tick(seconds: float, log: str, progress: dagen.Progress) -> int:
    """Append a line to ``log`` every 20 ms until cancelled (checks progress.cancelled)."""
    n = 0
    end = time.monotonic() + seconds
    progress.update(message="started")
    with Path(log).open("a") as f:
        while time.monotonic() < end and not progress.cancelled:
            n += 1
            f.write(f"{n}\n")
            f.flush()
            time.sleep(0.02)
    return n


def tick_forever(seconds: float, log: str) -> int:
    """Append a line to ``log`` every 20 ms and never check for cancellation."""
    n = 0
    end = time.monotonic() + seconds
    with Path(log).open("a") as f:
        while time.monotonic() < end:
            n += 1
            f.write(f"{n}\n")
            f.flush()
            time.sleep(0.02)
    return n


def _backing_file(array: np.ndarray) -> str:
    """The file mapped where ``array``'s data lies (from /proc/self/maps), or ""."""
    address = array.__array_interface__["data"][0]
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) > 5 and fields[5].startswith("/") else ""
    return ""


def spooled_echo(data: xr.DataArray, small: np.ndarray, hold: float,
                 progress: dagen.Progress) -> xr.DataArray:
    """``data`` back, its attribute "file" the file backing it on the worker and
    "small_file" that of ``small``; the backing file is reported at once, then the call
    holds for ``hold`` s (or until cancelled)."""
    file = _backing_file(data.values)
    progress.update(message=file)
    end = time.monotonic() + hold
    while time.monotonic() < end and not progress.cancelled:
        time.sleep(0.02)
    out = data.copy(deep=False)
    out.attrs.update(file=file, small_file=_backing_file(small), writeable=str(
        data.values.flags.writeable))
    return out


def lazy_ramp(n: int, chunk: int) -> xr.DataArray:
    """0, 1, ..., n-1 as float64, lazy (dask), in blocks of ``chunk``: computed on the
    cluster while the server streams it."""
    import dask.array as da

    return xr.DataArray(da.arange(n, chunks=chunk, dtype="f8"), dims="x", name="ramp")
