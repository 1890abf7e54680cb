#!/usr/bin/env python
"""Reading part of a large remote dataset (issue 20): dagen's lazy datasets beside
xpublish's Zarr endpoint and beside a dagen function returning the same selection.

A synthetic Zarr store of about 4 GiB (--lazy-size; float32, four variables of
(time, lat, lon), 100 chunks of --lazy-size / 400 each along time, no compression) is
written once into a cache folder (--lazy-store-dir) and read from its own server by
each of:

- **dagen lazy**: ``remote.synthetic()`` (a ``@dagen.dataset`` of
  benchmarks/lazy_service.py under ``dagen serve``, mutual TLS), then
  ``.isel(time=...).compute()``: only the touched blocks should travel;
- **xpublish**: the same store served by xpublish's Zarr endpoint (xpublish-zarr,
  uvicorn, plain HTTP) and read with ``xr.open_zarr("http://127.0.0.1:PORT/zarr")``
  (fsspec, aiohttp), then the same ``.isel(...).compute()``;
- **dagen eager**: ``remote.selection(start, stop)``, a dagen function returning the
  selection (the dask-backed result streamed block by block).

Rows: 1 %, 10 % and 100 % of the time steps (--lazy-fractions), every variable,
chunk-aligned, so the touched blocks are the selection. Each row starts its server
afresh (nothing cached from an earlier row) and reads, untimed, the last chunk of every
variable first (the connection and what each server does once, on its first read, are
not in the row's time; their seconds are reported apart); the store's files are read
once before, so every system finds them in the page cache. Per row: bytes on the wire,
as the TCP payload the server sent on its connections (the kernel's tcp_info
``bytes_sent``, read with ``ss``; TLS records or HTTP framing included; the requests as
its ``bytes_received``), the touched blocks' bytes, seconds from opening to the values
in memory, and the extra peak RSS of client and server (benchmarks/common.py's
PeakRSS). The aims: bytes within 1.1x of the touched blocks, time no worse than
xpublish's on every row. With --lazy-repeat, xpublish serves repeated reads from its
chunk cache; dagen has none.

`make bench` runs it as a section of benchmarks/run.py (skipped, with the reason, when
zarr, xpublish, xpublish-zarr, uvicorn or aiohttp is missing). The dagen lazy rows are
skipped with "dagen.dataset missing" where dagen has no ``dagen.dataset``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from common import (  # noqa: E402
    HOST,
    PORT_LINE,
    PeakRSS,
    Processes,
    available_memory,
    drop_free_memory,
    fmt_size,
    make_certs,
    parse_size,
    wait_for_line,
)

import dagen  # noqa: E402

SERVICE = HERE / "lazy_service.py"
XPUBLISH_SERVER = HERE / "xpublish_server.py"
VARIABLES = ("temp", "salt", "u", "v")
LAT = LON = 512
STEP_BYTES = len(VARIABLES) * LAT * LON * 4  # one time step of every variable: 4 MiB
CHUNKS = 100  # along time, so that 1 % is one block per variable
DEFAULT_SIZE = "4GiB"
DEFAULT_FRACTIONS = "0.01,0.1,1"
SYSTEMS = ("dagen-lazy", "xpublish", "dagen-eager")
NEEDED = ("zarr", "xpublish", "xpublish_zarr", "uvicorn", "aiohttp", "fsspec")
CALL_TIMEOUT = 1800.0


class Skip(Exception):
    """A row or the section cannot run here: recorded with the reason."""


def log(msg: str) -> None:
    print(f"[lazy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- the store -----------------------------------------------------------------------------------


def shape_for(size: int) -> tuple[int, int]:
    """(time steps, steps per chunk) for a store of about ``size`` bytes."""
    per_chunk = max(1, round(size / STEP_BYTES / CHUNKS))
    return per_chunk * CHUNKS, per_chunk


def block(index: int, t0: int, t1: int) -> np.ndarray:
    """The values of variable ``index`` at time steps t0..t1: cheap, and each block's own."""
    steps = np.arange(t0, t1, dtype=np.float32) + np.float32(1000 * index)
    across = np.arange(LON, dtype=np.float32) * np.float32(1e-3)
    out = np.empty((t1 - t0, LAT, LON), np.float32)
    out[:] = steps[:, None, None] + across[None, None, :]
    return out


