"""The type mapping: for each supported Python type, its proto rendering and its codec.

Every annotation becomes a tree of small frozen nodes (as msgspec's ``type_info``
does). A node knows

* how it is declared in a ``.proto`` file (:meth:`TypeNode.proto_field`), and
* how a Python value goes into a protobuf message field and back
  (:meth:`TypeNode.encode` / :meth:`TypeNode.decode`).

Adding a type means adding one node class here and one line in :func:`type_node`.

Nodes come in three shapes, because protobuf fields do:

* *scalar* nodes map to a scalar field (``int64``, ``string``...);
* *message* nodes map to a message field and fill or read that sub-message;
* *container* nodes (list, dict) map to ``repeated`` and ``map`` fields.

A container or optional inside a container has no direct protobuf rendering, so it is
wrapped into a small generated message (:class:`WrapperNode`) with one ``value`` field.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import xarray as xr

from ._arrays import DecodeContext, EncodeContext, attach_array, read_array


class UnsupportedType(TypeError):
    """An annotation that dagen cannot map to the wire."""


class EncodeError(TypeError):
    """A value that does not match its annotation; ``path`` says where inside it."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def at(self, step: str) -> EncodeError:
        return EncodeError(self.message, step + self.path)


def type_name(value: Any) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class ProtoField:
    """How a node is declared as a field: ``<label> <type> name = n;``."""

    type: str
    label: str = ""  # "", "optional" or "repeated"; maps carry their own syntax in type


class TypeNode:
    """One node of the type tree. Subclasses are frozen dataclasses."""

    shape: ClassVar[str]  # "scalar", "message" or "container"
    annotation: Any

    @property
    def has_arrays(self) -> bool:
        return False

    @property
    def name(self) -> str:
        """A CamelCase name, used to name wrapper messages."""
        raise NotImplementedError

    def children(self) -> tuple[TypeNode, ...]:
        return ()

    def proto_field(self) -> ProtoField:
        raise NotImplementedError

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        """Put ``value`` into ``msg.<field>``; raise EncodeError if it does not fit."""
        raise NotImplementedError

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        """Read the Python value of ``msg.<field>``."""
        raise NotImplementedError


# -- scalars -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalarNode(TypeNode):
    annotation: Any
    proto_type: str
    shape: ClassVar[str] = "scalar"

    @property
    def name(self) -> str:
        return self.proto_type.capitalize()

    def proto_field(self) -> ProtoField:
        return ProtoField(self.proto_type)

    def check(self, value: Any) -> Any:
        """Return the value as protobuf wants it, or raise EncodeError."""
        raise NotImplementedError

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        setattr(msg, field, self.check(value))

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return getattr(msg, field)


def _mismatch(expected: str, value: Any) -> EncodeError:
    return EncodeError(f"expected {expected}, got {type_name(value)}")


@dataclass(frozen=True)
class BoolNode(ScalarNode):
    annotation: Any = bool
    proto_type: str = "bool"

    def check(self, value: Any) -> bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise _mismatch("bool", value)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class IntNode(ScalarNode):
    annotation: Any = int
    proto_type: str = "int64"

    def check(self, value: Any) -> int:
        # bool is an int to Python, but passing True where a count is expected is a bug.
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise _mismatch("int", value)
        value = int(value)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise EncodeError(f"int {value} does not fit in 64 bits")
        return value


@dataclass(frozen=True)
class FloatNode(ScalarNode):
    annotation: Any = float
    proto_type: str = "double"

    def check(self, value: Any) -> float:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, float | int | np.floating | np.integer
        ):
            raise _mismatch("float", value)
        return float(value)


@dataclass(frozen=True)
class StrNode(ScalarNode):
    annotation: Any = str
    proto_type: str = "string"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _mismatch("str", value)
        return str(value)


@dataclass(frozen=True)
class BytesNode(ScalarNode):
    annotation: Any = bytes
    proto_type: str = "bytes"

    def check(self, value: Any) -> bytes:
        if not isinstance(value, bytes | bytearray):
            raise _mismatch("bytes", value)
        return bytes(value)


# -- messages ----------------------------------------------------------------------------------


