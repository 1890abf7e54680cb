"""The server runtime that generated server modules use."""

from __future__ import annotations

from ._handshake import ContractInfo
from ._serve import create_server, import_served_module
from ._server import ServerOptions, Servicer, caller_of


def main(servicer_cls: type[Servicer]) -> None:
    """Serve ``servicer_cls`` with the options of ``dagen serve`` from the command line:
    the entry point of a generated server module (``python -m <package>_server``).

    Importing dagen.server (to serve a generated servicer with :func:`create_server`
    in a program of one's own) does not import the command line, nor click."""
    from ._cli import run_servicer

    run_servicer(servicer_cls)


__all__ = [
    "ContractInfo",
    "Servicer",
    "ServerOptions",
    "create_server",
    "import_served_module",
    "caller_of",
    "main",
]