def ensure_store(folder: Path, size: int) -> Path:
    """The synthetic store of about ``size`` bytes in ``folder``, written once."""
    steps, per_chunk = shape_for(size)
    path = folder / f"synthetic-{steps}x{LAT}x{LON}.zarr"
    done = path.with_suffix(".complete")
    if done.exists():
        return path
    import dask.array as dsa
    import zarr

    folder.mkdir(parents=True, exist_ok=True)
    log(f"writing the {fmt_size(steps * STEP_BYTES)} store {path} (once)")
    template = xr.Dataset(
        {name: (("time", "lat", "lon"),
                dsa.zeros((steps, LAT, LON), dtype=np.float32, chunks=(per_chunk, LAT, LON)),
                {"units": "1", "long_name": f"synthetic {name}"})
         for name in VARIABLES},
        coords={"time": pd.date_range("1990-01-01", periods=steps, freq="D"),
                "lat": np.linspace(-89.5, 89.5, LAT, dtype=np.float32),
                "lon": np.linspace(0.0, 359.5, LON, dtype=np.float32)},
        attrs={"title": "dagen lazy dataset benchmark"},
    )
    template.to_zarr(path, mode="w", compute=False, zarr_format=3, consolidated=False,
                     encoding={name: {"compressors": None} for name in VARIABLES})
    group = zarr.open_group(path, mode="r+")
    for index, name in enumerate(VARIABLES):
        array = group[name]
        for t0 in range(0, steps, per_chunk):
            array[t0:t0 + per_chunk] = block(index, t0, t0 + per_chunk)
    done.write_text("written\n")
    return path


