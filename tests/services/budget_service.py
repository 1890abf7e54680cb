"""Functions the decode-budget tests call through a real server (tests/test_budget.py);
those marked (recorded) record each run as guarded_service's do."""

import numpy as np
from guarded_service import _record


def nested(x: list[list[float]]) -> int:
    """How many inner lists (recorded)."""
    _record("nested")
    return len(x)


def floats(x: list[float]) -> float:
    """The sum of a list of numbers."""
    return sum(x)


def table(d: dict[str, float]) -> int:
    """How many entries."""
    return len(d)


def count(arrays: list[np.ndarray]) -> int:
    """How many arrays it was given (recorded)."""
    _record("count")
    return len(arrays)


def total(a: np.ndarray) -> float:
    """The sum of an array (recorded)."""
    _record("total")
    return float(a.sum())


def ping() -> int:
    """A tiny call."""
    return 1


def words(n: int, size: int) -> list[str]:
    """``n`` strings of ``size`` characters."""
    return ["x" * size] * n
