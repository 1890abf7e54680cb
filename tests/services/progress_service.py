"""Functions the progress, cancellation and deadline tests call through a real server."""

import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

import dagen


class Refused(Exception):
    """An exception type the client does not have."""


def count(n: int, progress: dagen.Progress = dagen.NO_PROGRESS) -> int:
    """Report progress ``n`` times, then return ``n``."""
    for i in range(n):
        progress.update(fraction=(i + 1) / n, message=f"step {i + 1} of {n}")
    return n


def regrid(months: int, *, label: str = "regridding", progress: dagen.Progress) -> str:
    """Report nested steps: one per month, each of two halves (closing a step counts
    one unit of the step around it)."""
    with progress.step(label, total=months):
        for month in range(months):
            with progress.step(f"month {month + 1}", total=2):
                progress.advance()
                progress.advance(message=f"month {month + 1} of {months} done")
    return "done"


def busy(seconds: float, progress: dagen.Progress) -> int:
    """Report progress in a tight loop for up to ``seconds``, until cancelled."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and not progress.cancelled:
        n += 1
        progress.update(message=f"report {n}")
    return n


def remaining() -> float | None:
    """The seconds left before this call's deadline, as the function sees them."""
    return dagen.time_remaining()


def remaining_reporting(progress: dagen.Progress) -> float | None:
    """The same, from a function that reports progress (a streaming rpc)."""
    progress.update(message="asking")
    return dagen.time_remaining()


def tick(seconds: float, log: str, progress: dagen.Progress) -> int:
    """Append a line to ``log`` every 20 ms for ``seconds``, reporting each one, until
    cancelled."""
    n = 0
    end = time.monotonic() + seconds
    with Path(log).open("a") as f:
        while time.monotonic() < end and not progress.cancelled:
            n += 1
            f.write(f"{n}\n")
            f.flush()
            progress.update(fraction=min(1.0, n * 0.02 / seconds), message=f"line {n}")
            time.sleep(0.02)
    return n


def spin(seconds: float, pidfile: str) -> int:
    """Burn CPU for ``seconds`` and never check for cancellation; write the pid first."""
    Path(pidfile).write_text(str(os.getpid()))
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def cooperative(seconds: float, marker: str, progress: dagen.Progress) -> float:
    """Wait up to ``seconds``, checking ``progress.cancelled``; record when it stopped."""
    Path(marker + ".started").write_text(repr(time.time()))
    end = time.monotonic() + seconds
    while time.monotonic() < end and not progress.cancelled:
        time.sleep(0.01)
    Path(marker + ".stopped").write_text(repr(time.time()))
    return seconds


def patient(seconds: float, marker: str) -> float:
    """Like ``cooperative``, but checks ``dagen.cancelled()`` (and is a unary rpc)."""
    Path(marker + ".started").write_text(repr(time.time()))
    end = time.monotonic() + seconds
    while time.monotonic() < end and not dagen.cancelled():
        time.sleep(0.01)
    Path(marker + ".stopped").write_text(repr(time.time()))
    return seconds


def checksum(a: np.ndarray) -> float:
    """The sum of an array (a large upload, a tiny result)."""
    return float(a.sum())


def double(da: xr.DataArray, same: xr.DataArray) -> list[xr.DataArray]:
    """Twice ``da``, and ``same`` as it came (a result that is a view of an argument)."""
    return [da * 2, same]


def whoami() -> int:
    """The process the function runs in."""
    return os.getpid()


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def refuse(kind: str) -> None:
    """Raise an exception of the given kind."""
    if kind == "value":
        raise ValueError("bad value")
    raise Refused(f"refused {kind}")