def warm_page_cache(path: Path) -> None:
    """Read every file of the store once, so that no system pays for the disk."""
    buf = bytearray(16 << 20)
    for file in sorted(path.rglob("*")):
        if file.is_file():
            with open(file, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def rows(steps: int, per_chunk: int, fractions: list[float]) -> list[tuple[float, int, int]]:
    """(fraction, start, stop) per row: whole chunks, in the middle of the time axis."""
    out = []
    for fraction in fractions:
        chunks = max(1, round(fraction * CHUNKS))
        first = (CHUNKS - chunks) // 2
        out.append((fraction, first * per_chunk, (first + chunks) * per_chunk))
    return out


def touched_bytes(path: Path, start: int, stop: int) -> int:
    """Bytes of the stored blocks a selection of time steps start..stop touches."""
    ds = xr.open_zarr(path, consolidated=False)
    total = 0
    for var in ds.data_vars.values():
        chunks = var.encoding["chunks"]
        extent = 1
        for dim, size, chunk in zip(var.dims, var.shape, chunks, strict=True):
            lo, hi = (start, stop) if dim == "time" else (0, size)
            first, last = lo // chunk, (hi - 1) // chunk
            extent *= min((last + 1) * chunk, size) - first * chunk
        total += extent * var.dtype.itemsize
    return total


def check(out: xr.Dataset, start: int, stop: int) -> None:
    """What arrived is the selection: shape, time coordinate, and every time step of the
    first and last latitude of each variable."""
    if not isinstance(out, xr.Dataset) or set(out.data_vars) != set(VARIABLES):
        raise AssertionError(f"got {type(out).__name__} {list(getattr(out, 'data_vars', []))}")
    expected_time = pd.date_range("1990-01-01", periods=stop, freq="D")[start:]
    if not np.array_equal(out["time"].values, expected_time.values):
        raise AssertionError("wrong time coordinate")
    for index, name in enumerate(VARIABLES):
        values = out[name].values
        if values.shape != (stop - start, LAT, LON) or values.dtype != np.float32:
            raise AssertionError(f"{name}: {values.shape} {values.dtype}")
        want = block(index, start, stop)
        for lat in (0, LAT - 1):
            if not np.array_equal(values[:, lat], want[:, lat]):
                raise AssertionError(f"{name}: wrong values at lat index {lat}")


# -- the systems ---------------------------------------------------------------------------------


class TcpBytes:
    """Bytes the server sent and received on its connections during a block: the kernel's
    per-connection counters (tcp_info bytes_sent and bytes_received, read with ``ss``)
    of every connection to the server's port, sampled every ``interval`` s from a thread
    (a connection closed meanwhile keeps its last sample) and once at the end, minus
    their values before the block. TCP payload: TLS records or HTTP framing included."""

    def __init__(self, port: int, interval: float = 0.2) -> None:
        self.port, self.interval = port, interval
        self._stop = threading.Event()
        self._seen: dict[str, tuple[int, int]] = {}

    def snapshot(self) -> dict[str, tuple[int, int]]:
        done = subprocess.run(["ss", "-tinH", "state", "established",
                               f"( sport = :{self.port} )"],
                              capture_output=True, text=True, check=True)
        out, peer = {}, None
        for line in done.stdout.splitlines():
            words = line.split()
            if not words:
                continue
            if not line[0].isspace() and len(words) >= 4:  # Recv-Q Send-Q local peer
                peer = words[3]
                continue
            fields = dict(w.split(":", 1) for w in words if w.startswith("bytes_"))
            if peer is not None and "bytes_sent" in fields:
                out[peer] = (int(fields["bytes_sent"]), int(fields.get("bytes_received", 0)))
            peer = None
        return out

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._seen.update(self.snapshot())

    def __enter__(self) -> TcpBytes:
        self.before = self.snapshot()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._seen.update(self.snapshot())
        sent = received = 0
        for peer, (s, r) in self._seen.items():
            s0, r0 = self.before.get(peer, (0, 0))
            sent, received = sent + s - s0, received + r - r0
        self.sent, self.received = sent, received


class Reader:
    """One way of reading the store: its server started afresh per row."""

    name = "?"

    def __init__(self, store: Path, certs: Path, work: Path, procs: Processes) -> None:
        self.store, self.certs, self.work, self.procs = store, certs, work, procs
        self.server_pid = 0
        self._proc: Any = None

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> str:
        proc, log_path = self.procs.start(self.name, command, env=env)
        self._proc, self.server_pid = proc, proc.pid
        self.port = int(wait_for_line(proc, log_path, PORT_LINE).group(1))
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> xr.Dataset:
        raise NotImplementedError

    def close(self) -> None:
        if self._proc is not None:
            self.procs.stop(self._proc)
            self._proc = None


class Xpublish(Reader):
    name = "xpublish"

    def start(self) -> None:
        self.url = f"http://{self._spawn([sys.executable, str(XPUBLISH_SERVER), str(self.store)])}/zarr"

    def read(self, start: int, stop: int) -> xr.Dataset:
        ds = xr.open_zarr(self.url)
        return ds.isel(time=slice(start, stop)).compute()


_CLIENTS: dict[Path, Any] = {}


def client_module(work: Path) -> Any:
    """benchmarks/lazy_service.py's generated client (built once per work folder)."""
    if work not in _CLIENTS:
        from dagen._build import build

        result = build(str(SERVICE), work / "lazy-build", lock=work / "lazy_service.dagen.lock")
        sys.path.insert(0, str(result.client))
        try:
            _CLIENTS[work] = importlib.import_module("lazy_service_client")
        finally:
            sys.path.remove(str(result.client))
    return _CLIENTS[work]


class DagenEager(Reader):
    name = "dagen-eager"

    def start(self) -> None:
        client_module(self.work)  # builds the lock the server reads
        target = self._spawn(
            [sys.executable, "-m", "dagen._cli", "serve", str(SERVICE), "--certs",
             str(self.certs), "--lock", str(self.work / "lazy_service.dagen.lock"),
             "--host", HOST, "--port", "0"],
            env={**os.environ, "DAGEN_BENCH_STORE": str(self.store)})
        module = client_module(self.work)
        options: dict[str, Any] = {"timeout": CALL_TIMEOUT}
        if "progress_bar" in inspect.signature(module.Client).parameters:
            options["progress_bar"] = False
        self.remote = module.Client(target, certs=self.certs, identity="alice", **options)

    def read(self, start: int, stop: int) -> xr.Dataset:
        return self.remote.selection(start, stop)

    def close(self) -> None:
        remote = getattr(self, "remote", None)
        if remote is not None:
            dagen.close(remote)
            self.remote = None
        super().close()


class DagenLazy(DagenEager):
    name = "dagen-lazy"

    def start(self) -> None:
        if not hasattr(dagen, "dataset"):
            raise Skip("dagen.dataset missing")
        super().start()

    def read(self, start: int, stop: int) -> xr.Dataset:
        ds = self.remote.synthetic()
        try:
            return ds.isel(time=slice(start, stop)).compute()
        finally:
            ds.close()


READERS: dict[str, type[Reader]] = {r.name: r for r in (DagenLazy, Xpublish, DagenEager)}


def missing_packages() -> list[str]:
    out = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name.replace("_", "-"))
    return out


def measure(reader: Reader, start: int, stop: int) -> dict[str, Any]:
    """One read: seconds, bytes each way, extra peak RSS; the values checked."""
    drop_free_memory()
    with PeakRSS([reader.server_pid]) as memory, TcpBytes(reader.port) as wire:
        t0 = time.perf_counter()
        out = reader.read(start, stop)
        seconds = time.perf_counter() - t0
    check(out, start, stop)
    del out
    drop_free_memory()
    return {"seconds": seconds, "wire_bytes": wire.sent, "request_bytes": wire.received,
            "client_extra_rss": memory.result["client_extra"],
            "server_extra_rss": memory.result["server_extra"]}


