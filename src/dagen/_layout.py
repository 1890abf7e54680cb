"""The contract's layout: the service model as proto messages, enums and rpcs, with
field numbers that stay stable across rebuilds.

Numbers come from the lock file (``_lock``) where it has them: a field keeps its
number for life, a new one gets a number never used before, and a removed one's
number is reserved. :func:`lay_out` makes the contract; ``_fingerprint`` then gives
each rpc its fingerprint and ``_lock.settle`` its revision (``_build`` runs the three).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ._docstrings import Docs, parse_docs
from ._model import INSTANCE_FIELD, Function, Parameter, Service
from ._types import (
    DictEntryNode,
    ModelField,
    ModelNode,
    ProtoField,
    TypeNode,
    show_annotation,
    snake,
    walk,
)


@dataclass(frozen=True)
class Field:
    name: str
    label: str  # "", "optional" or "repeated"
    type: str
    number: int
    comment: str = ""
    required: bool = False  # a parameter or model field without default
    what: str = ""  # "parameter 'dim' of anomaly()", for messages about changes

    @property
    def type_text(self) -> str:
        return f"{self.label} {self.type}".strip()

    @property
    def declaration(self) -> str:
        return f"{self.type_text} {self.name} = {self.number};"


@dataclass(frozen=True)
class Message:
    name: str
    comment: str
    fields: tuple[Field, ...]
    oneof: str | None = None
    reserved: tuple[int, ...] = ()


@dataclass(frozen=True)
class Enum:
    name: str
    comment: str
    values: tuple[tuple[str, int], ...]  # after NAME_UNSPECIFIED = 0
    reserved: tuple[int, ...] = ()

    @property
    def zero(self) -> str:
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", self.name).upper() + "_UNSPECIFIED"


@dataclass(frozen=True)
class Rpc:
    name: str
    key: str  # the function's runtime name
    comment: str
    request: str
    response: str
    client_streaming: bool
    server_streaming: bool
    fingerprint: str = ""


@dataclass(frozen=True)
class Contract:
    package: str
    service: str
    comment: str
    imports: tuple[str, ...]
    rpcs: tuple[Rpc, ...]
    messages: tuple[Message, ...]
    enums: tuple[Enum, ...]
    revision: int = 1
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rpc -> fingerprints

    @property
    def fingerprints(self) -> dict[str, str]:
        return {r.name: r.fingerprint for r in self.rpcs}


# -- numbering --------------------------------------------------------------------------------


class _Numbering:
    """Field and enum value numbers: from the lock where it has them, new ones after
    every number ever used (reserved ones included)."""

    def __init__(self, lock: dict[str, Any] | None) -> None:
        self.lock = lock or {}

    def fields(self, message: str, specs: list[Field]) -> tuple[tuple[Field, ...], tuple[int, ...]]:
        old = self.lock.get("messages", {}).get(message)
        if old is None:
            return tuple(_renumber(f, i + 1) for i, f in enumerate(specs)), ()
        known = {name: entry["number"] for name, entry in old["fields"].items()}
        used = set(known.values()) | set(old.get("reserved", []))
        next_number = max(used, default=0) + 1
        out = []
        for spec in specs:
            number = known.get(spec.name)
            if number is None:
                number, next_number = next_number, next_number + 1
            out.append(_renumber(spec, number))
        kept = {f.number for f in out}
        reserved = sorted((set(old.get("reserved", [])) | set(known.values())) - kept)
        return tuple(out), tuple(reserved)

    def values(
        self, enum: str, names: list[str]
    ) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
        old = self.lock.get("enums", {}).get(enum)
        if old is None and enum.startswith("Literal"):
            return self._extended_literal(enum, names)
        if old is None:
            return tuple((n, i + 1) for i, n in enumerate(names)), ()
        known = dict(old["values"])
        used = set(known.values()) | set(old.get("reserved", []))
        next_number = max(used, default=0) + 1
        out = []
        for name in names:
            number = known.get(name)
            if number is None:
                number, next_number = next_number, next_number + 1
            out.append((name, number))
        kept = {n for _, n in out}
        reserved = sorted((set(old.get("reserved", [])) | set(known.values())) - kept)
        return tuple(out), tuple(reserved)


    def _extended_literal(
        self, enum: str, names: list[str]
    ) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
        """A Literal's enum is named after its values, so a Literal with a value added is
        a new enum: its values keep the numbers of the locked Literal it extends (the
        largest whose values it all has), so that old clients' numbers mean the same."""
        labels = [n.removeprefix(literal_prefix(enum)) for n in names]
        best: dict[str, int] = {}
        for name, old in sorted(self.lock.get("enums", {}).items()):
            if not name.startswith("Literal"):
                continue
            known = {k.removeprefix(literal_prefix(name)): v for k, v in old["values"].items()}
            if known.keys() <= set(labels) and len(known) > len(best):
                best = known
        next_number = max(best.values(), default=0) + 1
        out = []
        for name, label in zip(names, labels, strict=True):
            number = best.get(label)
            if number is None:
                number, next_number = next_number, next_number + 1
            out.append((name, number))
        return tuple(out), ()


