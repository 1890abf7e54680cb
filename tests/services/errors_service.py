"""Exceptions a served module raises: its own (mirrored in the client) and built-in ones."""

__all__ = ["DataError", "LookupFailed", "RegionError", "UnknownStation", "fail"]


class DataError(Exception):
    """The data cannot be used."""


class RegionError(DataError, ValueError):
    """A region outside the data's domain."""


class _Private(KeyError):
    """Not in __all__: the client has no mirror of it, only of its bases."""


class UnknownStation(_Private):
    """A station that is not in the network."""


class LookupFailed(KeyError):
    """A constructor that takes other arguments than a message."""

    def __init__(self, key: str, where: str) -> None:
        super().__init__(f"{key} not found in {where}")
        self.key = key


class OtherLibraryError(ValueError):
    """Not public here (not in __all__): arrives as a RemoteError that is a ValueError."""


def fail(kind: str) -> None:
    """Raise an exception of the given kind."""
    errors: dict[str, Exception] = {
        "region": RegionError("lat 95 is outside -90..90"),
        "data": DataError("no data"),
        "station": UnknownStation("XYZ"),
        "lookup": LookupFailed("t2m", "era-interim"),
        "other": OtherLibraryError("merge conflict"),
        "key": KeyError("k"),
        "key-int": KeyError(1),
        "key-tuple": KeyError("a", "b"),
        "key-empty": KeyError(),
        "os": FileNotFoundError(2, "No such file or directory", "/data/x.nc"),
        "unicode": UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        "plain": Exception("plain"),
    }
    if kind == "dict":
        {}["missing key"]  # noqa: B018 - a KeyError raised by Python itself
    raise errors[kind]
