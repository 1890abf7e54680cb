"""The client runtime that generated client packages use: public, versioned API.

Generated code calls these with its own arguments positionally only (``call(client,
key, arguments)``), so that no name of the served module can collide with them.
"""

from ._client import (
    DEFAULT_TIMEOUT,
    ClientSpec,
    Connection,
    RemoteObject,
    ServiceClient,
    bound_class,
    call,
    call_method,
    close,
    default_client,
)
from ._handshake import ContractInfo
from ._model import dataset
from ._wire import Limits

__all__ = [
    "ServiceClient",
    "ClientSpec",
    "Connection",
    "call",
    "call_method",
    "close",
    "default_client",
    "DEFAULT_TIMEOUT",
    "RemoteObject",
    "bound_class",
    "ContractInfo",
    "Limits",
    "dataset",
]
