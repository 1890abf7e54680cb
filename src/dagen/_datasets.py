"""Remote datasets on the server: the handles of lazily opened datasets, and the
``dagen.v1.Datasets`` service that reads their blocks (protos/dagen/v1/dataset.proto).

A ``@dagen.dataset`` function runs like any function (in the executor); the servicer
then registers the ``xarray.Dataset`` it returned (:meth:`Registry.open`) under a
random handle bound to the caller's identity, and sends the handle with the schema
and the coordinates (:func:`fill_handle`). ``ReadBlock`` computes one block of a
variable where the executor runs functions (:meth:`Executor.compute_block`: a thread,
a worker process, a dask worker) and sends it as any array travels, in chunks.

Every read is a call of the dataset function for the server's guard: the deny-list,
the policy and the call limits are checked each time (a revoked identity is refused
at its next read), the block's bytes count against ``--max-memory``, and a handle is
read only by the identity that opened it. A handle unused for ``idle_timeout``
seconds (``dagen serve --dataset-idle-timeout``) is released and its dataset closed.
"""

from __future__ import annotations

import contextvars
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from ._arrays import EncodeContext, attach_array, is_dask
from ._budget import budget_check
from ._codecs import accepted_codecs
from ._executors import Cancelled, supervise
from ._logs import call_id
from ._security import caller, run_each
from ._wire import LimitExceeded, WireError, frame_serializer
from .v1 import dataset_pb2

if TYPE_CHECKING:
    import xarray as xr

    from ._security import Identity
    from ._server import Servicer

log = logging.getLogger("dagen.server")

DATASETS_SERVICE = "dagen.v1.Datasets"
DEFAULT_IDLE_TIMEOUT = 600.0  # seconds: dagen serve --dataset-idle-timeout
DEFAULT_MAX_PER_IDENTITY = 32  # handles one identity holds at once: --max-datasets-per-identity
# Non-index coordinates travel with the handle while all of them together hold at most
# this many bytes; above it they are lazy too (index coordinates always travel).
INLINE_COORDS_BYTES = 64 << 20
# The blocks the server makes of a variable that is not a dask array (in memory, or
# opened without chunks=): dask's "auto" chunks of at most this many bytes.
AUTO_BLOCK_BYTES = 16 << 20


# Encoding entries that stay on the server: where its files are.
PRIVATE_ENCODING = frozenset({"source"})


