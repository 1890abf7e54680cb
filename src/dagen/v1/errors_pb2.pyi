from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RemoteError(_message.Message):
    __slots__ = ("type", "module", "message", "traceback", "function", "args", "bases")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    BASES_FIELD_NUMBER: _ClassVar[int]
    type: str
    module: str
    message: str
    traceback: str
    function: str
    args: str
    bases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., module: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., function: _Optional[str] = ..., args: _Optional[str] = ..., bases: _Optional[_Iterable[str]] = ...) -> None: ...
