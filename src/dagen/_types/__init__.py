"""The type mapping: for each supported Python type, its proto rendering and its codec.

Every annotation becomes a tree of small frozen nodes (as msgspec's ``type_info``
does). A node knows

* how it is declared as a field in a ``.proto`` file (:meth:`TypeNode.proto_field`)
  and which ``.proto`` files that declaration imports (:attr:`TypeNode.proto_imports`),
* which messages or enums it needs generated (:class:`Definition` nodes), and
* how a Python value goes into a protobuf message field and back
  (:meth:`TypeNode.encode` / :meth:`TypeNode.decode`).

Nodes come in three shapes, because protobuf fields do:

* *scalar* nodes map to a scalar or enum field (``int64``, ``string``, ``Color``...):
  ``_scalars``;
* *message* nodes map to a message field and fill or read that sub-message: the
  toolkit's own messages for arrays, xarray objects and times (``_known``), and
  messages generated for the user's dataclasses, pydantic models and TypedDicts
  (``_generated``);
* *container* nodes (list, tuple[X, ...], set, dict) map to ``repeated`` and ``map``
  (``_containers``, with optionals, fixed tuples and unions).

A container or optional where protobuf cannot nest it (a list in a list, an optional
in a map...) is wrapped into a small generated message (:class:`WrapperNode`).

Adding a type means adding one node class to the module of its shape; a scalar or a
known message also goes into that module's table (``SCALARS``, ``KNOWN``), which
:func:`type_node` reads.

The runtime addresses fields and enum values by *name*, never by number: numbers
live only in the ``.proto`` (and the lock file that pins them), so the same nodes
serve every revision of a contract.
"""

from __future__ import annotations

import collections.abc
import enum
import types
import typing
from pathlib import PurePath
from typing import Any

import numpy as np

from ._base import (
    Definition,
    EncodeError,
    MessageNode,
    ProtoField,
    TypeNode,
    UnsupportedType,
    definitions,
    mismatch,
    own_doc,
    show_annotation,
    snake,
    type_name,
    walk,
)
from ._containers import (
    DictEntryNode,
    DictNode,
    ListNode,
    OptionalNode,
    TupleNode,
    UnionNode,
    WrapperNode,
    nestable,
    optional_of,
)
from ._generated import NOTHING, ModelField, ModelNode, model_node
from ._known import (
    KNOWN,
    DataArrayNode,
    DataFrameNode,
    DatasetNode,
    DateNode,
    Datetime64Node,
    DateTimeNode,
    LazyDatasetNode,
    NDArrayNode,
    SeriesNode,
    Timedelta64Node,
    TimeDeltaNode,
)
from ._scalars import (
    SCALARS,
    BoolNode,
    BytesNode,
    EnumNode,
    FloatNode,
    IntNode,
    NoneNode,
    ScalarNode,
    StrNode,
    enum_node,
    literal_node,
)

__all__ = [
    "NOTHING",
    "SUPPORTED",
    "BoolNode",
    "BytesNode",
    "DataArrayNode",
    "LazyDatasetNode",
    "DataFrameNode",
    "DatasetNode",
    "DateNode",
    "Datetime64Node",
    "DateTimeNode",
    "Definition",
    "DictEntryNode",
    "DictNode",
    "EncodeError",
    "EnumNode",
    "FloatNode",
    "IntNode",
    "ListNode",
    "MessageNode",
    "ModelField",
    "ModelNode",
    "NDArrayNode",
    "NoneNode",
    "OptionalNode",
    "ProtoField",
    "ScalarNode",
    "SeriesNode",
    "StrNode",
    "TimeDeltaNode",
    "Timedelta64Node",
    "TupleNode",
    "TypeNode",
    "UnionNode",
    "UnsupportedType",
    "WrapperNode",
    "definitions",
    "mismatch",
    "optional_of",
    "own_doc",
    "show_annotation",
    "snake",
    "type_name",
    "type_node",
    "walk",
]

SUPPORTED = (
    "None, bool, int, float, str, bytes, X | None, Union[...], Literal[...], list[X], "
    "tuple[...], set[X], frozenset[X], dict[str|int, X], enum.Enum, dataclasses, pydantic "
    "models, TypedDict, datetime, date, timedelta, numpy.datetime64, numpy.timedelta64, "
    "numpy.ndarray, xarray.DataArray, xarray.Dataset, pandas.DataFrame, pandas.Series"
)