class HandleRefused(Exception):
    """A handle that cannot be used: ``code`` is the rpc's status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Variable:
    """A lazy variable of an opened dataset: its data (a dask array, or a variable in
    memory) and its blocks."""

    data: Any  # a dask array, or the xarray.Variable itself when it is in memory
    chunks: tuple[tuple[int, ...], ...]
    attrs: dict[str, Any]
    dims: tuple[str, ...]
    dtype: np.dtype
    coordinate: bool = False

    def block(self, index: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
        """The block (a dask array, or a callable that reads it) and its shape."""
        if len(index) != len(self.chunks) or any(
                not 0 <= i < len(c) for i, c in zip(index, self.chunks, strict=True)):
            raise IndexError(f"block {list(index)} is not a block of a variable with "
                             f"{[len(c) for c in self.chunks]} blocks per dimension")
        shape = tuple(c[i] for i, c in zip(index, self.chunks, strict=True))
        if is_dask(self.data):
            return self.data.blocks[index], shape
        starts = [sum(c[:i]) for i, c in zip(index, self.chunks, strict=True)]
        key = tuple(slice(s, s + n) for s, n in zip(starts, shape, strict=True))
        return self.data[key], shape


@dataclass
class Opened:
    """A dataset opened for a caller."""

    handle: str
    function: str  # the dataset function's key
    owner: str  # the identity that opened it (its certificate's common name)
    dataset: xr.Dataset
    idle_timeout: float
    variables: dict[str, Variable]
    inline_coords: list[Hashable]
    last_used: float = field(default_factory=time.monotonic)


def _variables(ds: xr.Dataset) -> tuple[dict[str, Variable], list[Hashable]]:
    """The lazy variables of a dataset, and the coordinates that travel with its handle."""
    import dask.array

    index_coords = [name for name in ds.coords if name in ds.xindexes]
    others = [name for name in ds.coords if name not in ds.xindexes]
    small = sum(ds[name].nbytes for name in others) <= INLINE_COORDS_BYTES
    inline = index_coords + (others if small else [])
    lazy = [*ds.data_vars, *([] if small else others)]
    variables = {}
    for name in lazy:
        var = ds.variables[name]
        if not isinstance(name, str):
            raise TypeError(f"variable names must be str to be sent, got {name!r}")
        data: Any
        if var.chunks is not None:  # a dask array (var.data of a lazily indexed one loads it)
            data = var.data
            chunks = tuple(tuple(int(n) for n in c) for c in data.chunks)
        else:  # in memory, or opened without chunks=: the server's own blocks
            chunks = dask.array.core.normalize_chunks(
                "auto", var.shape, limit=AUTO_BLOCK_BYTES,
                dtype=var.dtype if var.dtype.kind != "O" else np.dtype("i8"))
            # read lazily: its blocks as dask's, computed by the executor like any other
            data = var if var._in_memory else var.chunk(dict(zip(var.dims, chunks, strict=True))).data
        variables[name] = Variable(data, chunks, dict(var.attrs), tuple(map(str, var.dims)),
                                   var.dtype, coordinate=name not in ds.data_vars)
    return variables, inline


def fill_handle(opened: Opened, m: Any, ctx: EncodeContext) -> None:
    """Fill a dagen.v1.DatasetHandle: the LazyDatasetNode's encoding."""
    from ._xarray import fill_attrs, fill_dataset, write_value

    if not isinstance(opened, Opened):
        raise TypeError("a dataset function's result is sent as the handle the server opened")
    ds = opened.dataset
    m.handle = opened.handle
    m.idle_timeout = opened.idle_timeout
    m.function = opened.function
    schema = ds.drop_vars([*ds.data_vars, *(n for n in ds.coords
                                             if n not in opened.inline_coords)])
    m.schema.SetInParent()
    fill_dataset(schema, m.schema, ctx)
    for name, var in opened.variables.items():
        v = m.variables.add()
        v.name = name
        v.dims.extend(var.dims)
        v.dtype = var.dtype.str
        v.shape.extend(sum(c) for c in var.chunks)
        for sizes in var.chunks:
            v.chunks.add().sizes.extend(sizes)
        fill_attrs(var.attrs, v.attrs, f"variable {name!r}")
        v.coordinate = var.coordinate
    for key_name, variable in ds.variables.items():
        items = [(k, np.dtype(value).str if k == "dtype" else value)
                 for k, value in variable.encoding.items() if k not in PRIVATE_ENCODING]
        if not items:
            continue
        encoding = dataset_pb2.VariableEncoding(variable=str(key_name))
        for key, value in items:
            attr = encoding.items.add()
            try:
                write_value(value, attr.value)
            except (TypeError, ValueError):
                del encoding.items[-1]  # codec objects (compressor, filters) stay on the server
                continue
            attr.name = str(key)
        if encoding.items:
            m.encodings.append(encoding)


# -- the handles ----------------------------------------------------------------------------------


class Registry:
    """The datasets opened on this server, by handle."""

    def __init__(self, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 max_per_identity: int = DEFAULT_MAX_PER_IDENTITY) -> None:
        if not idle_timeout > 0:
            raise ValueError("the dataset idle timeout must be more than 0 seconds")
        if max_per_identity < 1:
            raise ValueError("the datasets one identity may hold open must be at least 1")
        self.idle_timeout = idle_timeout
        self.max_per_identity = max_per_identity
        self._opened: dict[str, Opened] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def open(self, function: str, dataset: Any, owner: str) -> Opened:
        import xarray as xr

        if not isinstance(dataset, xr.Dataset):
            raise TypeError(f"the dataset function {function}() returned "
                            f"{type(dataset).__name__}, not an xarray.Dataset")
        variables, inline = _variables(dataset)
        opened = Opened(secrets.token_urlsafe(24), function, owner, dataset, self.idle_timeout,
                        variables, inline)
        with self._lock:
            held = sum(1 for o in self._opened.values() if o.owner == owner)
            if held < self.max_per_identity:
                self._opened[opened.handle] = opened
        if held >= self.max_per_identity:  # each handle may hold files open on the server
            _close(dataset, function)
            raise HandleRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{owner or 'an anonymous caller'} already holds {held} open datasets on "
                f"this server, its limit (dagen serve --max-datasets-per-identity); close "
                f"the ones no longer needed with ds.close(), or they are released after "
                f"{self.idle_timeout:g} s unused"))
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="dagen-datasets",
                                                daemon=True)
                self._reaper.start()
        log.info("%s opened %s() as handle %s...: %d variables", owner, function,
                 opened.handle[:8], len(variables),
                 extra={"event": "dataset_open", "identity": owner, "function": function})
        return opened

    def peek(self, handle: str) -> Opened | None:
        with self._lock:
            return self._opened.get(handle)

    def get(self, handle: str, owner: str) -> Opened:
        """The opened dataset, for its owner (HandleRefused otherwise); it was used now."""
        with self._lock:
            opened = self._opened.get(handle)
        if opened is None:
            raise HandleRefused(grpc.StatusCode.NOT_FOUND, (
                "no such dataset handle on this server: it expired (unused for the server's "
                f"--dataset-idle-timeout of {self.idle_timeout:g} s) or was released; open "
                "the dataset again"))
        if opened.owner != owner:
            raise HandleRefused(grpc.StatusCode.PERMISSION_DENIED, (
                f"the handle of {opened.function}() was opened by another identity; "
                f"{owner or 'an anonymous caller'} may not read it (open the dataset with "
                "your own identity)"))
        opened.last_used = time.monotonic()
        return opened

    def release(self, handle: str, owner: str | None = None, why: str = "released") -> bool:
        with self._lock:
            opened = self._opened.get(handle)
            if opened is None or (owner is not None and opened.owner != owner):
                return False
            del self._opened[handle]
        log.info("dataset handle %s... of %s() %s", handle[:8], opened.function, why,
                 extra={"event": "dataset_release", "identity": opened.owner,
                        "function": opened.function, "reason": why})
        _close(opened.dataset, opened.function)
        return True

    def _reap(self) -> None:
        every = max(0.05, min(self.idle_timeout / 4, 5.0))
        while not self._stop.wait(every):
            now = time.monotonic()
            with self._lock:
                idle = [h for h, o in self._opened.items()
                        if now - o.last_used > o.idle_timeout]
            for handle in idle:
                self.release(handle, why=f"expired after {self.idle_timeout:g} s unused")

    def close(self) -> None:
        self._stop.set()
        for handle in list(self._opened):
            self.release(handle, why="released: the server stops")


