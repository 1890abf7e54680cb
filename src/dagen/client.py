"""The client runtime that generated client packages use."""

from ._client import (
    DEFAULT_TIMEOUT,
    RemoteObject,
    ServiceClient,
    bound_class,
    call_method,
    default_client,
)
from ._handshake import ContractInfo

__all__ = [
    "ServiceClient",
    "default_client",
    "DEFAULT_TIMEOUT",
    "RemoteObject",
    "call_method",
    "bound_class",
    "ContractInfo",
]
