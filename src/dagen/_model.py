"""The intermediate model: what a service is, independent of how it is rendered or run.

Introspection (``_introspect``) builds it once; the contract, the renderers, the
server and the client read only this model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ._types import Definition, TypeNode, definitions


def camel(name: str) -> str:
    """``zonal_mean`` -> ``ZonalMean``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


INSTANCE_FIELD = "instance"  # the request field that carries a method's constructor arguments

DATASET_MARK = "__dagen_dataset__"  # set by @dagen.dataset


def dataset(fn: Any, /) -> Any:
    """Mark a served function that returns a lazily opened ``xarray.Dataset``
    (``xr.open_zarr(...)``, ``xr.open_mfdataset(..., chunks=...)``): a caller gets the
    dataset at once, its data variables as dask arrays whose blocks are read from the
    server only when computed (see protos/dagen/v1/dataset.proto). Generated clients
    mark the function the same way."""
    setattr(fn, DATASET_MARK, True)
    return fn


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: inspect._ParameterKind
    annotation: Any
    type: TypeNode
    default: Any  # inspect.Parameter.empty when there is none
    line: int

    @property
    def has_default(self) -> bool:
        return self.default is not inspect.Parameter.empty


@dataclass(frozen=True)
class Function:
    """A remote function, or a method of a remote class (``owner`` names the class)."""

    name: str
    parameters: tuple[Parameter, ...]
    returns: TypeNode  # for a generator: the type of each item
    return_annotation: Any
    doc: str | None  # the docstring exactly as written (_docstrings reads it at build time)
    line: int
    generator: bool = False  # yields its results one by one
    owner: str | None = None  # the class of a method
    kind: str = "function"  # "function", "method", "staticmethod" or "classmethod"
    progress: str | None = None  # the dagen.Progress parameter the server fills in (not remote)
    instance_arrays: bool = False  # a method whose object's constructor takes arrays
    dataset: bool = False  # @dagen.dataset: returns a handle of a lazily opened dataset

    @property
    def key(self) -> str:
        """How the runtime names it: ``anomaly`` or ``Model.predict``."""
        return f"{self.owner}.{self.name}" if self.owner else self.name

    @property
    def rpc(self) -> str:
        return camel(self.owner or "") + camel(self.name)

    @property
    def has_instance(self) -> bool:
        return self.kind == "method"

    @property
    def streaming(self) -> bool:
        """Whether any array travels, or the function reports progress: then the rpc is
        a stream of frames each way (progress frames need the output stream)."""
        return (
            self.progress is not None
            or self.instance_arrays
            or self.returns.has_arrays
            or any(p.type.has_arrays for p in self.parameters)
        )

    @property
    def server_streaming(self) -> bool:
        return self.streaming or self.generator

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

    def type_roots(self) -> list[TypeNode]:
        return [self.returns, *(p.type for p in self.parameters)]


@dataclass(frozen=True)
class RemoteClass:
    """A public class: each call constructs it with the caller's constructor arguments
    and calls the method (DASF's semantics)."""

    name: str
    doc: str | None
    init: Function  # the constructor's parameters; returns None
    methods: tuple[Function, ...]

    @property
    def init_message(self) -> str:
        return f"{self.name}Init"


@dataclass(frozen=True)
class RemoteException:
    """A public exception class of the served module, mirrored in the client package:
    a remote one is raised there as the mirror (same name, same built-in bases)."""

    name: str
    wire_name: str  # "module.qualname" of the class on the server, as errors name it
    bases: tuple[str, ...]  # "builtins.ValueError", or the name of another mirrored exception
    doc: str | None
    line: int


@dataclass(frozen=True)
class Service:
    module: str  # the Python module served, e.g. "ocean_tools"
    doc: str | None
    functions: tuple[Function, ...]  # module-level functions
    classes: tuple[RemoteClass, ...] = ()
    exceptions: tuple[RemoteException, ...] = ()  # bases before the classes derived from them

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

    @property
    def rpcs(self) -> tuple[Function, ...]:
        """Every remote function: module functions, then each class's methods."""
        return self.functions + tuple(m for c in self.classes for m in c.methods)

    def function(self, key: str) -> Function:
        for fn in self.rpcs:
            if fn.key == key:
                return fn
        raise KeyError(key)

    def type_roots(self) -> list[TypeNode]:
        """The types of every parameter and result of the service's calls, and of its
        classes' constructors."""
        roots = [node for fn in self.rpcs for node in fn.type_roots()]
        roots += [p.type for c in self.classes for p in c.init.parameters]
        return roots

    def definitions(self) -> list[Definition]:
        """The generated messages and enums the service's types need, dependencies first."""
        return definitions(self.type_roots())
