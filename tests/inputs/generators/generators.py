"""Generators stream their items to the caller as they are produced."""

from collections.abc import Generator, Iterator

import numpy as np

__all__ = ["count", "slabs", "words"]


def count(n: int) -> Iterator[int]:
    """Yield 0..n-1."""
    yield from range(n)


def slabs(array: np.ndarray, size: int = 2) -> Iterator[np.ndarray]:
    """Yield slabs of an array: each item streams its own chunks."""
    for start in range(0, len(array), size):
        yield array[start:start + size] * 2


def words(text: str) -> Generator[str, None, None]:
    """Generator[...] works too."""
    yield from text.split()


CASES = [
    ("count", (4,), {}),
    ("count", (0,), {}),
    ("slabs", (np.arange(10.0).reshape(5, 2),), {}),
    ("words", ("a bb ccc",), {}),
]