def literal_prefix(enum: str) -> str:
    """What a generated enum's value names start with: ``LiteralFastExact`` ->
    ``LITERAL_FAST_EXACT_``."""
    return snake(enum).upper() + "_"


def parameter_field(p: Parameter) -> ProtoField:
    """Every scalar parameter has presence, so that the server can tell "not sent": a
    parameter with a default gets it (a client built before the parameter existed), a
    required one is refused (a client in another language that forgot it)."""
    f = p.type.proto_field()
    if p.type.shape == "scalar":
        return ProtoField(f.type, "optional")
    return f


def _renumber(f: Field, number: int) -> Field:
    return Field(f.name, f.label, f.type, number, f.comment, f.required, f.what)


def _spec(
    name: str, node_field: ProtoField, comment: str = "", required: bool = False, what: str = ""
) -> Field:
    return Field(name, node_field.label, node_field.type, 0, comment, required, what)


# -- building ---------------------------------------------------------------------------------


def _imports(service: Service) -> tuple[str, ...]:
    nodes = [n for fn in service.rpcs for root in fn.type_roots() for n in walk(root)]
    nodes += [n for c in service.classes for p in c.init.parameters for n in walk(p.type)]
    wanted = {path for n in nodes for path in n.proto_imports}
    if any(fn.streaming for fn in service.rpcs):  # the frames carry dagen.v1.Chunk
        wanted.add("dagen/v1/array.proto")
    if any(fn.progress for fn in service.rpcs):
        wanted.add("dagen/v1/progress.proto")
    return tuple(sorted(wanted))


def _function_messages(fn: Function, docs: Docs, numbering: _Numbering) -> list[Message]:
    label = f"{fn.key}()"
    specs = []
    if fn.has_instance:
        specs.append(
            _spec(
                INSTANCE_FIELD,
                ProtoField(f"{fn.owner}Init"),
                f"The arguments {fn.owner} is constructed with.",
                True,
                f"the {fn.owner} instance of {label}",
            )
        )
    for p in fn.parameters:
        specs.append(
            _spec(
                p.name,
                parameter_field(p),
                docs.parameters.get(p.name, ""),
                not p.has_default,
                f"parameter {p.name!r} of {label}",
            )
        )
    fields, reserved = numbering.fields(fn.request_message, specs)
    messages = [Message(fn.request_message, f"Arguments of {label}.", fields, reserved=reserved)]
    result = (
        []
        if fn.returns.shape == "none"
        else [
            _spec(
                "result", fn.returns.proto_field(), docs.returns, False, f"the result of {label}"
            )
        ]
    )
    fields, reserved = numbering.fields(fn.response_message, result)
    what = "Each item" if fn.generator else "Result"
    messages.append(Message(fn.response_message, f"{what} of {label}.", fields, reserved=reserved))
    if fn.streaming:
        chunk = Field("chunk", "", "dagen.v1.Chunk", 2)
        messages.append(
            Message(
                fn.input_frame,
                f"Frames of the {fn.rpc} call from the client: the request, then chunks.",
                (Field("request", "", fn.request_message, 1), chunk),
                oneof="frame",
            )
        )
        reply = (
            "each response followed by its chunks" if fn.generator else "the response, then chunks"
        )
        output: tuple[Field, ...] = (Field("response", "", fn.response_message, 1), chunk)
        if fn.progress:  # reports of the running function, before the response
            reply = f"progress reports, then {reply}"
            output += (Field("progress", "", "dagen.v1.Progress", 3),)
        messages.append(
            Message(
                fn.output_frame,
                f"Frames of the {fn.rpc} call from the server: {reply}.",
                output,
                oneof="frame",
            )
        )
    return messages


