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
    __slots__ = ("data_vars", "coords", "attrs")
    DATA_VARS_FIELD_NUMBER: _ClassVar[int]
    COORDS_FIELD_NUMBER: _ClassVar[int]
    ATTRS_FIELD_NUMBER: _ClassVar[int]
    data_vars: _containers.RepeatedCompositeFieldContainer[DataVariable]
    coords: _containers.RepeatedCompositeFieldContainer[Coordinate]
    attrs: _containers.RepeatedCompositeFieldContainer[Attribute]
    def __init__(self, data_vars: _Optional[_Iterable[_Union[DataVariable, _Mapping]]] = ..., coords: _Optional[_Iterable[_Union[Coordinate, _Mapping]]] = ..., attrs: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ...) -> None: ...

class DataArray(_message.Message):
    __slots__ = ("name", "variable", "coords")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    COORDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    variable: Variable
    coords: _containers.RepeatedCompositeFieldContainer[Coordinate]
    def __init__(self, name: _Optional[str] = ..., variable: _Optional[_Union[Variable, _Mapping]] = ..., coords: _Optional[_Iterable[_Union[Coordinate, _Mapping]]] = ...) -> None: ...
