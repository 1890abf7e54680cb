"""Tuples, sets and dicts, nested."""

__all__ = ["pair", "stats", "unique", "frozen", "by_id", "nested", "matrix"]


def pair(a: int, b: str) -> tuple[int, str]:
    """A fixed tuple."""
    return (a, b)


def stats(values: tuple[float, ...]) -> tuple[float, float, int]:
    """A variadic tuple in, a fixed one out."""
    return (min(values), max(values), len(values))


def unique(words: list[str]) -> set[str]:
    """A set."""
    return set(words)


def frozen(ids: frozenset[int]) -> frozenset[int]:
    """A frozenset."""
    return frozenset(i * 2 for i in ids)


def by_id(names: dict[int, str]) -> dict[int, list[str]]:
    """A dict with int keys."""
    return {k: [v, v.upper()] for k, v in names.items()}


def nested(table: dict[str, tuple[int, list[float] | None]]) -> list[tuple[str, int]]:
    """Tuples in dicts in lists."""
    return sorted((k, v[0]) for k, v in table.items())


def matrix(rows: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    """Variadic tuples of variadic tuples."""
    return tuple(tuple(r) for r in rows)


CASES = [
    ("pair", (3, "x"), {}),
    ("stats", ((1.5, -2.0, 7.25),), {}),
    ("unique", (["a", "b", "a"],), {}),
    ("frozen", (frozenset({1, 2, 3}),), {}),
    ("by_id", ({1: "a", -7: "b"},), {}),
    ("nested", ({"x": (1, [1.0]), "y": (2, None)},), {}),
    ("matrix", ([[1, 2], [], [3]],), {}),
]
