from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Description(_message.Message):
    __slots__ = ("service", "module", "doc", "dagen_version", "contract_revision", "functions", "classes")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    DAGEN_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    service: str
    module: str
    doc: str
    dagen_version: str
    contract_revision: int
    functions: _containers.RepeatedCompositeFieldContainer[FunctionInfo]
    classes: _containers.RepeatedCompositeFieldContainer[ClassInfo]
    def __init__(self, service: _Optional[str] = ..., module: _Optional[str] = ..., doc: _Optional[str] = ..., dagen_version: _Optional[str] = ..., contract_revision: _Optional[int] = ..., functions: _Optional[_Iterable[_Union[FunctionInfo, _Mapping]]] = ..., classes: _Optional[_Iterable[_Union[ClassInfo, _Mapping]]] = ...) -> None: ...

class FunctionInfo(_message.Message):
    __slots__ = ("name", "signature", "doc", "rpc", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    signature: str
    doc: str
    rpc: str
    kind: str
    def __init__(self, name: _Optional[str] = ..., signature: _Optional[str] = ..., doc: _Optional[str] = ..., rpc: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class ClassInfo(_message.Message):
    __slots__ = ("name", "signature", "doc", "methods")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    name: str
    signature: str
    doc: str
    methods: _containers.RepeatedCompositeFieldContainer[FunctionInfo]
    def __init__(self, name: _Optional[str] = ..., signature: _Optional[str] = ..., doc: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[FunctionInfo, _Mapping]]] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Caller(_message.Message):
    __slots__ = ("identity", "names", "serial", "peer", "service", "dagen_version")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DAGEN_VERSION_FIELD_NUMBER: _ClassVar[int]
    identity: str
    names: _containers.RepeatedScalarFieldContainer[str]
    serial: str
    peer: str
    service: str
    dagen_version: str
    def __init__(self, identity: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., serial: _Optional[str] = ..., peer: _Optional[str] = ..., service: _Optional[str] = ..., dagen_version: _Optional[str] = ...) -> None: ...
