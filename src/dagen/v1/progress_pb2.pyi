from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Progress(_message.Message):
    __slots__ = ("fraction", "message", "steps", "sequence")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    message: str
    steps: _containers.RepeatedCompositeFieldContainer[ProgressStep]
    sequence: int
    def __init__(self, fraction: _Optional[float] = ..., message: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[ProgressStep, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...

class ProgressStep(_message.Message):
    __slots__ = ("name", "done", "total")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    done: float
    total: float
    def __init__(self, name: _Optional[str] = ..., done: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...
