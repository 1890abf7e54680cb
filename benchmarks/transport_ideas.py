"""Ways to move one large array over grpcio, side by side: one stream (what dagen does),
several parallel streams on one connection or on a connection each, a receiver that
reads ahead in a second thread, and HTTP/2 and TCP channel options.

Every variant echoes the same float64 array through a raw grpcio service that copies as
dagen does: the sender joins an 8-byte offset with each chunk of dagen's size (grpcio
sends only ``bytes``: the one copy it needs), the receiver copies each chunk into a
preallocated array, and the server holds the whole array before it sends it back (a
function runs on all of its input). dagen's mutual-TLS credentials and options, plus the
variant's options on both ends. The variants take turns, the order reversed every round;
reported are the median throughput (2 × payload / time) and CPU seconds of client and
server per echo. Every echo is compared with what was sent.

    python benchmarks/transport_ideas.py [--size 1GiB] [--rounds 8] [--variants a,b,...]
    python benchmarks/transport_ideas.py --list
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import signal
import statistics
import struct
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CHUNK_BYTES,
    HOST,
    PORT_LINE,
    Processes,
    cpu_seconds,
    make_certs,
    parse_size,
    wait_for_line,
)

from dagen._security import (  # noqa: E402
    CHANNEL_OPTIONS,
    SERVER_OPTIONS,
    channel_credentials,
    server_credentials,
)

PATH = "/bench.Ideas/Part"
FIRST = struct.Struct("<QQQQ")  # transfer id, parts, total bytes, read-ahead depth
OFFSET = struct.Struct("<Q")
DATA_BYTES = CHUNK_BYTES - OFFSET.size

_READ_CHUNKS = [("grpc.experimental.tcp_read_chunk_size", 4 << 20),
                ("grpc.experimental.tcp_min_read_chunk_size", 1 << 20),
                ("grpc.experimental.tcp_max_read_chunk_size", 16 << 20)]


@dataclass(frozen=True)
class Variant:
    streams: int = 1  # parallel calls, each carrying a contiguous part of the array
    connections: int = 1  # 1: all calls share one HTTP/2 connection; else one each
    read_ahead: int = 0  # >0: a second thread receives up to this many chunks ahead
    options: tuple[tuple[str, int], ...] = ()  # on the channel and on the server
    about: str = ""


VARIANTS = {
    "one": Variant(about="one stream, one connection (dagen's layout)"),
    "two-streams": Variant(streams=2, about="two parallel streams on one connection"),
    "two-connections": Variant(streams=2, connections=2,
                               about="two parallel streams, a connection each"),
    "four-streams": Variant(streams=4, about="four parallel streams on one connection"),
    "read-ahead": Variant(read_ahead=2, about="one stream, received 2 chunks ahead "
                                              "by a second thread on both ends"),
    "max-frame": Variant(options=(("grpc.http2.max_frame_size", (1 << 24) - 1),),
                         about="HTTP/2 frames up to 16 MiB (default 16 KiB)"),
    "read-chunks": Variant(options=tuple(_READ_CHUNKS),
                           about="TCP reads of 4 MiB (1-16 MiB; default adaptive from 8 KiB)"),
    "window": Variant(options=(("grpc.http2.lookahead_bytes", 64 << 20),
                               ("grpc.http2.bdp_probe", 0)),
                      about="a fixed 64 MiB stream window, no BDP probing"),
}


def read_ahead(messages: Iterable[bytes], depth: int) -> Iterator[bytes]:
    """``messages``, received by a second thread up to ``depth`` ahead of the consumer."""
    done = object()
    box: queue.Queue = queue.Queue(depth)

    def pump() -> None:
        try:
            for message in messages:
                box.put(message)
            box.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            box.put(e)

    threading.Thread(target=pump, daemon=True).start()
    while (item := box.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def receive_into(target: np.ndarray, messages: Iterable[bytes]) -> list[tuple[int, int]]:
    """Copy each (offset, data) message into ``target``; the regions it covered."""
    regions = []
    for message in messages:
        (offset,) = OFFSET.unpack_from(message)
        data = memoryview(message)[OFFSET.size:]
        target[offset:offset + len(data)] = np.frombuffer(data, np.uint8)
        regions.append((offset, len(data)))
    return regions


def send_from(source: np.ndarray, start: int, stop: int) -> Iterator[bytes]:
    for offset in range(start, stop, DATA_BYTES):
        yield b"".join((OFFSET.pack(offset), source[offset:min(offset + DATA_BYTES, stop)]))


# -- server ------------------------------------------------------------------------------------


class Transfers:
    """The arrays being echoed, each received by one or more parallel calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, tuple[np.ndarray, threading.Barrier, list[int]]] = {}

    def part(self, messages: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        transfer, parts, total, depth = FIRST.unpack(next(messages))
        with self._lock:
            if transfer not in self._open:
                self._open[transfer] = (np.empty(total, np.uint8), threading.Barrier(parts), [0])
            array, barrier, finished = self._open[transfer]
        regions = receive_into(array, read_ahead(messages, depth) if depth else messages)
        barrier.wait(timeout=120)  # the function runs on all of its input
        for offset, length in regions:
            yield b"".join((OFFSET.pack(offset), array[offset:offset + length]))
        with self._lock:
            finished[0] += 1
            if finished[0] == parts:
                del self._open[transfer]


def serve(certs: str, options: list[tuple[str, int]]) -> None:
    transfers = Transfers()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[*SERVER_OPTIONS, *options])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Ideas", {"Part": grpc.stream_stream_rpc_method_handler(transfers.part)}),))
    port = server.add_secure_port(f"{HOST}:0", server_credentials(certs))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"transport ideas: serving on {HOST}:{port}", flush=True)
    stop.wait()
    server.stop(grace=1).wait()