class MessageNode(TypeNode):
    """A node that fills or reads a whole sub-message."""

    shape: ClassVar[str] = "message"

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        raise NotImplementedError

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        raise NotImplementedError

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        sub = getattr(msg, field)
        sub.SetInParent()  # present even when every field of it is at its default
        self.fill(value, sub, ctx)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return self.read(getattr(msg, field), ctx)


@dataclass(frozen=True)
class NDArrayNode(MessageNode):
    """``numpy.ndarray`` (also ``numpy.typing.NDArray[...]``): a header plus streamed chunks."""

    annotation: Any = np.ndarray

    @property
    def has_arrays(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return "NDArray"

    def proto_field(self) -> ProtoField:
        return ProtoField("dagen.v1.NDArray")

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        if not isinstance(value, np.ndarray):
            raise _mismatch("numpy.ndarray", value)
        attach_array(value, m, ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return read_array(m, ctx)


@dataclass(frozen=True)
class DataArrayNode(MessageNode):
    """``xarray.DataArray``: name, dims, coordinates and attrs, data streamed in chunks."""

    annotation: Any = xr.DataArray

    @property
    def has_arrays(self) -> bool:
        return True

    @property
    def name(self) -> str:
        return "DataArray"

    def proto_field(self) -> ProtoField:
        return ProtoField("dagen.v1.DataArray")

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        if not isinstance(value, xr.DataArray):
            raise _mismatch("xarray.DataArray", value)
        from ._xarray import fill_dataarray

        fill_dataarray(value, m, ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        from ._xarray import read_dataarray

        return read_dataarray(m, ctx)


@dataclass(frozen=True)
class WrapperNode(MessageNode):
    """A generated message ``<Inner>Value { <inner> value = 1; }`` around a node that
    protobuf cannot nest directly (a list in a list, an optional in a map...)."""

    inner: TypeNode

    @property
    def annotation(self) -> Any:  # type: ignore[override]
        return self.inner.annotation

    @property
    def has_arrays(self) -> bool:
        return self.inner.has_arrays

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def message_name(self) -> str:
        return self.inner.name + "Value"

    def children(self) -> tuple[TypeNode, ...]:
        return (self.inner,)

    def proto_field(self) -> ProtoField:
        return ProtoField(self.message_name)

    def fill(self, value: Any, m: Any, ctx: EncodeContext) -> None:
        self.inner.encode(value, m, "value", ctx)

    def read(self, m: Any, ctx: DecodeContext) -> Any:
        return self.inner.decode(m, "value", ctx)


# -- optional and containers -------------------------------------------------------------------


def _nestable(node: TypeNode) -> TypeNode:
    """A node that can stand as the item of a repeated field or the value of a map."""
    return node if node.shape in ("scalar", "message") else WrapperNode(node)


@dataclass(frozen=True)
class OptionalNode(TypeNode):
    """``X | None``: a field with presence; unset means None."""

    annotation: Any
    inner: TypeNode
    shape: ClassVar[str] = "optional"

    @property
    def has_arrays(self) -> bool:
        return self.inner.has_arrays

    @property
    def name(self) -> str:
        return "Optional" + self.inner.name

    def children(self) -> tuple[TypeNode, ...]:
        return (self.inner,)

    def proto_field(self) -> ProtoField:
        inner = self.inner.proto_field()
        return ProtoField(inner.type, "optional" if self.inner.shape == "scalar" else "")

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if value is None:
            msg.ClearField(field)
        else:
            self.inner.encode(value, msg, field, ctx)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return self.inner.decode(msg, field, ctx) if msg.HasField(field) else None


def optional_of(annotation: Any, inner: TypeNode) -> TypeNode:
    # Presence needs a scalar or message field; wrap anything else.
    wrapped = inner if inner.shape in ("scalar", "message") else WrapperNode(inner)
    return OptionalNode(annotation, wrapped)


@dataclass(frozen=True)
class ListNode(TypeNode):
    annotation: Any
    item: TypeNode
    shape: ClassVar[str] = "container"

    @property
    def has_arrays(self) -> bool:
        return self.item.has_arrays

    @property
    def name(self) -> str:
        return self.item.name + "List"

    def children(self) -> tuple[TypeNode, ...]:
        return (self.item,)

    def proto_field(self) -> ProtoField:
        return ProtoField(self.item.proto_field().type, "repeated")

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if not isinstance(value, list | tuple):
            raise _mismatch("list", value)
        target = getattr(msg, field)
        item = self.item
        for i, v in enumerate(value):
            try:
                if isinstance(item, ScalarNode):
                    target.append(item.check(v))
                else:
                    assert isinstance(item, MessageNode)
                    item.fill(v, target.add(), ctx)
            except EncodeError as e:
                raise e.at(f"[{i}]") from None

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        items = getattr(msg, field)
        if isinstance(self.item, ScalarNode):
            return list(items)
        assert isinstance(self.item, MessageNode)
        return [self.item.read(m, ctx) for m in items]


@dataclass(frozen=True)
class DictNode(TypeNode):
    """``dict[str, V]`` as ``map<string, V>``."""

    annotation: Any
    value: TypeNode
    shape: ClassVar[str] = "container"

    @property
    def has_arrays(self) -> bool:
        return self.value.has_arrays

    @property
    def name(self) -> str:
        return self.value.name + "Map"

    def children(self) -> tuple[TypeNode, ...]:
        return (self.value,)

    def proto_field(self) -> ProtoField:
        return ProtoField(f"map<string, {self.value.proto_field().type}>")

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if not isinstance(value, dict):
            raise _mismatch("dict", value)
        target = getattr(msg, field)
        node = self.value
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodeError(f"dict keys must be str, got {type_name(k)} {k!r}")
            try:
                if isinstance(node, ScalarNode):
                    target[k] = node.check(v)
                else:
                    assert isinstance(node, MessageNode)
                    node.fill(v, target[k], ctx)
            except EncodeError as e:
                raise e.at(f"[{k!r}]") from None

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        items = getattr(msg, field)
        node = self.value
        if isinstance(node, ScalarNode):
            return dict(items)
        assert isinstance(node, MessageNode)
        return {k: node.read(m, ctx) for k, m in items.items()}


@dataclass(frozen=True)
class NoneNode(TypeNode):
    """``None`` as a return annotation: an empty response."""

    annotation: Any = None
    shape: ClassVar[str] = "none"

    @property
    def name(self) -> str:
        return "None"

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        if value is not None:
            raise _mismatch("None", value)

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        return None


# -- from annotations --------------------------------------------------------------------------

_SCALARS: dict[Any, Callable[[], ScalarNode]] = {
    bool: BoolNode,
    int: IntNode,
    float: FloatNode,
    str: StrNode,
    bytes: BytesNode,
}

SUPPORTED = (
    "None, bool, int, float, str, bytes, X | None, list[X], dict[str, X], "
    "numpy.ndarray, xarray.DataArray"
)


def type_node(annotation: Any, *, is_return: bool = False) -> TypeNode:
    """Map an annotation to its node, or raise UnsupportedType saying why."""
    if annotation is None or annotation is type(None):
        if is_return:
            return NoneNode()
        raise UnsupportedType("None is only supported as a return annotation or in X | None")
    if annotation in _SCALARS:
        return _SCALARS[annotation]()
    if annotation is np.ndarray:
        return NDArrayNode()
    if annotation is xr.DataArray:
        return DataArrayNode()

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is np.ndarray:  # numpy.typing.NDArray[...]: the dtype is not enforced
        return NDArrayNode(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and len(args) == 2:
            return optional_of(annotation, type_node(members[0]))
        raise UnsupportedType("unions other than X | None are not supported yet")
    if origin is list:
        if len(args) != 1:
            raise UnsupportedType("list needs an item type: list[X]")
        return ListNode(annotation, _nestable(type_node(args[0])))
    if origin is dict:
        if len(args) != 2:
            raise UnsupportedType("dict needs key and value types: dict[str, X]")
        if args[0] is not str:
            raise UnsupportedType("dict keys must be str")
        return DictNode(annotation, _nestable(type_node(args[1])))
    if annotation in (list, dict):
        raise UnsupportedType(f"bare {annotation.__name__} needs its item types")
    raise UnsupportedType(f"not a supported type (supported: {SUPPORTED})")


def walk(node: TypeNode) -> typing.Iterator[TypeNode]:
    """The node and all nodes below it, depth first."""
    yield node
    for child in node.children():
        yield from walk(child)
