#!/usr/bin/env python
"""Wire compression on real data: ratios, throughputs and the break-even bandwidth.

Measured on ../shared/data/eraint_uvz.nc (ERA-Interim monthly u, v, z on three
levels: 2 × 3 × 241 × 480 float64 per variable, 5.3 MiB each, stored as int16 with
scale_factor/add_offset and opened with xarray, engine="scipy"), through dagen's own
code paths, one 1 MiB chunk at a time as a call sends them:

- compress: ``dagen._codecs.compress_chunks`` over ``dagen._wire.iter_chunks``
  (shuffle included);
- decompress: ``ArraySink.write`` of every chunk into the array it allocated (what
  a receiver does, the copy into place included);
- ratio: the array's bytes / the compressed payloads' bytes;
- break-even bandwidth, with the simple sequential model
  ``time_raw = B / bw`` and ``time_comp = B / ratio / bw + t_compress + t_decompress``:
  compression pays below ``bw* = B (1 - 1/ratio) / (t_compress + t_decompress)``.
  When compressing, sending and decompressing overlap perfectly the bound rises to
  ``min(compress, decompress throughput)``; reality on a streaming call lies between.

Then an end-to-end echo of each variable through a real ``dagen serve`` over mutual
TLS on 127.0.0.1, without and with compression: the bytes on the wire and the time
(loopback is faster than any codec here, which is why compression is off by default).

    .venv/bin/python benchmarks/compression.py              # ~10 s on 2 cores
    .venv/bin/python benchmarks/compression.py --repeat 9 --no-echo

Prints a markdown report and writes it to benchmarks/results/compression-<timestamp>.md
(and the numbers to .json beside it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from dagen import _codecs  # noqa: E402
from dagen._budget import frame_parser  # noqa: E402
from dagen._sink import ArraySink  # noqa: E402
from dagen._wire import ChunkIn, iter_chunks  # noqa: E402
from dagen.v1 import array_pb2  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "eraint_uvz.nc"
CHUNK_BYTES = 1 << 20
CODECS = ("zstd", "zstd-shuffle", "lz4", "lz4-shuffle")
MB = 1e6


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for dist in ("dagen", "numpy", "xarray", "zstandard", "lz4", "grpcio"):
        try:
            versions[dist] = version("dagen-grpc" if dist == "dagen" else dist)  # the distribution's name
        except PackageNotFoundError:
            versions[dist] = "not installed"
    import zstandard

    versions["libzstd"] = ".".join(map(str, zstandard.ZSTD_VERSION))
    return {"cpu": cpu, "cores": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()],
            "versions": versions}


def load_variables(path: Path) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its _FillValue of nan is not CF-conforming
        with xr.open_dataset(path, engine="scipy") as ds:
            out = {name: ds[name].values for name in ("z", "u", "v")}
        with xr.open_dataset(path, engine="scipy", mask_and_scale=False) as ds:
            out.update({f"{name} (int16 as stored)": ds[name].values for name in ("z", "u", "v")})
    return out


# -- codecs through dagen's code ----------------------------------------------------------------------


def compress_all(codec: str, array: np.ndarray) -> list[ChunkIn]:
    chunks = _codecs.compress_chunks(codec, iter_chunks(1, array, CHUNK_BYTES), array.dtype.itemsize)
    return [ChunkIn(c.array_id, c.start, c.shape, memoryview(c.data)) for c in chunks]


def receive_all(codec: str, array: np.ndarray, chunks: list[ChunkIn]) -> np.ndarray:
    sink = ArraySink()
    sink.allocate(array_pb2.NDArray(id=1, dtype=array.dtype.str, shape=array.shape,
                                    nbytes=array.nbytes, codec=codec))
    for chunk in chunks:
        sink.write(chunk)
    sink.finish()
    return sink.arrays[1]


def timed(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_codec(codec: str, array: np.ndarray, repeat: int) -> dict[str, Any]:
    chunks = compress_all(codec, array)
    out = receive_all(codec, array, chunks)
    assert out.tobytes() == array.tobytes(), codec  # noqa: S101 - a benchmark's own check
    t_comp = timed(lambda: compress_all(codec, array), repeat)
    t_dec = timed(lambda: receive_all(codec, array, chunks), repeat)
    nbytes = array.nbytes
    wire = sum(c.data.nbytes for c in chunks)
    ratio = nbytes / wire
    # time_raw = B/bw ; time_comp = B/(ratio bw) + tc + td  =>  pays below bw*
    breakeven = nbytes * (1 - 1 / ratio) / (t_comp + t_dec) if ratio > 1 else 0.0
    return {
        "codec": codec, "bytes": nbytes, "wire_bytes": wire, "ratio": ratio,
        "compress_s": t_comp, "decompress_s": t_dec,
        "compress_MBps": nbytes / t_comp / MB, "decompress_MBps": nbytes / t_dec / MB,
        "breakeven_MBps": breakeven / MB,
        "overlapped_MBps": min(nbytes / t_comp, nbytes / t_dec) / MB if ratio > 1 else 0.0,
    }


def measure_raw_receive(array: np.ndarray, repeat: int) -> float:
    chunks = [ChunkIn(c.array_id, c.start, c.shape, memoryview(np.ascontiguousarray(c.data)))
              for c in iter_chunks(1, array, CHUNK_BYTES)]
    return array.nbytes / timed(lambda: receive_all("", array, chunks), repeat) / MB


def measure_levels(array: np.ndarray, repeat: int) -> list[dict[str, Any]]:
    rows = []
    default = _codecs.ZSTD_LEVEL
    try:
        for level in (1, 3, 6):
            _codecs.ZSTD_LEVEL = level
            _codecs._local.__dict__.pop("cctx", None)  # a compressor of the new level
            rows.append({"level": level, **measure_codec("zstd", array, repeat)})
    finally:
        _codecs.ZSTD_LEVEL = default
        _codecs._local.__dict__.pop("cctx", None)
    return rows


# -- end to end ---------------------------------------------------------------------------------------


def echo_end_to_end(variables: dict[str, np.ndarray], repeat: int, work: Path) -> list[dict[str, Any]]:
    """Echo each variable through `dagen serve` on 127.0.0.1 with mutual TLS, counting the
    bytes of the frames the client sends and receives."""
    import importlib

    from common import PORT_LINE, Processes, make_certs, wait_for_line

    import dagen._transport
    from dagen._build import build
    from dagen._wire import frame_serializer

    certs = make_certs(work / "certs")
    result = build(str(HERE / "echo_service.py"), work / "build", lock=work / "echo.lock")
    counts = {"sent": 0, "received": 0}

    def serialize(item: Any) -> bytes:
        out = frame_serializer(item)
        counts["sent"] += len(out)
        return out

    def deserializer(frame_cls: Any, limits: Any, what: str) -> Any:
        inner = frame_parser(frame_cls, limits, what)

        def deserialize(buf: bytes) -> Any:
            counts["received"] += len(buf)
            return inner(buf)

        return deserialize

    dagen._transport.frame_serializer = serialize  # type: ignore[assignment]
    dagen._transport.frame_parser = deserializer  # type: ignore[assignment]
    procs = Processes(work)
    rows = []
    try:
        proc, log = procs.start("dagen-serve", [
            sys.executable, "-m", "dagen._cli", "serve", str(HERE / "echo_service.py"),
            "--certs", str(certs), "--host", "127.0.0.1", "--port", "0",
            "--lock", str(work / "echo.lock"),
        ])
        port = int(wait_for_line(proc, log, PORT_LINE).group(1))
        sys.path.insert(0, str(result.client))
        client_module = importlib.import_module("echo_service_client")
        with client_module.Client(f"127.0.0.1:{port}", certs=certs, identity="alice",
                                  timeout=300, progress_bar=False) as client:
            for name in ("z", "u", "v"):
                da = xr.DataArray(variables[name], dims=("month", "level", "latitude", "longitude"),
                                  name=name)
                for compression in (None, "zstd", "lz4"):
                    with client.__dagen__.options(compression=compression):
                        out = client.echo(da)  # warm-up, and the check
                        assert out.equals(da)  # noqa: S101
                        counts.update(sent=0, received=0)
                        client.echo(da)
                        wire = (counts["sent"], counts["received"])
                        seconds = timed(lambda da=da: client.echo(da), repeat)
                    rows.append({"variable": name, "compression": compression or "none",
                                 "bytes": da.nbytes, "sent": wire[0], "received": wire[1],
                                 "seconds": seconds})
    finally:
        procs.stop_all()
    return rows


def summarize(results: dict[str, Any], names: tuple[str, ...] = ("z", "u", "v")) -> dict[str, Any]:
    """The dataset's float64 variables together, each with the codec dagen picks for it:
    ratio, throughputs, break-even per family, and the bandwidth below which zstd beats lz4."""
    out: dict[str, Any] = {}
    for family in _codecs.FAMILIES:
        rows = [next(r for r in results["codecs"][n] if r["codec"] == results["choices"][n][family])
                for n in names]
        b = sum(r["bytes"] for r in rows)
        wire = sum(r["wire_bytes"] for r in rows)
        tc = sum(r["compress_s"] for r in rows)
        td = sum(r["decompress_s"] for r in rows)
        out[family] = {"bytes": b, "ratio": b / wire, "compress_MBps": b / tc / MB,
                       "decompress_MBps": b / td / MB, "seconds": tc + td,
                       "breakeven_MBps": b * (1 - wire / b) / (tc + td) / MB}
    z, lz = out["zstd"], out["lz4"]
    # B/(r_z bw) + t_z = B/(r_l bw) + t_l  =>  bw = B (1/r_l - 1/r_z) / (t_z - t_l)
    gain, cost = 1 / lz["ratio"] - 1 / z["ratio"], z["seconds"] - lz["seconds"]
    out["zstd_beats_lz4_below_MBps"] = z["bytes"] * gain / cost / MB if gain > 0 and cost > 0 else None
    return out


# -- report -------------------------------------------------------------------------------------------


def mbit(mb_per_s: float) -> str:
    return f"{mb_per_s * 8:,.0f}"


def report(info: dict[str, Any], results: dict[str, Any], command: str) -> str:
    lines = [
        "# Wire compression on ERA-Interim (eraint_uvz.nc)",
        "",
        f"{info['when']} · `{command}` · {info['cpu']}, {info['cores']} cores, load "
        f"{info['load']} · " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "",
        f"Each array goes in {CHUNK_BYTES >> 20} MiB chunks, compressed one at a time "
        f"(zstd level {_codecs.ZSTD_LEVEL}; lz4 block, default mode); median of "
        f"{results['repeat']} runs. Throughputs are of the uncompressed bytes; the receive "
        "side includes the copy into the allocated array (raw, that copy alone runs at "
        f"{results['raw_receive_MBps']:,.0f} MB/s). Break-even: compression pays on links "
        "slower than this (sequential model: B/bw vs B/ratio/bw + compress + decompress); "
        "'overlapped' is the bound when compression, transfer and decompression overlap.",
        "",
        "| variable | codec | ratio | compress MB/s | decompress MB/s | break-even MB/s (Mbit/s) | overlapped MB/s | dagen's choice |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, rows in results["codecs"].items():
        chosen = results["choices"][name]
        for r in rows:
            mark = "✓" if r["codec"] in chosen.values() else ""
            lines.append(
                f"| {name} | {r['codec']} | {r['ratio']:.2f} | {r['compress_MBps']:,.0f} | "
                f"{r['decompress_MBps']:,.0f} | {r['breakeven_MBps']:,.0f} "
                f"({mbit(r['breakeven_MBps'])}) | {r['overlapped_MBps']:,.0f} | {mark} |"
            )
    lines += [
        "",
        "✓: the codec dagen picks for that array with `compression=\"zstd\"` or `\"lz4\"` "
        "(it compresses a sample with and without shuffle and keeps the smaller).",
        "",
        "## The dataset (z, u, v as float64), with dagen's choices",
        "",
        "| compression | ratio | compress MB/s | decompress MB/s | pays below MB/s (Mbit/s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    summary = results["summary"]
    for family in _codecs.FAMILIES:
        r = summary[family]
        lines.append(f"| {family} | {r['ratio']:.2f} | {r['compress_MBps']:,.0f} | "
                     f"{r['decompress_MBps']:,.0f} | {r['breakeven_MBps']:,.0f} "
                     f"({mbit(r['breakeven_MBps'])}) |")
    cross = summary["zstd_beats_lz4_below_MBps"]
    if cross:
        lines += ["", f"zstd beats lz4 on links slower than {cross:,.0f} MB/s ({mbit(cross)} Mbit/s); "
                  f"lz4 is the better choice from there up to "
                  f"{summary['lz4']['breakeven_MBps']:,.0f} MB/s; above, send raw."]
    lines += [
        "",
        "## zstd level (dagen uses level 1), variable z",
        "",
        "| level | ratio | compress MB/s | decompress MB/s | break-even MB/s (Mbit/s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["levels"]:
        lines.append(f"| {r['level']} | {r['ratio']:.2f} | {r['compress_MBps']:,.0f} | "
                     f"{r['decompress_MBps']:,.0f} | {r['breakeven_MBps']:,.0f} "
                     f"({mbit(r['breakeven_MBps'])}) |")
    if results.get("echo"):
        lines += [
            "",
            "## End to end: echo through `dagen serve`, mutual TLS, 127.0.0.1",
            "",
            "| variable | compression | bytes sent | bytes received | ratio | seconds (median) | "
            "est. seconds at 100 Mbit/s | at 1 Gbit/s |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results["echo"]:
            wire = r["sent"] + r["received"]
            at = [r["seconds"] + wire / bw for bw in (12.5e6, 125e6)]
            lines.append(
                f"| {r['variable']} | {r['compression']} | {r['sent']:,} | {r['received']:,} | "
                f"{2 * r['bytes'] / wire:.2f} | {r['seconds']:.3f} | {at[0]:.2f} | {at[1]:.3f} |"
            )
        lines += [
            "",
            "Estimated: the loopback time plus the bytes on the wire at that bandwidth "
            "(the loopback transfer itself is nearly free next to such a link).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the netCDF file (eraint_uvz.nc)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per measurement")
    parser.add_argument("--no-echo", action="store_true", help="skip the end-to-end echo")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"{args.data} is absent (the shared data folder)", file=sys.stderr)
        return 2
    for family in _codecs.FAMILIES:
        _codecs.require(family)  # CodecUnavailable: pip install 'dagen-grpc[compression]'
    info = machine()
    info["when"] = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    variables = load_variables(args.data)
    results: dict[str, Any] = {"repeat": args.repeat, "codecs": {}, "choices": {}}
    for name, array in variables.items():
        print(f"[compression] {name}: {array.dtype}, {array.nbytes / 2**20:.1f} MiB",
              file=sys.stderr, flush=True)
        results["codecs"][name] = [measure_codec(c, array, args.repeat) for c in CODECS]
        results["choices"][name] = {f: _codecs.choose(array, _codecs.FAMILIES[f])
                                    for f in _codecs.FAMILIES}
    results["summary"] = summarize(results)
    results["raw_receive_MBps"] = measure_raw_receive(variables["z"], args.repeat)
    results["levels"] = measure_levels(variables["z"], args.repeat)
    if not args.no_echo:
        print("[compression] end-to-end echo through dagen serve", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="dagen-compression-") as work:
            results["echo"] = echo_end_to_end(variables, args.repeat, Path(work))
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    command = "python benchmarks/compression.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    text = report(info, results, command)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (args.out / f"compression-{stamp}.md").write_text(text)
    (args.out / f"compression-{stamp}.json").write_text(
        json.dumps({"machine": info, **results}, indent=1, default=str))
    print(f"[compression] wrote {args.out / f'compression-{stamp}.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
