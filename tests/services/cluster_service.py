"""Functions the dask executor tests call through a real `dagen serve --executor dask`."""

import os
import time
from pathlib import Path

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
