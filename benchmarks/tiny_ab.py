"""The tiny call of dagen and raw grpcio measured as `make bench` does (blocks of
sequential calls after a warm-up), alternating the two systems several times so that
the ratio is taken under the same conditions.

    python benchmarks/tiny_ab.py [--rounds 4] [--calls 2000] [--systems dagen,grpc] [--pin]

On this 2-core machine a server answers ~40 % faster with the client and the server
each on a core of its own (``--pin``), and then the same server launched twice
answers alike, while unpinned launches differ by tens of µs: ``--pin`` is the
steady measure for comparing variants, the unpinned one what a user gets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Processes, make_certs  # noqa: E402
from systems import SYSTEMS  # noqa: E402


class DagenStub(SYSTEMS["dagen"]):
    """dagen's server called through a bare grpc stub: the client's share of the time."""

    name = "dagen-stub"

    def start(self) -> None:
        super().start()
        client = self.client
        method = client.__dagen__.methods["add"]
        self._stub = client.__dagen__.channel.unary_unary(
            method.path, request_serializer=method.request_cls.SerializeToString,
            response_deserializer=method.response_cls.FromString)
        self._request_cls = method.request_cls

    def add(self, a: int, b: int) -> int:
        return self._stub(self._request_cls(a=a, b=b), timeout=60).result


class Bisect(SYSTEMS["grpc"]):
    """A server variant of tiny_call_bisect.py (``variant``), called with a bare stub."""

    variant = "trivial"

    def start(self) -> None:
        import subprocess

        import grpc

        from dagen._security import CHANNEL_OPTIONS, channel_credentials

        here = Path(__file__).resolve().parent
        self._proc = subprocess.Popen(
            [sys.executable, str(here / "tiny_call_bisect.py"), "--serve", self.variant,
             "--certs", str(self.certs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.server_pids.append(self._proc.pid)
        port = int(self._proc.stdout.readline())
        self.channel = grpc.secure_channel(
            f"127.0.0.1:{port}", channel_credentials(self.certs, "alice"), options=CHANNEL_OPTIONS)
        sys.path.insert(0, str(here))
        from tiny_call_bisect import _compiled

        _, pb2 = _compiled(Path(tempfile.mkdtemp()))
        self._request_cls = pb2.AddRequest
        self._stub = self.channel.unary_unary(
            "/echo_service.EchoService/Add", request_serializer=pb2.AddRequest.SerializeToString,
            response_deserializer=pb2.AddResponse.FromString)

    def add(self, a: int, b: int) -> int:
        return self._stub(self._request_cls(a=a, b=b), timeout=60).result

    def close(self) -> None:
        self.channel.close()
        self._proc.stdin.close()
        self._proc.wait(10)


def _bisect(name: str, variant: str) -> type:
    return type(f"Bisect_{variant}", (Bisect,), {"name": name, "variant": variant})


class DagenOwnChannel(DagenStub):
    """The bare stub on a channel of its own (not the one the echoes went through)."""

    name = "dagen-own-channel"

    def start(self) -> None:
        super().start()
        import grpc

        from dagen._security import CHANNEL_OPTIONS, channel_credentials

        client = self.client
        method = client.__dagen__.methods["add"]
        channel = grpc.secure_channel(client.__dagen__.target, channel_credentials(self.certs, "alice"),
                                      options=CHANNEL_OPTIONS)
        self._stub = channel.unary_unary(
            method.path, request_serializer=method.request_cls.SerializeToString,
            response_deserializer=method.response_cls.FromString)


class DagenEchoElsewhere(SYSTEMS["dagen"]):
    """Echoes go to a second dagen server: is a slowdown after an echo the client's?"""

    name = "dagen-echo-elsewhere"

    def start(self) -> None:
        super().start()
        self._other = SYSTEMS["dagen"](self.certs, self.work, self.procs)
        self._other.start()

    def echo(self, da):
        return self._other.echo(da)

    def close(self) -> None:
        self._other.close()
        super().close()


EXTRA = {
    "dagen-echo-elsewhere": DagenEchoElsewhere,
    "dagen-stub": DagenStub,
    "dagen-own-channel": DagenOwnChannel,
    "trivial": _bisect("trivial", "trivial"),  # a protobuf handler, in a process like dagen's
    "servicer": _bisect("servicer", "dagen"),  # dagen's servicer without the guard
    "guarded": _bisect("guarded", "guarded"),  # and with it
}


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto these CPUs (a process's own affinity reaches
    only threads it starts later)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except OSError:  # a thread that ended meanwhile
            pass


def pin_apart(systems) -> None:
    """This process onto CPU 0, every server process onto CPU 1."""
    pin(os.getpid(), {0})
    for s in systems:
        for pid in s.server_pids:
            pin(pid, {1})


def block(system, calls: int) -> float:
    for i in range(50):
        system.add(i, 1)
    times = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        system.add(i, 1)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--systems", default="dagen,grpc")
    p.add_argument("--echo-each", action="store_true",
                   help="echo --echo-first before every block, not only once")
    p.add_argument("--echo-first", default="",
                   help="a payload size each system echoes first (as make bench does)")
    p.add_argument("--pin", action="store_true",
                   help="this process on CPU 0, every server on CPU 1: for A/B of variants "
                        "(launch-to-launch differences vanish), not for the bar")
    args = p.parse_args()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        p.error("--pin needs two CPUs (this process may use fewer)")
    work = Path(tempfile.mkdtemp(prefix="dagen-tiny-"))
    procs = Processes(work)
    certs = make_certs(work / "certs")
    systems = [{**SYSTEMS, **EXTRA}[n](certs, work, procs) for n in args.systems.split(",")]
    try:
        for s in systems:
            s.start()
        if args.pin:
            pin_apart(systems)
        if args.echo_first:
            from common import parse_size
            from run import payload

            da = payload(parse_size(args.echo_first))
            for s in systems:
                s.echo(da)
            if not args.echo_each:
                del da
        p50: dict[str, list[float]] = {s.name: [] for s in systems}
        for _ in range(args.rounds):
            for s in systems:
                if args.echo_each:
                    s.echo(da)
                p50[s.name].append(block(s, args.calls))
        ref = statistics.median(p50[systems[-1].name])
        for name, values in p50.items():
            m = statistics.median(values)
            shown = ", ".join(f"{v:.0f}" for v in values)
            print(f"{name:8s} p50 {m:5.0f} µs  ({m / ref:.2f}×)  blocks: {shown}")
    finally:
        for s in systems:
            s.close()


if __name__ == "__main__":
    main()
