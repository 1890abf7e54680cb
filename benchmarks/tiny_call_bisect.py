"""Where a tiny call's time goes on the server: the same call against server variants.

Each variant is a server process of its own (launched twice, alternating, because the
same server varies by tens of µs from one launch to the next on a small machine):

    raw      a bytes handler (struct-packed ints), identity serializers
    trivial  a protobuf handler that adds the two ints, no dagen runtime
    auth     the same, also asking grpc for the caller's auth context and peer
    peerid   the same, asking only for the peer's identities (CN or SANs)
    dagen    dagen's servicer for benchmarks/echo_service.py
    guarded  dagen's servicer behind the guard (identity, policy, limits), as `dagen serve`

All run in a process that has imported dagen (and so numpy/xarray): the difference to a
bare raw server is the weight of such a process. For each variant it reports the
client's p50, the server's CPU per call (from /proc) and the handler's own time as it
runs in the server (timed in place: cold caches and all, what a micro-benchmark of
the same code does not show).

    python benchmarks/tiny_call_bisect.py [--calls 2500] [variants...]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICE = HERE / "echo_service.py"


def _compiled(folder: Path):
    from dagen._build import build_service
    from dagen._introspect import introspect_module, load_module

    module = load_module(str(SERVICE))
    build_service(introspect_module(module), folder, "", client=False,
                  lock_path=folder / "lock", write_lock_file=False)
    sys.path.insert(0, str(folder))
    return module, importlib.import_module("echo_service_pb2")


def serve(variant: str, certs: str) -> None:
    import grpc

    from dagen._security import SERVER_OPTIONS, Guard, server_credentials
    from dagen._server import ServerOptions, Servicer

    module, pb2 = _compiled(Path(tempfile.mkdtemp()))
    servicer = type("S", (Servicer,), {}, module=module, pb2=pb2)(ServerOptions())
    server = grpc.server(futures.ThreadPoolExecutor(8), options=SERVER_OPTIONS)
    if variant == "raw":
        def add(request: bytes, context: object) -> bytes:
            a, b = struct.unpack("<qq", request)
            return struct.pack("<q", a + b)
        handler = grpc.method_handlers_generic_handler(
            "bench.Raw", {"Add": grpc.unary_unary_rpc_method_handler(add)})
    elif variant in ("trivial", "auth", "peerid"):
        def add_pb(request, context):
            if variant == "auth":  # what identifying the caller costs
                context.auth_context()
                context.peer()
            elif variant == "peerid":  # the cheaper question: only the identity property
                context.peer_identities()
            return pb2.AddResponse(result=request.a + request.b)
        handler = grpc.method_handlers_generic_handler("echo_service.EchoService", {
            "Add": grpc.unary_unary_rpc_method_handler(
                add_pb, request_deserializer=pb2.AddRequest.FromString,
                response_serializer=pb2.AddResponse.SerializeToString)})
    elif variant == "guarded":
        handler = grpc.method_handlers_generic_handler(
            servicer.service.full_name,
            Guard.for_servicer(servicer, certs).wrap(servicer.method_handlers()))
    else:
        handler = grpc.method_handlers_generic_handler(servicer.service.full_name,
                                                       servicer.method_handlers())
    server.add_generic_rpc_handlers((_timed(handler, variant),))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certs))
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(0)
    print(statistics.median(_HANDLER_NS) / 1e3 if _HANDLER_NS else float("nan"), flush=True)


_HANDLER_NS: list[int] = []


def _timed(handler, variant: str):
    """The generic handler with its Add handler timed (perf_counter_ns around it)."""
    import grpc

    inner = handler.service(_Details("/bench.Raw/Add" if variant == "raw"
                                     else "/echo_service.EchoService/Add"))

    def add(request, context):
        started = time.perf_counter_ns()
        try:
            return inner.unary_unary(request, context)
        finally:
            _HANDLER_NS.append(time.perf_counter_ns() - started)

    timed = grpc.unary_unary_rpc_method_handler(
        add, request_deserializer=inner.request_deserializer,
        response_serializer=inner.response_serializer)

    class Timed(grpc.GenericRpcHandler):
        def service(self, details):
            return timed if details.method.endswith("/Add") else None

    return Timed()


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", default=["raw", "trivial", "dagen", "guarded"])
    parser.add_argument("--calls", type=int, default=2500)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--certs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.certs)
        return

    import grpc
    from common import cpu_seconds

    from dagen._security import (
        CHANNEL_OPTIONS,
        channel_credentials,
        init_ca,
        issue_client,
        issue_server,
    )

    certs = Path(tempfile.mkdtemp())
    init_ca(certs)
    issue_server(certs, hosts=["localhost"], ips=["127.0.0.1"])
    issue_client(certs, "alice")
    _, pb2 = _compiled(Path(tempfile.mkdtemp()))
    credentials = channel_credentials(certs, "alice")
    results: dict[str, list[float]] = {v: [] for v in args.variants}
    cpu: dict[str, list[float]] = {v: [] for v in args.variants}
    handler: dict[str, list[float]] = {v: [] for v in args.variants}
    for _ in range(2):
        for variant in args.variants:
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", variant, "--certs", str(certs)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert server.stdout is not None
                port = int(server.stdout.readline())
                with grpc.secure_channel(f"localhost:{port}", credentials,
                                         options=CHANNEL_OPTIONS) as channel:
                    if variant == "raw":
                        call = channel.unary_unary("/bench.Raw/Add")
                        request = struct.pack("<qq", 2, 3)
                    else:
                        call = channel.unary_unary(
                            "/echo_service.EchoService/Add",
                            request_serializer=pb2.AddRequest.SerializeToString,
                            response_deserializer=pb2.AddResponse.FromString)
                        request = pb2.AddRequest(a=2, b=3)
                    for _ in range(300):
                        call(request, timeout=60)
                    times = []
                    cpu_before = cpu_seconds(server.pid)
                    for _ in range(args.calls):
                        started = time.perf_counter()
                        call(request, timeout=60)
                        times.append(time.perf_counter() - started)
                    cpu[variant].append((cpu_seconds(server.pid) - cpu_before) / args.calls * 1e6)
                results[variant].append(statistics.median(times) * 1e6)
            finally:
                if server.stdin is not None:
                    server.stdin.close()
                if server.stdout is not None:
                    handler[variant].append(float(server.stdout.readline() or "nan"))
                server.wait(timeout=10)
    for variant, medians in results.items():
        shown = ", ".join(f"{m:.0f}" for m in medians)
        print(f"{variant:8s} p50 {statistics.mean(medians):6.0f} µs  (launches: {shown}); "
              f"server CPU {statistics.mean(cpu[variant]):4.0f} µs/call; "
              f"handler in place {statistics.mean(handler[variant]):5.1f} µs")


if __name__ == "__main__":
    main()