def warm_up(reader: Reader, start: int, stop: int) -> float:
    """An untimed first read (the last chunk of every variable, which the 1 % and 10 %
    rows do not touch) through the same client: the connection, and whatever each server
    does once on its first read, are not in the row's time. Returns its seconds."""
    t0 = time.perf_counter()
    out = reader.read(start, stop)
    seconds = time.perf_counter() - t0
    check(out, start, stop)
    return seconds


def run(store: Path, certs: Path, work: Path, procs: Processes, systems: list[str],
        fractions: list[float], repeat: int) -> dict[str, Any]:
    """Every row, the systems taking turns (the order reversed every row)."""
    steps, per_chunk = shape_for_store(store)
    log("reading the store once (page cache)")
    warm_page_cache(store)
    record: dict[str, Any] = {
        "store": str(store), "store_bytes": steps * STEP_BYTES, "time_steps": steps,
        "chunk": [per_chunk, LAT, LON], "chunk_bytes": per_chunk * LAT * LON * 4,
        "variables": list(VARIABLES), "repeat": repeat,
        "wire": "the TCP payload the server sent on its connections (tcp_info bytes_sent, "
                "read with ss), TLS records or HTTP framing included",
        "rows": [],
    }
    for i, (fraction, start, stop) in enumerate(rows(steps, per_chunk, fractions)):
        touched = touched_bytes(store, start, stop)
        for name in systems if i % 2 == 0 else systems[::-1]:
            row: dict[str, Any] = {"fraction": fraction, "system": name, "start": start,
                                   "stop": stop, "touched_bytes": touched}
            record["rows"].append(row)
            avail = available_memory()
            if avail is not None and avail < 2.5 * touched + (1 << 30):
                row["skipped"] = (f"needs about {(2.5 * touched + (1 << 30)) / 2**30:.1f} GiB "
                                  f"of RAM, {avail / 2**30:.1f} GiB available")
                log(f"{name} {fraction:.0%}: skipped: {row['skipped']}")
                continue
            reader = READERS[name](store, certs, work, procs)
            try:
                reader.start()
                row["first_read_s"] = warm_up(reader, steps - per_chunk, steps)
                runs = [measure(reader, start, stop) for _ in range(repeat)]
            except Skip as e:
                row["skipped"] = str(e)
                log(f"{name} {fraction:.0%}: skipped: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - recorded; the other rows go on
                row["error"] = f"{type(e).__name__}: {e}"
                row["traceback"] = traceback.format_exc()
                log(f"{name} {fraction:.0%}: FAILED {row['error']}")
                continue
            finally:
                reader.close()
                gc.collect()
            best = min(runs, key=lambda r: r["seconds"])
            row.update(best, runs=runs, median_s=statistics.median(r["seconds"] for r in runs))
            log(f"{name} {fraction:.0%}: {row['median_s']:.2f} s, "
                f"{row['wire_bytes'] / touched:.3f}x the touched {fmt_size(touched)}, "
                f"extra RSS client {row['client_extra_rss'] / 2**20:.0f} MiB, "
                f"server {row['server_extra_rss'] / 2**20:.0f} MiB")
    return record


def shape_for_store(store: Path) -> tuple[int, int]:
    ds = xr.open_zarr(store, consolidated=False)
    return ds.sizes["time"], ds[VARIABLES[0]].encoding["chunks"][0]


# -- report --------------------------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{max(0, n) / 2**20:.0f} MiB"


def markdown(record: dict[str, Any] | None) -> list[str]:
    """The section of the benchmark report."""
    if not record:
        return []
    lines = ["## Lazy datasets (issue 20)", ""]
    if record.get("skipped"):
        return [*lines, f"Skipped: {record['skipped']}", ""]
    if record.get("error"):
        return [*lines, f"Failed: {record['error']}", ""]
    lines += [
        f"A {fmt_size(record['store_bytes'])} synthetic Zarr store (float32, "
        f"{len(record['variables'])} variables, chunks {tuple(record['chunk'])} of "
        f"{fmt_size(record['chunk_bytes'])}, no compression), a slice of the time steps of "
        "every variable read by each system from its own fresh server on 127.0.0.1 (dagen "
        "with mutual TLS, xpublish plain HTTP). Wire: "
        f"{record['wire']}. Each server's first read (the last chunk of every variable, "
        "through the same client: the connection and each server's one-time costs) is "
        "untimed, its seconds in the last column. Aims: wire / touched ≤ 1.1, dagen lazy's "
        "time ≤ xpublish's.",
        "",
        "| read | system | touched blocks | wire (server → client) | wire / touched | "
        "requests | seconds | vs xpublish | extra RSS client | extra RSS server | "
        "first read, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    xpub = {r["fraction"]: r.get("median_s") for r in record["rows"] if r["system"] == "xpublish"}
    for r in record["rows"]:
        head = f"| {r['fraction']:.0%} | {r['system']} | {fmt_size(r['touched_bytes'])} |"
        if "median_s" not in r:
            lines.append(f"{head} {r.get('skipped') or r.get('error')} | | | | | | | |")
            continue
        ref = xpub.get(r["fraction"])
        versus = f"{r['median_s'] / ref:.2f}x" if ref else "–"
        lines.append(
            f"{head} {fmt_size(r['wire_bytes'])} | {r['wire_bytes'] / r['touched_bytes']:.3f} | "
            f"{fmt_size(r['request_bytes'])} | {r['median_s']:.2f} | "
            f"{versus} | "
            f"{mib(r['client_extra_rss'])} | {mib(r['server_extra_rss'])} | "
            f"{r['first_read_s']:.2f} |")
    return [*lines, ""]


# -- as a section of benchmarks/run.py and on its own --------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lazy-size", default=None,
                   help=f"the lazy-dataset store's size (default {DEFAULT_SIZE}; 400MiB "
                        "with --quick; 0: no lazy-dataset section)")
    p.add_argument("--lazy-fractions", default=DEFAULT_FRACTIONS,
                   help=f"the fractions of the store read (default {DEFAULT_FRACTIONS})")
    p.add_argument("--lazy-systems", default=",".join(SYSTEMS),
                   help=f"the readers, comma-separated (default {','.join(SYSTEMS)})")
    p.add_argument("--lazy-repeat", type=int, default=1,
                   help="reads per row; the fastest is reported (default 1)")
    p.add_argument("--lazy-store-dir", default=None,
                   help="where the store is written once and kept (default "
                        "$XDG_CACHE_HOME/dagen-bench, else ~/.cache/dagen-bench)")


def store_dir(args: argparse.Namespace) -> Path:
    if args.lazy_store_dir:
        return Path(args.lazy_store_dir)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dagen-bench"


def stage(args: argparse.Namespace, certs: Path, work: Path, procs: Processes,
          results: dict[str, Any], say: Callable[[str], None] = log) -> None:
    """The lazy-dataset section into ``results["lazy_datasets"]``: skipped, with the
    reason, when a package it needs is missing; a failure is recorded, not raised."""
    size = parse_size(args.lazy_size or ("400MiB" if getattr(args, "quick", False)
                                         else DEFAULT_SIZE))
    if size == 0:
        return
    record: dict[str, Any] = {}
    results["lazy_datasets"] = record
    missing = missing_packages()
    if missing:
        record["skipped"] = (f"{', '.join(missing)} missing (pip install -e '.[bench]')")
        say(f"lazy datasets skipped: {record['skipped']}")
        return
    systems = [s for s in args.lazy_systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        record["error"] = f"unknown --lazy-systems {sorted(unknown)}; choose from {list(SYSTEMS)}"
        return
    fractions = [float(f) for f in args.lazy_fractions.split(",") if f.strip()]
    say(f"lazy datasets: {', '.join(systems)} reading "
        f"{', '.join(f'{f:.0%}' for f in fractions)} of {fmt_size(size)}")
    try:
        store = ensure_store(store_dir(args), size)
        record.update(run(store, certs, work, procs, systems, fractions, args.lazy_repeat))
    except Exception as e:  # noqa: BLE001
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc()
        say(f"lazy datasets FAILED {record['error']}")


def failures(results: dict[str, Any]) -> list[str]:
    record = results.get("lazy_datasets") or {}
    found = [f"lazy datasets: {record['error']}"] if "error" in record else []
    return found + [f"lazy datasets {r['system']} {r['fraction']:.0%}: {r['error']}"
                    for r in record.get("rows", []) if "error" in r]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    add_arguments(p)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dagen-lazy-") as folder:
        work = Path(folder)
        procs = Processes(work)
        try:
            stage(args, make_certs(work / "certs"), work, procs, results)
        finally:
            procs.stop_all()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n".join(markdown(results.get("lazy_datasets"))))
    return 1 if failures(results) else 0


if __name__ == "__main__":
    sys.exit(main())
