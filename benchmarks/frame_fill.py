"""CPU per call of putting a 1 MiB inline request into its first frame: the message made
on its own and then given to the frame (``frame_cls(request=message)``: protobuf merges
it, copying the inline bytes), against the message filled in place in the frame (what
dagen's client and server do). Both give the same bytes, checked.

    python benchmarks/frame_fill.py [--size-kib 1024] [--calls 300]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dagen._arrays import EncodeContext
from dagen._build import build

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-kib", type=int, default=1024)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagen-frame-fill-") as work:
        built = build(str(ROOT / "tests" / "services" / "echo_service.py"), work)
        sys.path.insert(0, str(built.client))
        method = importlib.import_module("echo_service_client").Client.__dagen_spec__.methods[
            "echo_array"]
        array = np.arange(args.size_kib * 128, dtype="f8")

        def merged() -> object:
            return method.input_cls(
                request=method.encode_request({"a": array}, EncodeContext(inline=True)))

        def in_place() -> object:
            frame = method.input_cls()
            method.encode_request({"a": array}, EncodeContext(inline=True), frame.request)
            return frame

        assert merged().SerializeToString() == in_place().SerializeToString()
        for name, fill in [("merged into the frame", merged), ("filled in place", in_place)]:
            rounds = []
            for _ in range(5):
                t0 = time.process_time()
                for _ in range(args.calls):
                    fill()
                rounds.append((time.process_time() - t0) / args.calls * 1e6)
            print(f"{name:22s} min {min(rounds):7.1f} µs, median {statistics.median(rounds):7.1f} "
                  f"µs CPU per {args.size_kib} KiB request", flush=True)


if __name__ == "__main__":
    main()