def _close(dataset: Any, function: str) -> None:
    try:
        dataset.close()
    except Exception:  # noqa: BLE001 - a dataset that cannot close is let go anyway
        log.exception("closing the dataset of %s() failed", function)


# -- the service ----------------------------------------------------------------------------------


def _identity(context: grpc.ServicerContext) -> Identity:
    from ._security import identity_from_auth

    return identity_from_auth(context.auth_context() or {}, context.peer())


def refuse_handle(context: grpc.ServicerContext, e: HandleRefused, what: str) -> None:
    log.warning("%s refused: %s", what, e, extra={
        "event": "refused", "call_id": call_id(context), "status": e.code.name,
        "reason": str(e)})
    context.abort(e.code, f"{what}: {e}")


class DatasetsService:
    """``dagen.v1.Datasets`` of a servicer's server."""

    def __init__(self, servicer: Servicer, guard: Any) -> None:
        self.servicer = servicer
        self.registry: Registry = servicer.datasets
        self.guard = guard
        self._check = budget_check(dataset_pb2.ReadBlockRequest.DESCRIPTOR,
                                   servicer.options.limits, "the request")

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(DATASETS_SERVICE, {
            "ReadBlock": grpc.unary_stream_rpc_method_handler(
                self.read_block, response_serializer=frame_serializer),
            "Release": grpc.unary_unary_rpc_method_handler(
                self.release, request_deserializer=dataset_pb2.ReleaseRequest.FromString,
                response_serializer=dataset_pb2.ReleaseResponse.SerializeToString),
        })

    def admitted(self, handle: str, context: grpc.ServicerContext,
                 ) -> tuple[Opened, contextvars.Context]:
        """The opened dataset, once the guard admitted this caller to its function (the
        deny-list, the policy and the call limits, as for a call of it) and the caller
        is the identity that opened it; the context where dagen.caller() is set.
        Aborts the rpc otherwise."""
        opened = self.registry.peek(handle)
        function = opened.function if opened is not None else "a dataset"
        ctx = None
        try:
            if opened is not None:
                ctx = self.guard.enter(function, context)  # aborts when refused
            # the guard's caller (looked up once); get() refuses an unknown handle first
            identity = ctx.run(caller) if ctx is not None else None
            opened = self.registry.get(handle, identity.name if identity is not None else "")
        except HandleRefused as e:
            refuse_handle(context, e, f"reading a block of {function}()" if ctx else
                    "reading a dataset block")
        assert opened is not None and ctx is not None
        return opened, ctx

    def read_block(self, data: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            self._check(data)
            request = dataset_pb2.ReadBlockRequest.FromString(data)
        except LimitExceeded as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"ReadBlock: {e}")
        except Exception as e:  # noqa: BLE001 - any parse failure is the peer's fault
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ReadBlock: malformed request: {e}")
        opened, ctx = self.admitted(request.handle, context)
        # each step in the guard's context: dagen.caller() goes on to the executor
        return run_each(ctx, ctx.run(self._send_block, opened, request, context, started))

    def _send_block(self, opened: Opened, request: Any, context: grpc.ServicerContext,
                    started: float) -> Iterator[Any]:
        servicer = self.servicer
        what = f"{opened.function}(): variable {request.variable!r}"
        var = opened.variables.get(request.variable)
        if var is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{opened.function}() has no lazy variable {request.variable!r} "
                          f"(it has {', '.join(map(repr, opened.variables))})")
        assert var is not None
        try:
            block, shape = var.block(tuple(request.block))
        except IndexError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {e}")
        nbytes = math.prod(shape) * var.dtype.itemsize
        executor = servicer.executor
        call = executor.open(context)
        alloc = servicer.admission.alloc(context, call.alloc)
        try:
            alloc.reserve(nbytes)  # the block held here while it is sent: --max-memory
        except LimitExceeded as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: block "
                          f"{list(request.block)}: {e}")
        try:
            if is_dask(block):
                computed = _finish(supervise(call, executor.compute_block(call, block), context))
            else:
                computed = np.asarray(block.values)
        except Cancelled as e:
            context.abort(grpc.StatusCode.CANCELLED, f"{what}: {e.reason}")
        except Exception as e:  # noqa: BLE001 - the caller gets it, the server goes on
            log.info("%s: block %s failed: %s: %s", what, list(request.block),
                     type(e).__name__, e)
            context.abort(grpc.StatusCode.UNKNOWN, f"{what}: reading block "
                          f"{list(request.block)} failed: {type(e).__name__}: {e}")
        if computed.shape != shape:
            context.abort(grpc.StatusCode.INTERNAL, f"{what}: block {list(request.block)} "
                          f"has shape {computed.shape}, not {shape}")
        ectx = EncodeContext(servicer.options.chunk_bytes,
                             accepted_codecs(context.invocation_metadata()))
        out = dataset_pb2.ReadBlockOutput()
        try:
            attach_array(computed, out.block.data, ectx)
        except TypeError as e:
            context.abort(grpc.StatusCode.INTERNAL, f"{what}: {e}")
        del computed
        yield out
        sent = 0  # the block's bytes as they went: compressed when the caller asked
        for chunk in ectx.chunks():
            sent += memoryview(chunk.data).nbytes
            yield chunk
        opened.last_used = time.monotonic()
        alloc.completed()
        if log.isEnabledFor(logging.INFO):
            identity = opened.owner
            seconds = round(time.perf_counter() - started, 6)
            log.info("%s %s() block %s of %s: out %d B, %.3f s", identity, opened.function,
                     list(request.block), request.variable, sent, seconds, extra={
                         "event": "block", "call_id": call_id(context), "identity": identity,
                         "function": opened.function, "status": "OK", "bytes_in": 0,
                         "bytes_out": sent, "seconds": seconds})

    def release(self, request: Any, context: grpc.ServicerContext) -> Any:
        released = self.registry.release(request.handle, _identity(context).name)
        return dataset_pb2.ReleaseResponse(released=released)

    # -- references passed back --------------------------------------------------------------------

    def resolver(self, context: grpc.ServicerContext) -> Callable[[Any, bool], Any]:
        """What resolves the dataset references of a request of ``context``'s caller."""

        def resolve(m: Any, dataarray: bool) -> Any:
            from ._xarray import read_indexers

            identity = caller() or _identity(context)  # decoded within the call's guard
            try:
                opened = self.registry.get(m.handle, identity.name)
            except HandleRefused as e:
                refuse_handle(context, e, "a dataset passed as an argument")  # aborts
            # the policy and the deny-list, as for a block read of the dataset function
            self.guard.check(opened.function, context)
            ds = opened.dataset
            names = list(m.variables)
            missing = [n for n in names if n not in ds.data_vars]
            if missing or not names:
                raise WireError(f"the reference names variables {names} of {opened.function}()"
                                f", which has {list(ds.data_vars)}")
            indexers = read_indexers(m)
            unknown = [d for d in indexers if d not in ds.dims]
            if unknown:
                raise WireError(f"the reference indexes dimensions {unknown} that "
                                f"{opened.function}() does not have")
            if dataarray and len(names) != 1:
                raise WireError(f"the reference of a DataArray names {len(names)} variables")
            selected = ds[names[0]] if dataarray else ds[names]
            return selected.isel(indexers)

        return resolve


def _finish(reports: Iterator[Any]) -> Any:
    """The result of a supervised computation (it reports no progress)."""
    while True:
        try:
            next(reports)
        except StopIteration as done:
            return done.value
