"""Remote datasets on the client: a ``dagen.v1.DatasetHandle`` made into an ordinary
``xarray.Dataset`` whose data variables are dask arrays with the server's chunking.

Each block of a variable is one task of its dask graph, which reads the block with
``dagen.v1.Datasets/ReadBlock`` over the client's channel when a computation needs it:
dask's threaded scheduler (its default for arrays) runs several such reads at once,
and only the blocks a computation touches travel, in the chunk frames, limits, checks
and compression of any array. ``Dataset.close()`` releases the handle on the server.
The variables are registered (dagen._references) so that a selection of the dataset
passed back to a function of the same server travels as a reference.

The graph's tasks hold the client: compute with dask's own schedulers (threads, the
default, or sync), not with a distributed cluster, whose workers could not use it.
"""

from __future__ import annotations

import itertools
import mmap
import weakref
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import xarray as xr

from . import _references as references
from ._arrays import DecodeContext, read_array
from ._budget import frame_parser
from ._codecs import accept_header, normalize_compression, require
from ._exceptions import DatasetExpired
from ._protocol import receive
from ._wire import WireError
from ._xarray import read_attrs, read_dataset
from .v1 import dataset_pb2

_READ_BLOCK = "/dagen.v1.Datasets/ReadBlock"
_RELEASE = "/dagen.v1.Datasets/Release"
# Blocks of at least this many bytes get memory of their own (see _block_buffer).
_MAPPED_BYTES = 1 << 20


def _block_buffer(nbytes: int) -> np.ndarray:
    """The memory a block is received into: for a large block, an anonymous mapping of
    its own, given back to the system as soon as the block is freed. From malloc, the
    blocks dask's threads received would stay in their threads' arenas after dask
    concatenated them (the client's RSS of a whole read was ~1.45x the data, not the
    ~1.25x it holds at most)."""
    if nbytes < _MAPPED_BYTES:
        return np.empty(nbytes, np.uint8)
    return np.frombuffer(mmap.mmap(-1, nbytes), np.uint8)


@dataclass(frozen=True)
class HandleInfo:
    """A DatasetHandle as received: the message, and its schema (coordinates, attrs)."""

    message: Any
    schema: xr.Dataset


def read_handle(m: Any, ctx: DecodeContext) -> HandleInfo:
    """Read a dagen.v1.DatasetHandle: the LazyDatasetNode's decoding."""
    return HandleInfo(m, read_dataset(m.schema, ctx))


class BlockReader:
    """Reads the blocks of one opened dataset through a client's connection."""

    def __init__(self, connection: Any, function: str, handle: str, idle_timeout: float) -> None:
        self.connection = connection
        self.function = function
        self.handle = handle
        self.idle_timeout = idle_timeout
        self.released = False
        # the connection's compression is fixed when it is made (dagen.call_options does
        # not reach dask's threads, where blocks are read)
        codecs = require(normalize_compression(connection.compression))
        self._metadata = (accept_header(codecs),) if codecs else None
        channel = connection.channel
        self._read = channel.unary_stream(
            _READ_BLOCK, request_serializer=dataset_pb2.ReadBlockRequest.SerializeToString,
            response_deserializer=frame_parser(dataset_pb2.ReadBlockOutput,
                                               connection.limits, "the block"))
        self._release = channel.unary_unary(
            _RELEASE, request_serializer=dataset_pb2.ReleaseRequest.SerializeToString,
            response_deserializer=dataset_pb2.ReleaseResponse.FromString)

    def read(self, variable: str, index: tuple[int, ...], shape: tuple[int, ...],
             dtype: np.dtype) -> np.ndarray:
        """One block, checked against what the handle said it is."""
        connection = self.connection
        what = f"{self.function}(): block {list(index)} of {variable!r}"
        request = dataset_pb2.ReadBlockRequest(handle=self.handle, variable=variable,
                                               block=index)
        call = self._read(request, timeout=connection.timeout, metadata=self._metadata)
        try:
            message, dctx = receive(call, "block", connection.limits, alloc=_block_buffer)
            block = read_array(message.data, dctx)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise DatasetExpired(
                    f"{self.function}(): the dataset's handle is gone from the server at "
                    f"{connection.target}: it expired (unused for the server's idle timeout "
                    f"of {self.idle_timeout:g} s), was closed, or the server restarted; open "
                    f"it again with {self.function}(...)") from None
            raise connection._rpc_error(e, self.function, connection.timeout) from None
        except WireError as e:  # LimitExceeded too
            raise connection._refuse_response(self.function, e) from None
        finally:
            call.cancel()  # a no-op once it completed
        if block.shape != shape or (block.dtype != dtype and dtype.kind != "O"):
            raise connection._refuse_response(self.function, WireError(
                f"{what} arrived with shape {block.shape} and dtype {block.dtype}, not "
                f"{shape} and {dtype}"))
        return block

    def release(self) -> None:
        """Release the handle on the server (what ``Dataset.close()`` does); once."""
        if self.released:
            return
        self.released = True
        references.forget(self.handle)
        try:
            self._release(dataset_pb2.ReleaseRequest(handle=self.handle),
                          timeout=min(self.connection.timeout or 10.0, 10.0))
        except (grpc.RpcError, ValueError):  # gone already, or the channel is closed
            pass


