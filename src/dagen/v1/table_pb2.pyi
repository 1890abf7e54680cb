from dagen.v1 import array_pb2 as _array_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Column(_message.Message):
    __slots__ = ("name", "values", "mask", "dtype", "tz", "tz_offset_seconds", "categorical", "freq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    TZ_OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    FREQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _array_pb2.NDArray
    mask: _array_pb2.NDArray
    dtype: str
    tz: str
    tz_offset_seconds: int
    categorical: Categorical
    freq: str
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Union[_array_pb2.NDArray, _Mapping]] = ..., mask: _Optional[_Union[_array_pb2.NDArray, _Mapping]] = ..., dtype: _Optional[str] = ..., tz: _Optional[str] = ..., tz_offset_seconds: _Optional[int] = ..., categorical: _Optional[_Union[Categorical, _Mapping]] = ..., freq: _Optional[str] = ...) -> None: ...

class Categorical(_message.Message):
    __slots__ = ("categories", "ordered")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    categories: Column
    ordered: bool
    def __init__(self, categories: _Optional[_Union[Column, _Mapping]] = ..., ordered: _Optional[bool] = ...) -> None: ...

class RangeIndex(_message.Message):
    __slots__ = ("start", "stop", "step", "name")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    step: int
    name: str
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ..., step: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class Index(_message.Message):
    __slots__ = ("range", "values")
    RANGE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    range: RangeIndex
    values: Column
    def __init__(self, range: _Optional[_Union[RangeIndex, _Mapping]] = ..., values: _Optional[_Union[Column, _Mapping]] = ...) -> None: ...

class DataFrame(_message.Message):
    __slots__ = ("columns", "index", "columns_name")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_NAME_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    index: Index
    columns_name: str
    def __init__(self, columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ..., index: _Optional[_Union[Index, _Mapping]] = ..., columns_name: _Optional[str] = ...) -> None: ...

class Series(_message.Message):
    __slots__ = ("values", "index")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    values: Column
    index: Index
    def __init__(self, values: _Optional[_Union[Column, _Mapping]] = ..., index: _Optional[_Union[Index, _Mapping]] = ...) -> None: ...
