"""The server runtime that generated server modules use."""

from ._cli import run_servicer as main
from ._handshake import ContractInfo
from ._server import ServerOptions, Servicer, caller_of, create_server, import_served_module

__all__ = [
    "ContractInfo",
    "Servicer",
    "ServerOptions",
    "create_server",
    "import_served_module",
    "caller_of",
    "main",
]
