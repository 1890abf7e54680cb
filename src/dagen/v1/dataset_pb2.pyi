from dagen.v1 import array_pb2 as _array_pb2
from dagen.v1 import xarray_pb2 as _xarray_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetHandle(_message.Message):
    __slots__ = ("handle", "idle_timeout", "function", "schema", "variables", "encodings")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    handle: str
    idle_timeout: float
    function: str
    schema: _xarray_pb2.Dataset
    variables: _containers.RepeatedCompositeFieldContainer[LazyVariable]
    encodings: _containers.RepeatedCompositeFieldContainer[VariableEncoding]
    def __init__(self, handle: _Optional[str] = ..., idle_timeout: _Optional[float] = ..., function: _Optional[str] = ..., schema: _Optional[_Union[_xarray_pb2.Dataset, _Mapping]] = ..., variables: _Optional[_Iterable[_Union[LazyVariable, _Mapping]]] = ..., encodings: _Optional[_Iterable[_Union[VariableEncoding, _Mapping]]] = ...) -> None: ...

class LazyVariable(_message.Message):
    __slots__ = ("name", "dims", "dtype", "shape", "chunks", "attrs", "coordinate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    COORDINATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dims: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    chunks: _containers.RepeatedCompositeFieldContainer[BlockSizes]
    attrs: _containers.RepeatedCompositeFieldContainer[_xarray_pb2.Attribute]
    coordinate: bool
    def __init__(self, name: _Optional[str] = ..., dims: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., chunks: _Optional[_Iterable[_Union[BlockSizes, _Mapping]]] = ..., attrs: _Optional[_Iterable[_Union[_xarray_pb2.Attribute, _Mapping]]] = ..., coordinate: _Optional[bool] = ...) -> None: ...

class BlockSizes(_message.Message):
    __slots__ = ("sizes",)
    SIZES_FIELD_NUMBER: _ClassVar[int]
    sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class VariableEncoding(_message.Message):
    __slots__ = ("variable", "items")
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    variable: str
    items: _containers.RepeatedCompositeFieldContainer[_xarray_pb2.Attribute]
    def __init__(self, variable: _Optional[str] = ..., items: _Optional[_Iterable[_Union[_xarray_pb2.Attribute, _Mapping]]] = ...) -> None: ...

class ReadBlockRequest(_message.Message):
    __slots__ = ("handle", "variable", "block")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    handle: str
    variable: str
    block: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, handle: _Optional[str] = ..., variable: _Optional[str] = ..., block: _Optional[_Iterable[int]] = ...) -> None: ...

class ReadBlockOutput(_message.Message):
    __slots__ = ("block", "chunk")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    block: Block
    chunk: _array_pb2.Chunk
    def __init__(self, block: _Optional[_Union[Block, _Mapping]] = ..., chunk: _Optional[_Union[_array_pb2.Chunk, _Mapping]] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _array_pb2.NDArray
    def __init__(self, data: _Optional[_Union[_array_pb2.NDArray, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("handle",)
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    handle: str
    def __init__(self, handle: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: _Optional[bool] = ...) -> None: ...
