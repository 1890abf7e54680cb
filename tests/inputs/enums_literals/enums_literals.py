"""Enums and Literals become proto enums."""

import enum
from typing import Literal


class Method(enum.Enum):
    """How to aggregate."""

    MEAN = "mean"
    MEDIAN = "median"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 10


class Unit(enum.StrEnum):
    KELVIN = "K"
    CELSIUS = "degC"


__all__ = ["Method", "Level", "Unit", "aggregate", "choose", "levels", "convert"]


def aggregate(method: Method = Method.MEAN, how: Literal["fast", "exact"] = "fast") -> str:
    """An enum and a Literal with defaults."""
    return f"{method.value}/{how}"


def choose(option: Literal[1, 2, 3]) -> Literal["one", "two", "three"]:
    """Int literals in, str literals out."""
    return {1: "one", 2: "two", 3: "three"}[option]


def levels(values: list[Level]) -> dict[str, Level]:
    """Enums in containers."""
    return {v.name: v for v in values}


def convert(unit: Unit) -> Unit | None:
    """An optional enum."""
    return None if unit is Unit.KELVIN else Unit.KELVIN


CASES = [
    ("aggregate", (), {}),
    ("aggregate", (Method.MEDIAN, "exact"), {}),
    ("choose", (2,), {}),
    ("levels", ([Level.HIGH, Level.LOW],), {}),
    ("convert", (Unit.CELSIUS,), {}),
    ("convert", (Unit.KELVIN,), {}),
]
