"""The intermediate model: what a service is, independent of how it is rendered or run.

Introspection (``_introspect``) builds it once; the renderers, the server and the
client read only this model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ._types import TypeNode, WrapperNode, walk


def camel(name: str) -> str:
    """``zonal_mean`` -> ``ZonalMean``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: inspect._ParameterKind
    annotation: Any
    type: TypeNode
    default: Any  # inspect.Parameter.empty when there is none
    doc: str
    line: int

    @property
    def has_default(self) -> bool:
        return self.default is not inspect.Parameter.empty


@dataclass(frozen=True)
class Function:
    name: str
    parameters: tuple[Parameter, ...]
    returns: TypeNode
    return_annotation: Any
    doc: str | None  # the docstring exactly as written
    summary: str
    returns_doc: str
    line: int

    @property
    def rpc(self) -> str:
        return camel(self.name)

    @property
    def streaming(self) -> bool:
        """Whether any array travels: then the rpc is a stream of frames."""
        return self.returns.has_arrays or any(p.type.has_arrays for p in self.parameters)

    @property
    def request_message(self) -> str:
        return f"{self.rpc}Request"

    @property
    def response_message(self) -> str:
        return f"{self.rpc}Response"

    @property
    def input_frame(self) -> str:
        return f"{self.rpc}Input"

    @property
    def output_frame(self) -> str:
        return f"{self.rpc}Output"

    def signature(self) -> inspect.Signature:
        return inspect.Signature(
            [
                inspect.Parameter(p.name, p.kind, default=p.default, annotation=p.annotation)
                for p in self.parameters
            ],
            return_annotation=self.return_annotation,
        )


@dataclass(frozen=True)
class Service:
    module: str  # the Python module served, e.g. "ocean_tools"
    doc: str | None
    functions: tuple[Function, ...]

    @property
    def name(self) -> str:
        return camel(self.module.rsplit(".", 1)[-1])

    @property
    def package(self) -> str:
        """The proto package: the module's name."""
        return self.module.rsplit(".", 1)[-1]

    @property
    def full_name(self) -> str:
        return f"{self.package}.{self.name}"

    @property
    def client_package(self) -> str:
        return f"{self.package}_client"

    def function(self, name: str) -> Function:
        for fn in self.functions:
            if fn.name == name:
                return fn
        raise KeyError(name)

    def wrappers(self) -> list[WrapperNode]:
        """The wrapper messages the service's types need, each once, in a stable order."""
        found: dict[str, WrapperNode] = {}
        for fn in self.functions:
            for root in (fn.returns, *(p.type for p in fn.parameters)):
                for node in walk(root):
                    if isinstance(node, WrapperNode):
                        found.setdefault(node.message_name, node)
        return list(found.values())
