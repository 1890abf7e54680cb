"""Generators whose end the tests observe: each writes a marker file when closed."""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _closed(tag: str, produced: int) -> None:
    Path(os.environ["DAGEN_TEST_MARKS"], f"{tag}.closed").write_text(str(produced))


def forever(tag: str) -> Iterator[int]:
    """Count up until the caller stops listening."""
    produced = 0
    try:
        while True:
            yield produced
            produced += 1
            time.sleep(0.01)
    finally:
        _closed(tag, produced)


def frames(tag: str, size: int) -> Iterator[np.ndarray]:
    """Arrays, one after another, until the caller stops listening."""
    produced = 0
    try:
        while True:
            yield np.full(size, produced, dtype="int32")
            produced += 1
    finally:
        _closed(tag, produced)


def patient(tag: str) -> Iterator[int]:
    """One item, then slow work that stops when dagen.cancelled() says so."""
    import dagen

    yield 0
    marks = os.environ["DAGEN_TEST_MARKS"]
    Path(marks, f"{tag}.working").write_text("")  # resumed: working towards item 1
    for step in range(1000):
        if dagen.cancelled():
            Path(marks, f"{tag}.cancelled").write_text(str(step))
            return
        time.sleep(0.01)
    yield 1


def spaced(tag: str, n: int, seconds: float, size: int) -> Iterator[np.ndarray]:
    """``n`` arrays, ``seconds`` apart; the time each is yielded goes to ``tag``.times."""
    times = Path(os.environ["DAGEN_TEST_MARKS"], f"{tag}.times")
    for i in range(n):
        if i:
            time.sleep(seconds)
        with times.open("a") as f:
            f.write(f"{time.time()!r}\n")
        yield np.full(size, i, dtype="float64")


def remaining(n: int) -> Iterator[float]:
    """The seconds left before this call's deadline, ``n`` times, as the generator sees them."""
    import dagen

    for _ in range(n):
        left = dagen.time_remaining()
        yield -1.0 if left is None else left