class _ReadBlock:
    """The task that reads one block (a callable object: dask names and tokens it)."""

    def __init__(self, reader: BlockReader, variable: str, dtype: np.dtype) -> None:
        self.reader = reader
        self.variable = variable
        self.dtype = dtype

    def __call__(self, index: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
        return self.reader.read(self.variable, index, shape, self.dtype)

    def __dask_tokenize__(self) -> Any:
        return (self.reader.handle, self.variable)


def _lazy_array(reader: BlockReader, v: Any) -> Any:
    import dask.array as da
    from dask.base import tokenize

    dtype = np.dtype(v.dtype)
    chunks = tuple(tuple(int(n) for n in c.sizes) for c in v.chunks)
    if tuple(sum(c) for c in chunks) != tuple(v.shape) or len(chunks) != len(v.dims):
        raise WireError(f"variable {v.name!r}: its chunks {chunks} do not make its shape "
                        f"{tuple(v.shape)}")
    name = f"dagen-{v.name}-{tokenize(reader.handle, v.name)}"
    task = _ReadBlock(reader, v.name, dtype)
    graph = {
        (name, *index): (task, index, tuple(c[i] for c, i in zip(chunks, index, strict=True)))
        for index in itertools.product(*(range(len(c)) for c in chunks))
    }
    return da.Array(graph, name, chunks=chunks, dtype=dtype,
                    meta=np.empty((0,) * len(chunks), dtype=dtype))


def open_lazy(connection: Any, function: str, info: HandleInfo) -> xr.Dataset:
    """The xarray.Dataset of a handle a dataset function returned."""
    m = info.message
    reader = BlockReader(connection, function, m.handle, m.idle_timeout)
    data_vars: dict[str, xr.Variable] = {}
    lazy_coords: dict[str, xr.Variable] = {}
    for v in m.variables:
        attrs = read_attrs(v.attrs)
        variable = xr.Variable(tuple(v.dims), _lazy_array(reader, v), attrs=attrs)
        (lazy_coords if v.coordinate else data_vars)[v.name] = variable
    ds = info.schema.assign(data_vars).assign_coords(lazy_coords)
    for e in m.encodings:
        if e.variable in ds.variables:
            encoding = read_attrs(e.items)
            if "dtype" in encoding:
                encoding["dtype"] = np.dtype(encoding["dtype"])
            ds.variables[e.variable].encoding = encoding
    ds.set_close(reader.release)
    dataset = weakref.ref(ds)  # the registry does not keep it alive
    for name in data_vars:
        references.register(ds[name].data.name,
                            references.Root(connection, m.handle, name, dataset))
    weakref.finalize(ds, references.forget, m.handle)
    return ds