def type_node(
    annotation: Any, *, is_return: bool = False, _seen: frozenset[Any] = frozenset()
) -> TypeNode:
    """Map an annotation to its node, or raise UnsupportedType saying why."""
    if annotation is None or annotation is type(None):
        if is_return:
            return NoneNode()
        raise UnsupportedType("None is only supported as a return annotation or in X | None")
    if annotation in SCALARS:
        return SCALARS[annotation]()
    if annotation in KNOWN:
        return KNOWN[annotation]()

    def sub(a: Any) -> TypeNode:
        return type_node(a, _seen=_seen)

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Annotated, typing.NotRequired, typing.Required):
        return sub(args[0])  # Annotated[T, ...] is T on the wire
    if origin is np.ndarray:  # numpy.typing.NDArray[...]: the dtype is not enforced
        return NDArrayNode(annotation)
    if origin is typing.Literal:
        return literal_node(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) < len(args):  # X | None, or A | B | None
            inner = members[0] if len(members) == 1 else typing.Union[tuple(members)]  # noqa: UP007
            return optional_of(annotation, sub(inner))
        return UnionNode(annotation, tuple(nestable(sub(a)) for a in members))
    if origin in (list, set, frozenset):
        if len(args) != 1:
            raise UnsupportedType(f"{origin.__name__} needs an item type: {origin.__name__}[X]")
        return ListNode(annotation, nestable(sub(args[0])), origin)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return ListNode(annotation, nestable(sub(args[0])), tuple)
        if args == ((),):
            args = ()
        return TupleNode(annotation, tuple(sub(a) for a in args))
    if origin is dict:
        if len(args) != 2:
            raise UnsupportedType("dict needs key and value types: dict[str, X]")
        if args[0] not in (str, int):
            raise UnsupportedType("dict keys must be str or int")
        key = SCALARS[args[0]]()
        return DictNode(annotation, key, nestable(sub(args[1])))
    if annotation in (list, dict, tuple, set, frozenset):
        raise UnsupportedType(f"bare {annotation.__name__} needs its item types")
    if isinstance(annotation, type):
        if annotation in _seen:
            raise UnsupportedType(
                f"{annotation.__name__} refers to itself; recursive types are not supported"
            )
        if issubclass(annotation, enum.Enum):
            return enum_node(annotation)
        seen = _seen | {annotation}
        model = model_node(annotation, lambda a: type_node(a, _seen=seen))
        if model is not None:
            return model
    advice = conversion_advice(annotation)
    raise UnsupportedType(
        f"{show_annotation(annotation)} is not a supported type"
        f"{': ' + advice if advice else ''} (supported: {SUPPORTED})"
    )


def conversion_advice(annotation: Any) -> str:
    """What to send instead of an unsupported type, for the types people try."""
    if annotation is typing.Any or annotation is object:
        return ("give the type of the values (int, str, list[float], numpy.ndarray, ...): "
                "the contract and the client's checks are written from it")
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return ("send the path as str (str(path)) and make a Path of it on the server; a "
                "path names a file of the machine that reads it, so the server reads its "
                "own files")
    name = getattr(annotation, "__name__", "")
    if (getattr(annotation, "__module__", "") or "").split(".")[0] == "pandas":
        return ("send it as a pandas.Series or pandas.DataFrame, which are supported "
                "(index.to_series(), pandas.Series(values), series.to_frame())")
    if typing.get_origin(annotation) is collections.abc.Callable or annotation is (
        collections.abc.Callable
    ):
        return ("functions cannot be sent: take the name of one (str, or Literal[...] of "
                "the names) and look it up on the server")
    if isinstance(annotation, type) and issubclass(annotation, np.generic):
        return "use the Python scalar type (float, int, bool) or numpy.ndarray"
    if isinstance(annotation, type):
        return (f"make {name} a dataclass (or a pydantic model) whose fields are supported "
                "types, or send its data as such a type and rebuild the object on the "
                "other side")
    return ""

