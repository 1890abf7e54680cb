"""Serve a Zarr store through xpublish's Zarr endpoint (the xpublish-zarr plugin) with
uvicorn on 127.0.0.1, for benchmarks/lazy_datasets.py:

    python benchmarks/xpublish_server.py STORE

Prints ``xpublish on 127.0.0.1:PORT`` once it listens (a free port, bound here).
Plain HTTP: xpublish has no mutual TLS of its own.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
import xarray as xr
import xpublish


def main() -> None:
    ds = xr.open_zarr(sys.argv[1], consolidated=False)
    app = xpublish.SingleDatasetRest(ds).app
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(f"xpublish on 127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    main()
