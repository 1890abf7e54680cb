"""What every node of the type tree shares: the base classes, the errors and the walk."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from .._arrays import DecodeContext, EncodeContext


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
    """The type of ``value`` as a reader would write it, for error messages."""
    return show_annotation(type(value))


def mismatch(expected: str, value: Any) -> EncodeError:
    return EncodeError(f"expected {expected}, got {type_name(value)}")


def snake(name: str) -> str:
    """``DataArray`` -> ``data_array``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class ProtoField:
    """How a node is declared as a field: ``<label> <type> name = n;``."""

    type: str
    label: str = ""  # "", "optional" or "repeated"; maps carry their own syntax in type


class TypeNode:
    """One node of the type tree. Subclasses are frozen dataclasses."""

    shape: ClassVar[str]  # "scalar", "message", "container", "optional" or "none"
    # The .proto files a contract must import to declare this node's field (its own
    # message's file, for the toolkit's messages and the well-known types).
    proto_imports: ClassVar[tuple[str, ...]] = ()
    annotation: Any

    @property
    def has_arrays(self) -> bool:
        return any(child.has_arrays for child in self.children())

    @property
    def name(self) -> str:
        """A CamelCase name, used to name generated messages."""
        raise NotImplementedError

    def children(self) -> tuple[TypeNode, ...]:
        return ()

    def proto_field(self) -> ProtoField:
        raise NotImplementedError

    def accepts(self, value: Any) -> bool:
        """A cheap check of the value's kind, to choose a Union's member."""
        raise NotImplementedError

    def encode(self, value: Any, msg: Any, field: str, ctx: EncodeContext) -> None:
        """Put ``value`` into ``msg.<field>``; raise EncodeError if it does not fit."""
        raise NotImplementedError

    def decode(self, msg: Any, field: str, ctx: DecodeContext) -> Any:
        """Read the Python value of ``msg.<field>``."""
        raise NotImplementedError


class Definition:
    """A node whose proto type is generated: a message (fields) or an enum (values)."""

    definition_name: str
    doc: str = ""

    def definition_fields(self) -> list[tuple[str, TypeNode, str]]:
        """(field name, node, comment) of a generated message; [] for enums."""
        return []

    def oneof(self) -> str | None:
        """The oneof all fields belong to, if any."""
        return None

    def enum_values(self) -> list[str] | None:
        """The value names (after the UNSPECIFIED zero) of a generated enum."""
        return None


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


def own_doc(cls: type) -> str | None:
    """A class's own docstring: not one inherited (TypedDict from dict) nor the one
    dataclasses make up from the signature."""
    doc = cls.__dict__.get("__doc__")
    if doc and dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return None
    return doc


def class_summary(obj: Any) -> str:
    """The first paragraph of a class's own docstring ("" for anything else)."""
    doc = inspect.cleandoc(own_doc(obj) or "") if isinstance(obj, type) else ""
    return doc.split("\n\n")[0].strip()


def show_annotation(annotation: Any) -> str:
    """An annotation as a reader would write it: ``numpy.ndarray``, ``list[int]``."""
    if isinstance(annotation, type):
        module = annotation.__module__
        return (
            annotation.__qualname__
            if module == "builtins"
            else f"{module}.{annotation.__qualname__}"
        )
    return repr(annotation).replace("typing.", "")


def walk(node: TypeNode) -> Iterator[TypeNode]:
    """The node and all nodes below it, depth first, children before their parent."""
    for child in node.children():
        yield from walk(child)
    yield node


def definitions(roots: typing.Iterable[TypeNode]) -> list[Definition]:
    """The generated messages and enums the nodes need, each once, dependencies first."""
    found: dict[str, Definition] = {}
    for root in roots:
        for node in walk(root):
            if isinstance(node, Definition):
                previous = found.get(node.definition_name)
                if previous is not None and previous != node:
                    raise UnsupportedType(
                        f"two different types both need the proto name {node.definition_name!r}"
                    )
                found.setdefault(node.definition_name, node)
    return list(found.values())