def lay_out(service: Service, lock: dict[str, Any] | None = None) -> Contract:
    """Lay the service out as proto declarations, numbered from the lock if given
    (the rpcs' fingerprints are left empty: ``_fingerprint.with_fingerprints``)."""
    numbering = _Numbering(lock)
    messages: list[Message] = []
    enums: list[Enum] = []
    rpcs = []
    for fn in service.rpcs:
        docs = parse_docs(fn.doc)
        messages += _function_messages(fn, docs, numbering)
        rpcs.append(
            Rpc(
                fn.rpc,
                fn.key,
                docs.summary,
                fn.input_frame if fn.streaming else fn.request_message,
                fn.output_frame if fn.streaming else fn.response_message,
                fn.streaming,
                fn.server_streaming,
            )
        )
    for cls in service.classes:
        init_docs = parse_docs(cls.init.doc).parameters
        specs = [
            _spec(
                p.name,
                parameter_field(p),
                init_docs.get(p.name, ""),
                not p.has_default,
                f"constructor parameter {p.name!r} of {cls.name}",
            )
            for p in cls.init.parameters
        ]
        fields, reserved = numbering.fields(cls.init_message, specs)
        messages.append(
            Message(
                cls.init_message, f"Constructor arguments of {cls.name}.", fields, reserved=reserved
            )
        )
    for d in service.definitions():
        names = d.enum_values()
        if names is not None:
            values, reserved = numbering.values(d.definition_name, names)
            enums.append(Enum(d.definition_name, d.doc, values, reserved))
            continue
        specs = [
            _spec(
                name,
                node.proto_field(),
                comment,
                _required(node, d, name),
                f"field {name!r} of {d.definition_name}",
            )
            for name, node, comment in d.definition_fields()
        ]
        fields, reserved = numbering.fields(d.definition_name, specs)
        if isinstance(d, ModelNode):
            comment = d.doc or f"The fields of {_annotation_text(d)}."
        elif isinstance(d, DictEntryNode):
            comment = f"An item of {_annotation_text(d)}, in order (a map entry's bytes)."
        else:
            comment = f"Holds {_annotation_text(d)} where protobuf cannot nest it directly."
        messages.append(Message(d.definition_name, comment, fields, d.oneof(), reserved))
    return Contract(
        service.package,
        service.name,
        service.doc or "",
        _imports(service),
        tuple(rpcs),
        tuple(messages),
        tuple(enums),
    )


def _required(node: TypeNode, definition: Any, name: str) -> bool:
    """Whether a model's field must be given (then adding it would break old clients)."""
    for f in getattr(definition, "fields", ()) or ():
        if isinstance(f, ModelField) and f.name == name:
            return f.required and not f.has_default
    return False


def _annotation_text(definition: Any) -> str:
    return show_annotation(getattr(definition, "annotation", definition.definition_name))
