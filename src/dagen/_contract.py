"""The contract: the service model laid out as proto messages, enums and rpcs with
field numbers, and the lock file that keeps those numbers stable across rebuilds.

``dagen build`` writes ``<module>.dagen.lock`` next to the module's source (it belongs
in version control with it). Every later build and ``dagen serve`` number fields from
it: a field keeps its number for life, a new one gets a number never used before, and
a removed one's number is reserved. A rebuild that would break existing clients
(a function or parameter removed, a type changed, a parameter added without a default)
stops with a message naming each break, unless ``--allow-breaking`` is given.

Each rpc gets a fingerprint of everything its messages contain. The lock keeps, per
rpc, the fingerprints of every revision still compatible with the current one; the
client sends its fingerprint with each call and the server refuses an incompatible
one with a message naming both revisions (see ``_server``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._exceptions import ContractError
from ._model import INSTANCE_FIELD, Function, Parameter, Service
from ._types import ModelField, ModelNode, ProtoField, TypeNode, show_annotation, walk

LOCK_VERSION = 1



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


def parameter_field(p: Parameter) -> ProtoField:
    """Every scalar parameter has presence, so that the server can tell "not sent": a
    parameter with a default gets it (a client built before the parameter existed), a
    required one is refused (a client in another language that forgot it)."""
    f = p.type.proto_field()
    if p.type.shape == "scalar":
        return ProtoField(f.type, "optional")
    return f


def _plain(type_text: str) -> str:
    """Adding or removing presence does not change a field's encoding."""
    return type_text.removeprefix("optional ")


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


def _function_messages(fn: Function, numbering: _Numbering) -> list[Message]:
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
                p.doc,
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
                "result", fn.returns.proto_field(), fn.returns_doc, False, f"the result of {label}"
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