# -- client ------------------------------------------------------------------------------------


class Echo:
    """One variant's client: its channels to a server started with its options."""

    _transfers = itertools.count()  # one for all: variants of the same options share a server

    def __init__(self, variant: Variant, port: int, certs: Path, server_pid: int) -> None:
        self.variant = variant
        self.server_pid = server_pid
        options = [*CHANNEL_OPTIONS, *variant.options]
        if variant.connections > 1:  # channels with equal arguments would share one
            options.append(("grpc.use_local_subchannel_pool", 1))
        self.channels = [grpc.secure_channel(f"{HOST}:{port}", channel_credentials(certs, "alice"),
                                             options=options)
                         for _ in range(variant.connections)]
        self.stubs = [c.stream_stream(PATH) for c in self.channels]

    def __call__(self, source: np.ndarray, result: np.ndarray) -> None:
        v = self.variant
        transfer, total = next(self._transfers), source.nbytes
        bounds = np.linspace(0, total, v.streams + 1).astype(int)

        def one(i: int) -> None:
            def requests() -> Iterator[bytes]:
                yield FIRST.pack(transfer, v.streams, total, v.read_ahead)
                yield from send_from(source, int(bounds[i]), int(bounds[i + 1]))

            responses = self.stubs[i % len(self.stubs)](requests(), timeout=600)
            receive_into(result, read_ahead(responses, v.read_ahead) if v.read_ahead
                         else responses)

        if v.streams == 1:
            one(0)
            return
        with futures.ThreadPoolExecutor(v.streams) as pool:
            for f in [pool.submit(one, i) for i in range(v.streams)]:
                f.result()

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


def measure(names: list[str], size: int, rounds: int, work: Path) -> dict[str, list[tuple]]:
    procs = Processes(work)
    certs = make_certs(work / "certs")
    echoes: dict[str, Echo] = {}
    servers: dict[tuple, tuple[int, int]] = {}  # options -> (port, pid): one server each
    try:
        for name in names:
            v = VARIANTS[name]
            if v.options not in servers:
                proc, log = procs.start(f"server-{len(servers)}", [sys.executable,
                    __file__, "--serve", str(certs), json.dumps(v.options)])
                servers[v.options] = (int(wait_for_line(proc, log, PORT_LINE).group(1)), proc.pid)
            port, pid = servers[v.options]
            echoes[name] = Echo(v, port, certs, pid)
        source = np.arange(size // 8, dtype=np.float64).view(np.uint8)
        result = np.empty_like(source)
        for echo in echoes.values():  # warm-up
            echo(source, result)
        figures: dict[str, list[tuple]] = {n: [] for n in names}
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                echo = echoes[name]
                result[:] = 0
                c0, s0, t0 = cpu_seconds(os.getpid()), cpu_seconds(echo.server_pid), perf_counter()
                echo(source, result)
                seconds = perf_counter() - t0
                client = cpu_seconds(os.getpid()) - c0
                server = cpu_seconds(echo.server_pid) - s0
                if not np.array_equal(source, result):
                    raise AssertionError(f"{name}: the echo differs from what was sent")
                figures[name].append((2 * size / seconds, client, server))
        return figures
    finally:
        for echo in echoes.values():
            echo.close()
        procs.stop_all()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1GiB")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--variants", default="one,two-streams,two-connections,read-ahead,"
                                         "max-frame,read-chunks")
    p.add_argument("--list", action="store_true", help="the variants, and exit")
    p.add_argument("--serve", nargs=2, metavar=("CERTS", "OPTIONS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve[0], [tuple(o) for o in json.loads(args.serve[1])])
        return
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name:16s} {v.about}")
        return
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; --list shows them")
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="dagen-ideas-") as work:
        figures = measure(names, size, args.rounds, Path(work))
    base = statistics.median(f[0] for f in figures[names[0]])
    print(f"\n{args.size} echo, {args.rounds} rounds, chunks of {CHUNK_BYTES} bytes, "
          f"mutual TLS on {HOST}\n")
    print(f"| variant | MiB/s (median) | vs {names[0]} | CPU s client | CPU s server | "
          "each round MiB/s |")
    print("|---|---:|---:|---:|---:|---|")
    for name, rows in figures.items():
        mibs = statistics.median(r[0] for r in rows)
        print(f"| {name} | {mibs / 2**20:.0f} | {mibs / base:.2f} | "
              f"{statistics.median(r[1] for r in rows):.2f} | "
              f"{statistics.median(r[2] for r in rows):.2f} | "
              f"{', '.join(f'{r[0] / 2**20:.0f}' for r in rows)} |")
    print()
    for name in names:
        print(f"- {name}: {VARIANTS[name].about}")


if __name__ == "__main__":
    main()
