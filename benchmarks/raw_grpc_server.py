"""The grpcio ceiling: a hand-written service of raw ``bytes`` messages, no protobuf.

``Echo`` (bidirectional stream) receives every chunk, holds them all (as dagen's
server holds the array it received), then sends them back unchanged. ``Add`` (unary)
takes two little-endian int64 and returns their sum. Identity (de)serializers, the
same mutual-TLS credentials and server options as ``dagen serve``, the same number of
worker threads.

    python benchmarks/raw_grpc_server.py --certs DIR [--port 0] [--workers 8]
"""

from __future__ import annotations

import argparse
import signal
import struct
import sys
import threading
from concurrent import futures

import grpc

from dagen._security import SERVER_OPTIONS, server_credentials

SERVICE = "bench.Raw"
_ADD_IN = struct.Struct("<qq")
_ADD_OUT = struct.Struct("<q")


def echo(chunks, context):
    held = list(chunks)  # the whole array, as the chunks' bytes objects
    yield from held


def add(request: bytes, context) -> bytes:
    a, b = _ADD_IN.unpack(request)
    return _ADD_OUT.pack(a + b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        # No (de)serializers: grpc hands the handler the message bytes as they came.
        "Echo": grpc.stream_stream_rpc_method_handler(echo),
        "Add": grpc.unary_unary_rpc_method_handler(add),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port(f"{args.host}:{args.port}", server_credentials(args.certs))
    if not port:
        sys.exit(f"cannot listen on {args.host}:{args.port}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"raw grpc: serving {SERVICE} on {args.host}:{port}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(grace=2).wait()


if __name__ == "__main__":
    main()