def build_contract(service: Service, lock: dict[str, Any] | None = None) -> Contract:
    """Lay the service out as proto declarations, numbered from the lock if given."""
    numbering = _Numbering(lock)
    messages: list[Message] = []
    enums: list[Enum] = []
    rpcs = []
    for fn in service.rpcs:
        messages += _function_messages(fn, numbering)
        rpcs.append(
            Rpc(
                fn.rpc,
                fn.key,
                fn.summary,
                fn.input_frame if fn.streaming else fn.request_message,
                fn.output_frame if fn.streaming else fn.response_message,
                fn.streaming,
                fn.server_streaming,
            )
        )
    for cls in service.classes:
        specs = [
            _spec(
                p.name,
                parameter_field(p),
                p.doc,
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
        else:
            comment = f"Holds {_annotation_text(d)} where protobuf cannot nest it directly."
        messages.append(Message(d.definition_name, comment, fields, d.oneof(), reserved))
    contract = Contract(
        service.package,
        service.name,
        service.doc or "",
        _imports(service),
        tuple(rpcs),
        tuple(messages),
        tuple(enums),
    )
    return _with_fingerprints(contract)


def _required(node: TypeNode, definition: Any, name: str) -> bool:
    """Whether a model's field must be given (then adding it would break old clients)."""
    for f in getattr(definition, "fields", ()) or ():
        if isinstance(f, ModelField) and f.name == name:
            return f.required and not f.has_default
    return False


def _annotation_text(definition: Any) -> str:
    return show_annotation(getattr(definition, "annotation", definition.definition_name))


# -- fingerprints -----------------------------------------------------------------------------


def _referenced(type_text: str) -> list[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", type_text.replace("map<", " ").replace(">", " "))


def _closure(contract: Contract, roots: list[str]) -> dict[str, Any]:
    messages = {m.name: m for m in contract.messages}
    enums = {e.name: e for e in contract.enums}
    seen: dict[str, Any] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name in messages:
            m = messages[name]
            seen[name] = [[f.name, f.number, f.type_text] for f in m.fields] + [m.oneof or ""]
            for f in m.fields:
                todo += _referenced(f.type)
        elif name in enums:
            seen[name] = [list(v) for v in enums[name].values]
        else:
            seen[name] = "external"  # dagen.v1.*, google.protobuf.*, scalars
    return seen


def _with_fingerprints(contract: Contract) -> Contract:
    rpcs = []
    for rpc in contract.rpcs:
        closure = _closure(contract, [rpc.request, rpc.response])
        canonical = json.dumps(
            [rpc.name, rpc.client_streaming, rpc.server_streaming, closure], sort_keys=True
        )
        rpcs.append(
            Rpc(
                rpc.name,
                rpc.key,
                rpc.comment,
                rpc.request,
                rpc.response,
                rpc.client_streaming,
                rpc.server_streaming,
                hashlib.sha256(canonical.encode()).hexdigest()[:16],
            )
        )
    return Contract(
        contract.package,
        contract.service,
        contract.comment,
        contract.imports,
        tuple(rpcs),
        contract.messages,
        contract.enums,
        contract.revision,
        {r.name: (r.fingerprint,) for r in rpcs},
    )


# -- the lock ---------------------------------------------------------------------------------


def lock_path_for(source: str | None, out: Path, package: str) -> Path:
    """Next to the module's source when it has one, else in the output folder."""
    if source:
        return Path(source).resolve().parent / f"{package}.dagen.lock"
    return out / f"{package}.dagen.lock"


def read_lock(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ContractError(f"{path} is not a valid lock file: {e}") from None
    if data.get("dagen_lock") != LOCK_VERSION:
        raise ContractError(f"{path} was written by another version of dagen's lock format")
    return data


def breaking_changes(lock: dict[str, Any], contract: Contract) -> list[str]:
    """What in the new contract would break clients built from the locked one."""
    problems = []
    new_rpcs = {r.name: r for r in contract.rpcs}
    for name, old in lock.get("rpcs", {}).items():
        rpc = new_rpcs.get(name)
        if rpc is None:
            problems.append(f"{old['function']}() was removed (rpc {name})")
        elif (old["client_streaming"], old["server_streaming"]) != (
            rpc.client_streaming,
            rpc.server_streaming,
        ):
            problems.append(f"{old['function']}() changed how it is called (streaming or not)")
    new_messages = {m.name: m for m in contract.messages}
    for name, old in lock.get("messages", {}).items():
        message = new_messages.get(name)
        if message is None:
            continue  # its users' fields changed type, or its rpcs went: reported there
        fields = {f.name: f for f in message.fields}
        for fname, entry in old["fields"].items():
            f = fields.get(fname)
            if f is None:
                problems.append(f"{entry['what'] or fname} was removed")
            elif _plain(f.type_text) != _plain(entry["type"]):
                problems.append(
                    f"{entry['what'] or fname} changed type from {_plain(entry['type'])} to {_plain(f.type_text)}"
                )
        for f in message.fields:
            if f.name not in old["fields"] and f.required:
                problems.append(
                    f"{f.what or f.name} was added without a default: clients built "
                    "before cannot send it"
                )
    new_enums = {e.name: e for e in contract.enums}
    for name, old in lock.get("enums", {}).items():
        enum = new_enums.get(name)
        if enum is None:
            continue
        present = {n for n, _ in enum.values}
        for value in old["values"]:
            if value not in present:
                problems.append(f"enum {name} lost its value {value}")
    return problems


def settle(contract: Contract, lock: dict[str, Any] | None, *, allow_breaking: bool) -> Contract:
    """The contract with its revision and the fingerprints each rpc still accepts;
    raise ContractError if it breaks the locked one and that is not allowed."""
    if lock is None:
        return contract
    problems = breaking_changes(lock, contract)
    if problems and not allow_breaking:
        raise ContractError(
            "this build would break clients built from the locked contract "
            f"(revision {lock['revision']}):\n  - "
            + "\n  - ".join(problems)
            + "\nKeep the old signature (add parameters with defaults instead), or rebuild with "
            "--allow-breaking and reinstall every client."
        )
    accepted = {}
    changed = False
    for rpc in contract.rpcs:
        old = lock.get("rpcs", {}).get(rpc.name)
        history = tuple(old["accepted"]) if old else ()
        if old is None or rpc.fingerprint not in history:
            changed = True
        if problems:  # after a break, only the new revision is accepted
            history = () if old is None or old["accepted"][-1] != rpc.fingerprint else history
        accepted[rpc.name] = tuple(dict.fromkeys([*history, rpc.fingerprint]))
    changed = changed or set(lock.get("rpcs", {})) != set(accepted)
    revision = lock["revision"] + 1 if changed else lock["revision"]
    return Contract(
        contract.package,
        contract.service,
        contract.comment,
        contract.imports,
        contract.rpcs,
        contract.messages,
        contract.enums,
        revision,
        accepted,
    )


def lock_data(contract: Contract) -> dict[str, Any]:
    return {
        "dagen_lock": LOCK_VERSION,
        "package": contract.package,
        "revision": contract.revision,
        "rpcs": {
            r.name: {
                "function": r.key,
                "client_streaming": r.client_streaming,
                "server_streaming": r.server_streaming,
                "accepted": list(contract.accepted.get(r.name, (r.fingerprint,))),
            }
            for r in contract.rpcs
        },
        "messages": {
            m.name: {
                "fields": {
                    f.name: {"number": f.number, "type": f.type_text, "what": f.what}
                    for f in m.fields
                },
                "reserved": list(m.reserved),
            }
            for m in contract.messages
        },
        "enums": {
            e.name: {"values": dict(e.values), "reserved": list(e.reserved)} for e in contract.enums
        },
    }


def write_lock(path: Path, contract: Contract) -> None:
    path.write_text(json.dumps(lock_data(contract), indent=1, sort_keys=True) + "\n")


# -- what the runtime needs ---------------------------------------------------------------------


CONTRACT_METADATA_KEY = "dagen-contract"


@dataclass(frozen=True)
class ContractInfo:
    """What a generated client or server embeds of its contract."""

    revision: int
    fingerprints: dict[str, str]  # rpc -> fingerprint of this build
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rpc -> still served

    def header(self, rpc: str) -> str:
        """The metadata value a client sends: ``<revision>:<fingerprint>``."""
        return f"{self.revision}:{self.fingerprints.get(rpc, '')}"

    def served(self, rpc: str) -> frozenset[str | None]:
        """The fingerprints of clients this server serves the rpc to."""
        return frozenset(self.accepted.get(rpc, (self.fingerprints.get(rpc),)))

    def check(self, rpc: str, header: str) -> str | None:
        """None if a client's header is compatible with this server, else why not."""
        revision, _, fingerprint = header.partition(":")
        if fingerprint in self.served(rpc):
            return None
        return (
            f"this client was built from revision {revision} of the contract, but the server "
            f"runs revision {self.revision}, which changed this call incompatibly "
            f"(client fingerprint {fingerprint or '?'}, server {self.fingerprints.get(rpc, '?')}). "
            "Rebuild the client from the served module (dagen build) and reinstall it."
        )
