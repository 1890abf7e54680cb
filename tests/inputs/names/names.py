"""Names a scientist's module may well use, which dagen's own names must not take.

Parameters called ``name``, ``key``, ``target``, ``self`` and ``cls``; functions called
like the settings of a client (``identity``, ``target``, ``timeout``, ...), like its
lifecycle (``close``), like the modules the generated client imports (``dagen``,
``xarray``, ``np``, ``typing``) and like builtins (``float``, ``str``); a parameter
called ``Client``; a dataclass field called ``dataclasses``; a pydantic field called
``self``; and a remote class with a method ``close``.
"""

import dataclasses as _dataclasses
import typing as _typing

import numpy as _numpy
import pydantic as _pydantic
import xarray as _xarray

__all__ = [
    "Record",
    "Settings",
    "Shelf",
    "describe",
    "identity",
    "target",
    "timeout",
    "compression",
    "limits",
    "methods",
    "service",
    "contract",
    "options",
    "close",
    "dagen",
    "make",
    "xarray",
    "np",
    "typing",
    "keep",
    "settle",
    "float",
    "str",
]


@_dataclasses.dataclass
class Record:
    """A record whose first field is called like the module dataclasses come from."""

    dataclasses: int = 0
    name: str = ""
    tags: list[str] = _dataclasses.field(default_factory=list)


class Settings(_pydantic.BaseModel):
    """A model with a field called ``self`` and one called ``type``."""

    self: str
    type: int = 0


class Shelf:
    """A remote class with a method ``close`` and parameters ``key``, ``target``, ``cls``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def get(self, key: str, target: int = 0) -> str:
        """The shelf's name, ``key`` and ``target``."""
        return f"{self.name}/{key}/{target}"

    def close(self) -> str:
        """Close the shelf (on the server: it says so)."""
        return f"{self.name} closed"

    @staticmethod
    def make(cls: int, self: int = 1) -> int:
        """A static method whose parameters are called ``cls`` and ``self``."""
        return cls * 10 + self


def describe(name: str, key: str = "k", target: int = 0) -> str:
    """Parameters called ``name``, ``key`` and ``target``.

    Parameters
    ----------
    name : str
        A name.
    key : str
        A key.
    target : int
        A target.
    """
    return f"{name}:{key}:{target}"


def identity(self: int, cls: int = 2) -> list[int]:
    """A function called ``identity``, with parameters ``self`` and ``cls``."""
    return [self, cls]


def target() -> str:
    """A function called ``target``."""
    return "the target"


def timeout(seconds: float) -> float:
    return seconds * 2


def compression(level: int = 3) -> int:
    return -level


def limits() -> dict[str, int]:
    return {"a": 1, "b": 2}


def methods() -> list[str]:
    return ["get", "put"]


def service(name: str) -> str:
    return f"service {name}"


def contract(revision: int) -> int:
    return revision + 1


def options(verbose: bool = False) -> list[str]:
    return ["-v"] if verbose else []


def close() -> str:
    """A function called ``close``: leaving ``with Client(...)`` must not call it."""
    return "closed remotely"


def dagen(version: str) -> str:
    """A function called like the package the client imports."""
    return f"dagen {version}"


def make(Client: str, self: str = "me") -> str:  # noqa: N803 - the point of the case
    """A module function with parameters called ``Client`` and ``self``."""
    return f"{Client} made by {self}"


def xarray(da: _xarray.DataArray) -> _xarray.DataArray:
    """A function called ``xarray`` that takes and returns a DataArray."""
    return da * 2


def np(values: _numpy.ndarray) -> _numpy.ndarray:
    return values + 1


def typing(x: _typing.Optional[int] = None) -> _typing.Optional[int]:  # noqa: UP045
    return None if x is None else -x


def keep(record: Record) -> Record:
    """A dataclass with a field called ``dataclasses``."""
    return _dataclasses.replace(record, dataclasses=record.dataclasses + 1)


def settle(settings: Settings) -> Settings:
    """A pydantic model with fields called ``self`` and ``type``."""
    return Settings(self=settings.self.upper(), type=settings.type + 1)


def float(x: int) -> int:  # noqa: A001 - the point of the case
    """A function called like a builtin that the other annotations use."""
    return x + 1


def str(x: int) -> int:  # noqa: A001 - the point of the case
    return x - 1


CASES = [
    ("describe", ("a",), {"key": "b", "target": 3}),
    ("describe", (), {"name": "n"}),
    ("identity", (5,), {"cls": 6}),
    ("identity", (), {"self": 7}),
    ("target", (), {}),
    ("timeout", (1.5,), {}),
    ("compression", (), {"level": 9}),
    ("limits", (), {}),
    ("methods", (), {}),
    ("service", (), {"name": "x"}),
    ("contract", (4,), {}),
    ("options", (), {"verbose": True}),
    ("close", (), {}),
    ("dagen", ("1.0",), {}),
    ("make", (), {"Client": "c", "self": "s"}),
    ("xarray", (_xarray.DataArray(_numpy.arange(3.0), dims="x", name="v"),), {}),
    ("np", (_numpy.arange(4),), {}),
    ("typing", (), {"x": 3}),
    ("keep", (Record(dataclasses=1, name="r", tags=["t"]),), {}),
    ("settle", (Settings(self="me", type=2),), {}),
    ("float", (1,), {}),
    ("str", (1,), {}),
    ("Shelf.get", (("s",), {}, ("k",)), {"target": 2}),
    ("Shelf.close", (("s",), {}, ()), {}),
    ("Shelf.make", (None, None, ()), {"cls": 3, "self": 4}),
]
