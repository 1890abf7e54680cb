"""Dataclasses, pydantic models and TypedDicts become messages; nested; defaults kept."""

import dataclasses
from typing import Annotated, Literal, NotRequired, TypedDict

import pydantic


@dataclasses.dataclass(frozen=True)
class Point:
    """A position on the globe."""

    lat: float
    lon: float
    label: str = ""


@dataclasses.dataclass
class Track:
    name: str
    points: list[Point] = dataclasses.field(default_factory=list)


class Station(pydantic.BaseModel):
    """A measuring station."""

    name: str
    depth: Annotated[float, pydantic.Field(ge=0)] = 0.0
    position: Point | None = None
    tags: list[str] = pydantic.Field(default_factory=list)


class Options(TypedDict):
    window: int
    center: NotRequired[bool]


__all__ = ["Point", "Track", "Station", "Options", "length", "deepest", "plan", "smooth", "positive"]


def length(track: Track) -> int:
    """Nested dataclasses."""
    return len(track.points)


def deepest(stations: list[Station | Literal["auto", "none"]]) -> Station | None:
    """Pydantic models and literals in a union in a list."""
    found = [s for s in stations if isinstance(s, Station)]
    return max(found, key=lambda s: s.depth) if found else None


def plan(stations: dict[str, list[Station]]) -> Track:
    """Models in dicts of lists; a dataclass out."""
    points = [s.position for group in stations.values() for s in group if s.position]
    return Track("plan", points)


def smooth(options: Options) -> Options:
    """A TypedDict, with a key that may be left out."""
    out: Options = {"window": options["window"] * 2}
    if "center" in options:
        out["center"] = not options["center"]
    return out


def positive(count: Annotated[int, pydantic.Field(gt=0)]) -> int:
    """A constrained parameter, validated on the server."""
    return count


CASES = [
    ("length", (Track("t", [Point(1.0, 2.0), Point(3.0, 4.0, "b")]),), {}),
    ("length", (Track("empty"),), {}),
    ("deepest", ([Station(name="a", depth=5.0), "auto", Station(name="b", depth=7.5,
                  position=Point(0.0, 1.0), tags=["x"])],), {}),
    ("deepest", (["none"],), {}),
    ("plan", ({"north": [Station(name="n", position=Point(60.0, 5.0))], "south": []},), {}),
    ("smooth", ({"window": 3},), {}),
    ("smooth", ({"window": 3, "center": True},), {}),
    ("positive", (4,), {}),
]
