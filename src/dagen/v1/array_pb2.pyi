from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NDArray(_message.Message):
    __slots__ = ("id", "dtype", "shape", "nbytes", "codec", "object_strings", "cftime", "data")
    ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    OBJECT_STRINGS_FIELD_NUMBER: _ClassVar[int]
    CFTIME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    id: int
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    nbytes: int
    codec: str
    object_strings: bool
    cftime: CFTime
    data: bytes
    def __init__(self, id: _Optional[int] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., nbytes: _Optional[int] = ..., codec: _Optional[str] = ..., object_strings: _Optional[bool] = ..., cftime: _Optional[_Union[CFTime, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class CFTime(_message.Message):
    __slots__ = ("calendar", "units", "has_year_zero")
    CALENDAR_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    HAS_YEAR_ZERO_FIELD_NUMBER: _ClassVar[int]
    calendar: str
    units: str
    has_year_zero: bool
    def __init__(self, calendar: _Optional[str] = ..., units: _Optional[str] = ..., has_year_zero: _Optional[bool] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("array_id", "start", "shape", "data")
    ARRAY_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    array_id: int
    start: _containers.RepeatedScalarFieldContainer[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, array_id: _Optional[int] = ..., start: _Optional[_Iterable[int]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...
