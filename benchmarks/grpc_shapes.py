#!/usr/bin/env python
"""What grpcio's call shapes cost by themselves: one 8 KiB message each way, no dagen.

A server process with four handlers of the same echo, called in turn from this process
(plain TCP on 127.0.0.1, so that only grpcio's Python and C core are measured):

- ``UU`` unary-unary: the response goes with the status in one batch, no wait;
- ``US`` unary-stream with one response (what dagen's one-frame calls are): grpc's
  server sends the message, waits for its completion in the handler thread, then the
  status; the client reads the message, then the status;
- ``UT`` unary-stream whose handler sends its one response with the status, as ``UU``
  does, through grpc's private ``grpc._server._status`` (NOT used by dagen: measured
  to see what that hand-off costs);
- ``SS`` stream-stream with one message each way (other-language and old clients).

Wall time, and CPU µs per call of the client and of the server process.

    python benchmarks/grpc_shapes.py --calls 1500 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent import futures

import grpc
import grpc.experimental

PAYLOAD = b"x" * 8192


def serve() -> None:
    from grpc import _server as private

    done = object()

    def uu(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def us(request: bytes, context: grpc.ServicerContext):  # noqa: ANN202
        yield request

    def ut(request: bytes, context: grpc.ServicerContext):  # noqa: ANN202
        private._status(context._rpc_event, context._state, request)  # type: ignore[attr-defined]
        yield done  # the rpc has ended: grpc sends nothing more

    def ss(requests, context: grpc.ServicerContext):  # noqa: ANN001,ANN202
        yield from requests

    handler = grpc.method_handlers_generic_handler("t.T", {
        "UU": grpc.unary_unary_rpc_method_handler(uu),
        "US": grpc.unary_stream_rpc_method_handler(us),
        "UT": grpc.unary_stream_rpc_method_handler(
            ut, response_serializer=lambda x: b"" if x is done else x),
        "SS": grpc.stream_stream_rpc_method_handler(ss),
    })
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=1500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)])
        calls = {
            "UU": lambda: channel.unary_unary("/t.T/UU")(PAYLOAD),
            "US": lambda: list(channel.unary_stream("/t.T/US")(PAYLOAD)),
            "UT": lambda: list(channel.unary_stream("/t.T/UT")(PAYLOAD)),
            "SS": lambda: list(channel.stream_stream("/t.T/SS")(iter([PAYLOAD]))),
        }
        n = args.calls
        for _ in range(args.rounds):
            for name, call in calls.items():
                for _ in range(50):
                    call()
                s0, c0, t0 = cpu_seconds(server.pid), time.process_time(), time.perf_counter()
                for _ in range(n):
                    call()
                print(f"{name} wall {(time.perf_counter() - t0) / n * 1e6:6.0f} µs, CPU client "
                      f"{(time.process_time() - c0) / n * 1e6:5.0f} + server "
                      f"{(cpu_seconds(server.pid) - s0) / n * 1e6:5.0f} µs", flush=True)
    finally:
        server.kill()


if __name__ == "__main__":
    main()
