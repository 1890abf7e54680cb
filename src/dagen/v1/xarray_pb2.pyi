from dagen.v1 import array_pb2 as _array_pb2
from dagen.v1 import value_pb2 as _value_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Attribute(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: _value_pb2.Value
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[_value_pb2.Value, _Mapping]] = ...) -> None: ...

class Variable(_message.Message):
    __slots__ = ("dims", "data", "attrs")
    DIMS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[str]
    data: _array_pb2.NDArray
    attrs: _containers.RepeatedCompositeFieldContainer[Attribute]
    def __init__(self, dims: _Optional[_Iterable[str]] = ..., data: _Optional[_Union[_array_pb2.NDArray, _Mapping]] = ..., attrs: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ...) -> None: ...

class Coordinate(_message.Message):
    __slots__ = ("name", "variable", "indexed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    name: str
    variable: Variable
    indexed: bool
    def __init__(self, name: _Optional[str] = ..., variable: _Optional[_Union[Variable, _Mapping]] = ..., indexed: _Optional[bool] = ...) -> None: ...

class DataVariable(_message.Message):
    __slots__ = ("name", "variable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    variable: Variable
    def __init__(self, name: _Optional[str] = ..., variable: _Optional[_Union[Variable, _Mapping]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("data_vars", "coords", "attrs", "reference")
    DATA_VARS_FIELD_NUMBER: _ClassVar[int]
    COORDS_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    data_vars: _containers.RepeatedCompositeFieldContainer[DataVariable]
    coords: _containers.RepeatedCompositeFieldContainer[Coordinate]
    attrs: _containers.RepeatedCompositeFieldContainer[Attribute]
    reference: DatasetReference
    def __init__(self, data_vars: _Optional[_Iterable[_Union[DataVariable, _Mapping]]] = ..., coords: _Optional[_Iterable[_Union[Coordinate, _Mapping]]] = ..., attrs: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ..., reference: _Optional[_Union[DatasetReference, _Mapping]] = ...) -> None: ...

class DataArray(_message.Message):
    __slots__ = ("name", "variable", "coords", "reference")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    COORDS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    variable: Variable
    coords: _containers.RepeatedCompositeFieldContainer[Coordinate]
    reference: DatasetReference
    def __init__(self, name: _Optional[str] = ..., variable: _Optional[_Union[Variable, _Mapping]] = ..., coords: _Optional[_Iterable[_Union[Coordinate, _Mapping]]] = ..., reference: _Optional[_Union[DatasetReference, _Mapping]] = ...) -> None: ...

class DatasetReference(_message.Message):
    __slots__ = ("handle", "variables", "indexers")
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    INDEXERS_FIELD_NUMBER: _ClassVar[int]
    handle: str
    variables: _containers.RepeatedScalarFieldContainer[str]
    indexers: _containers.RepeatedCompositeFieldContainer[DatasetIndexer]
    def __init__(self, handle: _Optional[str] = ..., variables: _Optional[_Iterable[str]] = ..., indexers: _Optional[_Iterable[_Union[DatasetIndexer, _Mapping]]] = ...) -> None: ...

class DatasetIndexer(_message.Message):
    __slots__ = ("dim", "slice", "index", "positions")
    DIM_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    dim: str
    slice: IndexSlice
    index: int
    positions: IndexPositions
    def __init__(self, dim: _Optional[str] = ..., slice: _Optional[_Union[IndexSlice, _Mapping]] = ..., index: _Optional[int] = ..., positions: _Optional[_Union[IndexPositions, _Mapping]] = ...) -> None: ...

class IndexSlice(_message.Message):
    __slots__ = ("start", "stop", "step")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    step: int
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class IndexPositions(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...
