"""The results of a benchmark run as JSON, a markdown report with the issue's bars, and
a plot of throughput against payload size."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import fmt_size

MiB = 1 << 20
OTHERS = ("grpc", "flight", "dask", "dask-direct")
PEERS = ("grpc", "flight", "dask")  # beside dagen in the small, tiny and many-callers stages


def _ok_echo(rec: dict[str, Any], size: int) -> dict[str, Any] | None:
    r = rec.get("echo", {}).get(str(size))
    return r if r and "throughput_Bps" in r else None


def _tp(results: dict[str, Any], name: str, size: int) -> float | None:
    rec = results["systems"].get(name)
    if not rec:
        return None
    r = _ok_echo(rec, size)
    return r["throughput_Bps"] if r else None


def compute_bars(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars as ratios from this run; None where a number is missing."""
    cfg = results["config"]
    sizes: list[int] = cfg["sizes"]
    ref = cfg["memory_size"]
    bars: dict[str, Any] = {"reference_size": ref}

    # The paired rounds (systems taking turns) when the run has them; else each
    # system's own runs.
    paired = (results.get("paired") or {}).get("systems") or {}
    bars["source"] = "paired rounds" if paired.get("dagen") else "each system's own runs"

    def tp(name: str) -> float | None:
        if paired.get("dagen"):
            return (paired.get(name) or {}).get("throughput_Bps")
        return _tp(results, name, ref)

    dagen = tp("dagen")
    others = {n: tp(n) for n in OTHERS}
    measured = {n: v for n, v in others.items() if v}
    best = max(measured.items(), key=lambda kv: kv[1]) if measured else None
    bars["throughput_vs_best_other"] = {
        "value": dagen / best[1] if dagen and best else None,
        "best_other": best[0] if best else None,
        "target": ">= 1.0",
        "met": bool(dagen and best and dagen / best[1] >= 1.0),
    }
    # For information: the others with clients that reuse result memory as dagen's does
    # (paired rounds only), i.e. the transports without the cost of fresh memory.
    reusing = {n: (paired.get(n) or {}).get("throughput_Bps")
               for n in ("grpc-reusing", "flight-reusing")}
    reusing_ok = {n: v for n, v in reusing.items() if v}
    best_reusing = max(reusing_ok.items(), key=lambda kv: kv[1]) if reusing_ok else None
    bars["throughput_vs_best_reusing"] = {
        "value": dagen / best_reusing[1] if dagen and best_reusing else None,
        "best_other": best_reusing[0] if best_reusing else None,
        "target": "informational", "met": None,
    }
    grpc = others.get("grpc")
    bars["throughput_vs_raw_grpc"] = {
        "value": dagen / grpc if dagen and grpc else None,
        "target": ">= 0.9",
        "met": bool(dagen and grpc and dagen / grpc >= 0.9),
    }

    # Memory: extra peak RSS <= 1.1 x held + 64 MiB. Client holds the array it sent and
    # the one it received; the server the array it received plus the result (for an
    # echo they are the same array, so "strict" counts it once).
    rec = results["systems"].get("dagen") or {}
    r = _ok_echo(rec, ref) or (rec.get("echo", {}).get(str(ref)) or {})
    mem = r.get("memory")
    for side, held, strict_held in (("client", 2 * ref, 2 * ref), ("server", 2 * ref, ref)):
        if mem:
            extra = mem[f"{side}_extra"]
            bound = 1.1 * held + 64 * MiB
            strict = 1.1 * strict_held + 64 * MiB
            bars[f"memory_{side}"] = {
                "extra_bytes": extra, "bound_bytes": bound, "value": extra / bound,
                "strict_bound_bytes": strict, "strict_value": extra / strict,
                "target": "<= 1.0", "met": extra <= bound,
            }
        else:
            bars[f"memory_{side}"] = {"value": None, "target": "<= 1.0", "met": False}

    # Tiny calls: from the tiny rounds (servers launched several times) when the run
    # has them; else the paired rounds; else each system's own runs.
    tiny = (results.get("tiny_rounds") or {}).get("systems") or {}
    launches = (results.get("tiny_rounds") or {}).get("launches", 0)
    bars["tiny_source"] = (
        f"tiny rounds ({_count(launches, 'launch', 'launches')})" if tiny.get("dagen")
        else "paired rounds" if paired.get("dagen") else "each system's own runs")

    def p50(name: str) -> float | None:
        if tiny.get("dagen"):
            return (tiny.get(name) or {}).get("p50_us")
        if paired.get("dagen"):
            return (paired.get(name) or {}).get("tiny_p50_us")
        t = (results["systems"].get(name) or {}).get("tiny") or {}
        return t.get("p50_us")

    def cpu(name: str) -> float | None:
        r = _ok_echo(results["systems"].get(name) or {}, ref)
        if not r or r.get("cpu_server_s") is None:
            return None
        return r["cpu_client_s"] + r["cpu_server_s"]

    cd, cg = cpu("dagen"), cpu("grpc")
    bars["cpu_vs_raw_grpc"] = {"value": cd / cg if cd and cg else None,
                               "target": "informational (lower is better)", "met": None}

    d, g = p50("dagen"), p50("grpc")
    bars["tiny_p50_vs_raw_grpc"] = {
        "value": d / g if d and g else None, "target": "<= 1.15",
        "met": bool(d and g and d / g <= 1.15),
    }
    # For information: the tiny calls of the paired rounds, each block right after the
    # same system's large echo.
    d, g = ((paired.get(n) or {}).get("tiny_p50_us") for n in ("dagen", "grpc"))
    bars["tiny_p50_after_echo_vs_raw_grpc"] = {
        "value": d / g if d and g else None, "target": "informational", "met": None,
    }

    # Linearity: throughput at every size from the base (64 MiB, or the smallest size
    # above the smallest when 64 MiB is not measured) up, relative to the base.
    base = 64 * MiB if 64 * MiB in sizes else (sizes[1] if len(sizes) > 1 else sizes[0])
    lin: dict[str, Any] = {"base_size": base, "target": ">= 0.9 at every larger size"}
    for name in results["systems"]:
        tb = _tp(results, name, base)
        ratios = {str(s): (_tp(results, name, s) or 0) / tb
                  for s in sizes if s > base and tb and _tp(results, name, s)}
        lin[name] = ratios
    dagen_ratios = lin.get("dagen") or {}
    lin["value"] = min(dagen_ratios.values()) if dagen_ratios else None
    lin["met"] = bool(dagen_ratios) and all(v >= 0.9 for v in dagen_ratios.values())
    bars["linearity"] = lin
    bars["issue19"] = issue19_bars(results, bars)
    return bars


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _bar(value: float | None, target: str, **extra: Any) -> dict[str, Any]:
    op, limit = target.split()
    met = None if value is None else (value <= float(limit) if op == "<=" else value >= float(limit))
    return {"value": value, "target": target, "met": met, **extra}


def issue19_bars(results: dict[str, Any], bars: dict[str, Any]) -> dict[str, Any]:
    """Issue 19's bars as ratios from this run (None where a number is missing)."""
    small = (results.get("small") or {}).get("systems") or {}
    many = (results.get("many") or {}).get("systems") or {}

    def echo(name: str, size: int, key: str) -> float | None:
        return ((small.get(name) or {}).get(str(size)) or {}).get(key)

    out: dict[str, Any] = {
        "echo_8k_median_vs_flight": _bar(
            _ratio(echo("dagen", 8 << 10, "median_s"), echo("flight", 8 << 10, "median_s")),
            "<= 1.0"),
        "tiny_p50_vs_raw_grpc": _bar(bars["tiny_p50_vs_raw_grpc"]["value"], "<= 1.1"),
        "echo_1m_throughput_vs_flight": _bar(
            _ratio(echo("dagen", MiB, "throughput_Bps"), echo("flight", MiB, "throughput_Bps")),
            ">= 1.0"),
    }
    for layout in ("threads", "processes"):
        d, g = ((many.get(n) or {}).get(layout, {}).get("calls_per_s") for n in ("dagen", "grpc"))
        out[f"many_{layout}_vs_raw_grpc"] = _bar(_ratio(d, g), ">= 1.0")
    best = bars["throughput_vs_best_other"]
    out["echo_reference_vs_best_peer"] = _bar(best["value"], ">= 1.0",
                                              best_other=best["best_other"],
                                              size=bars["reference_size"])
    # The largest size above the reference: each system's own runs (too large to take turns)
    sizes = [s for s in results["config"]["sizes"] if s > bars["reference_size"]]
    if sizes:
        size = max(sizes)
        others = {n: _tp(results, n, size) for n in OTHERS}
        measured = {n: v for n, v in others.items() if v}
        top = max(measured.items(), key=lambda kv: kv[1]) if measured else None
        out["echo_largest_vs_best_peer"] = _bar(
            _ratio(_tp(results, "dagen", size), top[1] if top else None), ">= 1.0",
            best_other=top[0] if top else None, size=size,
            unmeasured={n: _skip_reason(results, n, size) for n, v in others.items()
                        if not v and n in results["systems"]})
    base = results.get("rss_baseline")
    rec = results["systems"].get("dagen") or {}
    mem = ((rec.get("echo") or {}).get(str(bars["reference_size"])) or {}).get("memory")
    for side in ("client", "server"):
        value = (mem[f"{side}_extra"] / base[f"{side}_extra"]
                 if mem and base and base.get("size") == bars["reference_size"]
                 and f"{side}_extra" in base else None)
        out[f"rss_{side}_vs_baseline"] = _bar(value, "<= 1.05",
                                              baseline=base["file"] if base else None)
    return out


def _skip_reason(results: dict[str, Any], name: str, size: int) -> str:
    r = (results["systems"][name].get("echo") or {}).get(str(size)) or {}
    return r.get("skipped") or r.get("error") or results["systems"][name].get("status", "?")


# -- markdown -------------------------------------------------------------------------------------


def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _mark(bar: dict[str, Any]) -> str:
    if bar.get("value") is None:
        return "n/a"
    return "yes" if bar["met"] else "**no**"


def markdown(results: dict[str, Any]) -> str:
    cfg, m, v = results["config"], results["machine"], results["versions"]
    sizes: list[int] = cfg["sizes"]
    systems = results["systems"]
    bars = results["bars"]
    ref = cfg["memory_size"]
    lines = [
        f"# dagen benchmark {results['timestamp']}",
        "",
        f"`{results['command']}` — {results['seconds']:.0f} s"
        + (" (**interrupted**)" if results.get("interrupted") else ""),
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m.get('cores_usable')} usable), "
        f"{m.get('memory_total', 0) / 2**30:.0f} GiB RAM; {m['platform']}",
        f"- load average (1/5/15 min) before {results['load_before']}, "
        f"after {results['load_after']}",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- 127.0.0.1, mutual TLS everywhere; echo of a float64 xarray.DataArray, "
        f"chunks of {cfg.get('chunk_bytes', 1 << 20) / (1 << 20):.4g} MiB; median of {cfg['runs']} runs after 1 warm-up; "
        f"throughput = 2 × payload / time",
        "",
        "## Echo throughput (MiB/s, median)",
        "",
        "| system | " + " | ".join(fmt_size(s) for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name, rec in systems.items():
        cells = []
        for s in sizes:
            r = rec.get("echo", {}).get(str(s))
            if r is None:
                cells.append("–")
            elif "throughput_Bps" in r:
                cells.append(f"{r['throughput_Bps'] / MiB:.0f}")
            elif "error" in r:
                cells.append("failed")
            else:
                cells.append("skipped")
        if rec.get("status") != "ok" and not rec.get("echo"):  # never started
            cells = [rec.get("status", "skipped")] * len(sizes)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines += [
        "",
        f"## Extra peak RSS during the {fmt_size(ref)} echo (MiB above the RSS before the call)",
        "",
        "| system | client | server | server processes |",
        "|---|---:|---:|---|",
    ]
    for name, rec in systems.items():
        r = rec.get("echo", {}).get(str(ref)) or {}
        mem = r.get("memory")
        procs = {"dask": "scheduler + worker"}.get(name, "1")
        if mem:
            lines.append(f"| {name} | {mem['client_extra'] / MiB:.0f} | "
                         f"{mem['server_extra'] / MiB:.0f} | {procs} |")
        else:
            lines.append(f"| {name} | – | – | {procs} |")

    lines += [
        "",
        f"## CPU time per {fmt_size(ref)} echo (seconds, median; clock ticks of 10 ms)",
        "",
        "CPU time does not depend on what else runs on the machine as much as wall time "
        "does: on 2 shared cores it is the steadier measure of what each system costs.",
        "",
        "| system | client | server | total | CPU s per GiB moved |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rec in systems.items():
        r = _ok_echo(rec, ref)
        if r and r.get("cpu_server_s") is not None:
            total = r["cpu_client_s"] + r["cpu_server_s"]
            lines.append(f"| {name} | {r['cpu_client_s']:.2f} | {r['cpu_server_s']:.2f} | "
                         f"{total:.2f} | {total / (2 * ref / 2**30):.2f} |")
        else:
            lines.append(f"| {name} | – | – | – | – |")
    lines += [
        "",
        "## Tiny call (two ints in, one out)",
        "",
        "| system | calls | p50 µs | p99 µs | calls/s sequential | "
        f"calls/s, {cfg['concurrency']} callers |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rec in systems.items():
        t = rec.get("tiny") or {}
        if "p50_us" in t:
            capped = " (time cap)" if t.get("capped_by_time") else ""
            lines.append(
                f"| {name} | {t['calls']}{capped} | {t['p50_us']:.0f} | {t['p99_us']:.0f} | "
                f"{t['sequential_calls_per_s']:.0f} | {t['concurrent_calls_per_s']:.0f} |"
            )
        else:
            lines.append(f"| {name} | – | – | – | – | {t.get('error', '–')} |")

    tp_best = bars["throughput_vs_best_other"]
    mc, ms = bars["memory_client"], bars["memory_server"]
    lin = bars["linearity"]
    lin_detail = ", ".join(f"{fmt_size(int(s))}: {r:.2f}" for s, r in (lin.get("dagen") or {}).items())
    lines += [
        "",
        *_paired_table(results),
        *_tiny_rounds_table(results),
        *_relay_table(results),
        *_small_table(results),
        *_many_table(results),
        *_issue19_table(results),
        "## The bars (issue 4), as ratios from this run",
        "",
        f"Throughput ratios from {bars['source']}; tiny-call ratio from {bars['tiny_source']}.",
        "",
        "| bar | value | target | met |",
        "|---|---:|---|---|",
        f"| {fmt_size(ref)} echo throughput: dagen / best other "
        f"({tp_best.get('best_other') or '–'}) | {_f(tp_best['value'])} | ≥ 1.0 | {_mark(tp_best)} |",
        f"| (informational) {fmt_size(ref)} echo throughput: dagen / best other whose client "
        f"reuses result memory too ({bars['throughput_vs_best_reusing'].get('best_other') or '–'}) | "
        f"{_f(bars['throughput_vs_best_reusing']['value'])} | – | – |",
        f"| {fmt_size(ref)} echo throughput: dagen / raw grpcio | "
        f"{_f(bars['throughput_vs_raw_grpc']['value'])} | ≥ 0.9 | "
        f"{_mark(bars['throughput_vs_raw_grpc'])} |",
        f"| (informational) {fmt_size(ref)} echo CPU time, client + server: dagen / raw grpcio | "
        f"{_f(bars['cpu_vs_raw_grpc']['value'])} | lower is better | – |",
        f"| client extra peak RSS / (1.1 × 2 × payload + 64 MiB) | {_f(mc['value'])} | ≤ 1.0 | "
        f"{_mark(mc)} |",
        f"| server extra peak RSS / (1.1 × 2 × payload + 64 MiB) | {_f(ms['value'])} | ≤ 1.0 | "
        f"{_mark(ms)} |",
        f"| server, strict (echo: received = result, held once) / (1.1 × payload + 64 MiB) | "
        f"{_f(ms.get('strict_value'))} | ≤ 1.0 | "
        f"{'n/a' if ms.get('strict_value') is None else ('yes' if ms['strict_value'] <= 1 else '**no**')} |",
        f"| tiny call p50: dagen / raw grpcio unary | "
        f"{_f(bars['tiny_p50_vs_raw_grpc']['value'])} | ≤ 1.15 | "
        f"{_mark(bars['tiny_p50_vs_raw_grpc'])} |",
        f"| (informational) tiny call p50 right after a {fmt_size(ref)} echo (paired rounds): "
        f"dagen / raw grpcio | {_f(bars['tiny_p50_after_echo_vs_raw_grpc']['value'])} | – | – |",
        f"| linearity: dagen throughput / at {fmt_size(lin['base_size'])}, worst larger size "
        f"({lin_detail or '–'}) | {_f(lin['value'])} | ≥ 0.9 | {_mark(lin)} |",
    ]
    others = []
    for name in systems:
        ratios = lin.get(name) or {}
        if name != "dagen" and ratios:
            others.append(f"{name} " + ", ".join(f"{fmt_size(int(k))}: {r:.2f}"
                                                 for k, r in ratios.items()))
    if others:
        lines += ["", f"Linearity of the others (throughput / at {fmt_size(lin['base_size'])}): "
                  + "; ".join(others) + "."]
    skipped = [(n, r) for n, r in systems.items() if r.get("status") != "ok"]
    notes = []
    for name, rec in systems.items():
        for s, r in rec.get("echo", {}).items():
            if "skipped" in r or "error" in r:
                notes.append(f"- {name} {fmt_size(int(s))}: {r.get('error') or r.get('skipped')}")
        t = rec.get("tiny") or {}
        if t.get("capped_by_time"):
            notes.append(f"- {name}: sequential tiny calls stopped by --tiny-max-seconds "
                         f"after {t['calls']} calls")
    if skipped or notes:
        lines += ["", "## Skipped and failed", ""]
        lines += [f"- {n}: {r['status']}: {r.get('reason', '')}" for n, r in skipped]
        lines += notes
    lines += [
        "",
        "Notes: the server RSS of dask sums its scheduler and worker (data goes client → "
        "scheduler → worker and back). Extra RSS is the larger of the kernel's high-water "
        "mark (VmHWM, reset before the call) and 10 ms sampling; it is measured on the "
        "warm-up call of that size, so memory a server kept from an earlier call of the "
        "same size cannot hide what the call needs.",
        "",
    ]
    if results.get("lazy_datasets"):  # the lazy-dataset section renders itself
        from lazy_datasets import markdown as lazy_markdown

        lines += [*lazy_markdown(results["lazy_datasets"]), ""]
    return "\n".join(lines)


def _paired_table(results: dict[str, Any]) -> list[str]:
    paired = results.get("paired")
    if not paired:
        return []
    lines = [
        f"## Paired rounds: the systems taking turns "
        f"({_count(paired['rounds'], 'round', 'rounds')})",
        "",
        "The servers of these systems all up, each round one "
        f"{fmt_size(paired['size'])} echo and a block of tiny calls per system (right after "
        "its echo), the order reversed every round: a change in the machine's load hits "
        "them alike.",
        "",
    ]
    if paired.get("error"):
        return [*lines, f"Failed: {paired['error']}", ""]
    return [*lines, *_turns_rows(paired), ""]


def _turns_rows(record: dict[str, Any]) -> list[str]:
    """The table of systems taking turns (paired rounds, relay rounds)."""
    size = record["size"]
    lines = [f"| system | {fmt_size(size)} echo MiB/s (median) | each round | "
             "tiny call p50 µs after the echo | tiny calls |", "|---|---:|---|---:|---:|"]
    for name, r in record["systems"].items():
        rounds = ", ".join(f"{2 * size / t / MiB:.0f}" for t in r["times_s"])
        lines.append(f"| {name} | {r['throughput_Bps'] / MiB:.0f} | {rounds} | "
                     f"{_f(r['tiny_p50_us'], '{:.0f}')} | {r['tiny_calls']} |")
    return lines


def _tiny_rounds_table(results: dict[str, Any]) -> list[str]:
    tiny = results.get("tiny_rounds")
    if not tiny:
        return []
    lines = [
        f"## Tiny rounds: the servers launched {_count(tiny['launches'], 'time', 'times')}",
        "",
        f"Each launch, after {results['config'].get('tiny_warmup_calls', '?')} calls each, "
        f"{tiny['rounds']} rounds of a block of sequential tiny calls per system, the order "
        "reversed every round. p50 and p99 over all calls of all launches.",
        "",
    ]
    if tiny.get("error"):
        return [*lines, f"Failed: {tiny['error']}", ""]
    lines += ["| system | calls | p50 µs | p99 µs | p50 µs of each launch |",
              "|---|---:|---:|---:|---|"]
    for name, r in tiny["systems"].items():
        each = ", ".join(f"{v:.0f}" for v in r["launch_p50_us"])
        lines.append(f"| {name} | {r['calls']} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {each} |")
    return [*lines, ""]


LABELS = {"dagen": "dagen", "grpc": "raw grpcio", "flight": "Arrow Flight",
          "dask": "dask.distributed", "dask-direct": "dask, scatter + gather direct"}


def _system_rows(header: str, columns: list[str], data: dict[str, Any],
                 cells: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    """A table with a row per system: ``cells(its record)`` right-aligned."""
    lines = [f"| {header} | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, per in data.items():
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells(per)) + " |")
    return lines


def small_rows(results: dict[str, Any]) -> list[str]:
    """The small arrays' table: median ms per echo and MiB/s, per size, per system."""
    sizes = results["small"]["sizes"]
    return _system_rows(
        "small echo, median per echo (MiB/s)", [fmt_size(s) for s in sizes],
        results["small"]["systems"],
        lambda per: [f"{per[str(s)]['median_s'] * 1e3:.2f} ms "
                     f"({per[str(s)]['throughput_Bps'] / MiB:.0f})" for s in sizes])


def many_rows(results: dict[str, Any]) -> list[str]:
    """The many-callers table: calls/s, p50 and p99 for each layout, per system."""
    layouts = results["many"]["layouts"]
    head = [f"{p} × {t}" if p > 1 else f"{t} threads" for p, t in layouts.values()]
    return _system_rows(
        "many callers, tiny calls", [f"{h}: {c}" if c == "calls/s" else c
                                     for h in head for c in ("calls/s", "p50", "p99")],
        results["many"]["systems"],
        lambda per: [f"{per[k]['calls_per_s']:.0f}" if c == "n" else
                     f"{per[k][c] / 1e3:.2f} ms" for k in layouts
                     for c in ("n", "p50_us", "p99_us")])


def issue19_rows(results: dict[str, Any]) -> list[str]:
    """Issue 19's bars as ratios from this run."""
    b = results["bars"]["issue19"]
    tiny = results.get("tiny_rounds") or {}
    ref = fmt_size(b["echo_reference_vs_best_peer"]["size"])
    rows = [
        ("8 KiB echo, median time: dagen / Arrow Flight (small rounds)",
         "echo_8k_median_vs_flight", "≤ 1.0"),
        (f"tiny call p50: dagen / raw grpcio (tiny rounds, "
         f"{_count(tiny.get('launches', 0), 'launch', 'launches')})",
         "tiny_p50_vs_raw_grpc", "≤ 1.1"),
        ("1 MiB echo throughput: dagen / Arrow Flight (small rounds)",
         "echo_1m_throughput_vs_flight", "≥ 1.0"),
        ("many callers, 50 threads, calls/s: dagen / raw grpcio", "many_threads_vs_raw_grpc",
         "≥ 1.0"),
        ("many callers, 4 processes × 12 threads, calls/s: dagen / raw grpcio",
         "many_processes_vs_raw_grpc", "≥ 1.0"),
        (f"{ref} echo throughput: dagen / best peer "
         f"({b['echo_reference_vs_best_peer'].get('best_other') or '–'}; paired rounds)",
         "echo_reference_vs_best_peer", "≥ 1.0"),
    ]
    if "echo_largest_vs_best_peer" in b:
        big = b["echo_largest_vs_best_peer"]
        rows.append((f"{fmt_size(big['size'])} echo throughput: dagen / best peer "
                     f"({big.get('best_other') or '–'}; each system's own runs)",
                     "echo_largest_vs_best_peer", "≥ 1.0"))
    base = b["rss_client_vs_baseline"].get("baseline") or "no earlier run"
    missing = (results.get("rss_baseline") or {}).get("missing")
    if missing:
        base += f" ({missing})"
    rows += [(f"{ref} echo extra peak RSS, client: this run / {base}",
              "rss_client_vs_baseline", "≤ 1.05"),
             (f"{ref} echo extra peak RSS, server: this run / {base}",
              "rss_server_vs_baseline", "≤ 1.05")]
    lines = ["| bar (issue 19) | this run | target | met |", "| --- | ---: | --- | --- |"]
    for label, key, target in rows:
        lines.append(f"| {label} | {_f(b[key]['value'])} | {target} | {_mark(b[key])} |")
    return lines


def _stage_section(results: dict[str, Any], stage: str, heading: str, intro: str,
                   rows: Callable[[dict[str, Any]], list[str]]) -> list[str]:
    """A stage's section of the report: heading, what it measured, its table (or why not)."""
    record = results.get(stage)
    if not record:
        return []
    lines = [f"## {heading}", "", intro, ""]
    if record.get("error"):
        return [*lines, f"Failed: {record['error']}", ""]
    return [*lines, *rows(results), ""]


def _small_table(results: dict[str, Any]) -> list[str]:
    small = results.get("small") or {}
    return _stage_section(
        results, "small",
        f"Small arrays: the systems taking turns ({_count(small.get('rounds', 0), 'round', 'rounds')})",
        "All servers up; each round, for each size, a block of back-to-back echoes per "
        f"system, the order reversed every round; {small.get('calls')} echoes per size and "
        "system in all. dask: `client.submit(echo, da).result()`.", small_rows)


def _many_table(results: dict[str, Any]) -> list[str]:
    many = results.get("many") or {}
    args = many.get("server_args") or {}
    return _stage_section(
        results, "many", "Many callers making tiny calls",
        f"All servers up, taking turns, {_count(many.get('rounds', 0), 'round', 'rounds')} of "
        f"{many.get('seconds', 0):g} s per system and layout; calls/s over the whole time, p50 "
        "and p99 over every call. Client processes are benchmarks/many_callers.py. "
        f"Server threads: {many.get('server_threads')} for dagen (`dagen serve "
        f"{' '.join(args.get('dagen', []))}`: max(--workers 8, --max-calls + 8); "
        "every caller is the same identity) and for raw grpcio "
        f"(`raw_grpc_server.py {' '.join(args.get('grpc', []))}`); Flight: its C++ "
        "server's own pool; dask: a scheduler and a worker of 2 threads.", many_rows)


def _issue19_table(results: dict[str, Any]) -> list[str]:
    return ["## The bars of issue 19, as ratios from this run", "", *issue19_rows(results), ""]


def echo_rows(results: dict[str, Any]) -> list[str]:
    """Each system's own runs: echo throughput per size (MiB/s), or why not measured."""
    sizes = results["config"]["sizes"]

    def cell(rec: dict[str, Any], size: int) -> str:
        r = (rec.get("echo") or {}).get(str(size))
        if r and "throughput_Bps" in r:
            return f"{r['throughput_Bps'] / MiB:.0f}"
        why = (r or {}).get("skipped", "") or (r or {}).get("error", "") or rec.get("status", "–")
        need = re.search(r"needs about ([\d.]+ GiB)", why)
        return f"(needs {need.group(1)})" if need else "failed" if r and "error" in r else "–"

    return _system_rows("echo throughput, MiB/s", [fmt_size(s) for s in sizes],
                        results["systems"], lambda rec: [cell(rec, s) for s in sizes])


def paired_rows(results: dict[str, Any]) -> list[str]:
    size = results["paired"]["size"]
    return _system_rows(
        "paired rounds", [f"{fmt_size(size)} echo, MiB/s (each round)",
                          "tiny call p50 right after its echo"],
        results["paired"]["systems"],
        lambda r: [f"{r['throughput_Bps'] / MiB:.0f} ("
                   + ", ".join(f"{2 * size / t / MiB:.0f}" for t in r["times_s"]) + ")",
                   f"{_f(r['tiny_p50_us'], '{:.0f}')} µs"])


def tiny_rows(results: dict[str, Any]) -> list[str]:
    tiny = results["tiny_rounds"]
    return _system_rows(
        f"tiny rounds ({_count(tiny['launches'], 'launch', 'launches')})",
        ["p50", "p99", "p50 of each launch"], tiny["systems"],
        lambda r: [f"{r['p50_us']:.0f} µs", f"{r['p99_us']:.0f} µs",
                   ", ".join(f"{v:.0f}" for v in r["launch_p50_us"])])


def issue4_rows(results: dict[str, Any]) -> list[str]:
    b = results["bars"]
    ref = fmt_size(b["reference_size"])
    best, reuse = b["throughput_vs_best_other"], b["throughput_vs_best_reusing"]
    lin = b["linearity"]
    rows = [
        (f"{ref} throughput / the best other ({LABELS.get(best['best_other'], '–')}), paired",
         _f(best["value"]), "≥ 1.0", _mark(best)),
        (f"(information) the same / the best `-reusing` ({reuse['best_other'] or '–'})",
         _f(reuse["value"]), "–", "–"),
        (f"{ref} throughput / raw grpcio, paired", _f(b["throughput_vs_raw_grpc"]["value"]),
         "≥ 0.9", _mark(b["throughput_vs_raw_grpc"])),
        ("extra peak RSS, client / server, vs 1.1 × held + 64 MiB",
         f"{_f(b['memory_client']['value'])} / {_f(b['memory_server']['value'])}", "≤ 1.0",
         "yes" if b["memory_client"]["met"] and b["memory_server"]["met"] else "**no**"),
        ("tiny call p50 / raw grpcio, tiny rounds", _f(b["tiny_p50_vs_raw_grpc"]["value"]),
         "≤ 1.15", _mark(b["tiny_p50_vs_raw_grpc"])),
        (f"linearity, worst larger size vs {fmt_size(lin['base_size'])}", _f(lin["value"]),
         "≥ 0.9", _mark(lin)),
    ]
    return ["| bar (issue 4) | this run | target | met |", "| --- | ---: | --- | --- |",
            *(f"| {a} | {v} | {t} | {m} |" for a, v, t, m in rows)]


# The tables docs/performance.md quotes, each with its caption: (stage, caption, rows)
DOCS_TABLES: list[tuple[str | None, str, Callable[[dict[str, Any]], list[str]]]] = [
    (None, "Echo, each system measured in turn:", echo_rows),
    ("paired", "Large arrays, the systems taking turns (paired rounds):", paired_rows),
    ("tiny_rounds", "Tiny calls, the servers launched afresh several times (tiny rounds):",
     tiny_rows),
    ("small", "Small arrays, the systems taking turns (small rounds); median time per echo "
     "(MiB/s):", small_rows),
    ("many", "Many callers making tiny calls, the systems taking turns:", many_rows),
    (None, "The bars of issue 19, as ratios from this run:", issue19_rows),
    (None, "The bars of issue 4:", issue4_rows),
]


def docs_tables(results: dict[str, Any]) -> str:
    """The tables docs/performance.md quotes, from a run's results (report.py --docs);
    tests/test_docs_performance.py checks the page against it."""
    results = {**results, "bars": compute_bars(results)}  # as this report.py computes them
    parts = []
    for stage, caption, rows in DOCS_TABLES:
        if stage is None or (results.get(stage) or {}).get("systems"):
            parts.append("\n".join([caption, "", *rows(results)]))
    return "\n\n".join(parts) + "\n"


def _relay_table(results: dict[str, Any]) -> list[str]:
    relay = results.get("relay")
    if not relay:
        return []
    lines = [
        f"## Through the relay (issue 17; {_count(relay['rounds'], 'round', 'rounds')})",
        "",
        "dagen direct, and dagen through `dagen relay` on 127.0.0.1 (the server's SSH "
        "reverse tunnel, routed by SNI, TLS end to end), both up, taking turns: each round "
        f"one {fmt_size(relay['size'])} echo and a block of tiny calls (right after the echo) "
        "per system.",
        "",
    ]
    if relay.get("skipped"):
        return [*lines, f"Skipped: {relay['skipped']}", ""]
    if relay.get("error"):
        return [*lines, f"Failed: {relay['error']}", ""]
    lines += [
        *_turns_rows(relay),
        "",
        f"Relay / direct: echo throughput {_f(relay.get('throughput_ratio'))} (issue 17 aims "
        f"at ≥ 0.5), tiny-call p50 {_f(relay.get('tiny_p50_ratio'))}.",
        "",
    ]
    return lines


# -- plot ------------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes: list[int] = results["config"]["sizes"]
    small = (results.get("small") or {}).get("systems") or {}
    many = (results.get("many") or {}).get("systems") or {}
    panels = 1 + bool(small) + bool(many)
    fig, axes = plt.subplots(1, panels, figsize=(7.5 + 5 * (panels - 1), 4.8), dpi=120,
                             squeeze=False)
    ax = axes[0][0]
    for name, rec in results["systems"].items():
        xs, ys = [], []
        for s in sizes:
            r = _ok_echo(rec, s)
            if r:
                xs.append(s)
                ys.append(r["throughput_Bps"] / MiB)
        if not xs:
            continue
        color, marker, width = STYLES.get(name, ("C7", "x", 1.5))
        ax.plot(xs, ys, marker=marker, color=color, linewidth=width, label=rec.get("label", name))
    for name, per in small.items():  # the small rounds, as hollow markers
        color, marker, _ = STYLES.get(name, ("C7", "x", 1.5))
        xs = sorted(int(k) for k in per)
        ax.plot(xs, [per[str(x)]["throughput_Bps"] / MiB for x in xs], linestyle=":",
                marker=marker, color=color, markerfacecolor="none")
    ticks = sorted({*sizes, *(int(k) for per in small.values() for k in per)})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks)
    ax.set_xticklabels([fmt_size(s) for s in ticks], fontsize=8)
    ax.set_xlabel("payload (float64 DataArray); hollow, dotted: small rounds (taking turns)")
    ax.set_ylabel("echo throughput, 2 × payload / time (MiB/s)")
    m = results["machine"]
    ax.set_title(f"echo over mutual TLS on 127.0.0.1 — {m['cores']} cores, "
                 f"load {results['load_before'][0]:.1f}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    panel = 1
    if small:
        _bars(axes[0][panel], small, lambda per, k: per[k]["median_s"] * 1e3,
              [str(s) for s in results["small"]["sizes"]],
              [fmt_size(s) for s in results["small"]["sizes"]],
              "median time per echo (ms), log", "small arrays, taking turns")
        panel += 1
    if many:
        layouts = list(results["many"]["layouts"])
        _bars(axes[0][panel], many, lambda per, k: per[k]["calls_per_s"], layouts,
              [f"{p} × {t}" if p > 1 else f"{t} threads"
               for p, t in results["many"]["layouts"].values()],
              "tiny calls per second (log)", "many callers, tiny calls")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


STYLES = {"dagen": ("C3", "o", 2.4), "grpc": ("C0", "s", 1.5), "flight": ("C2", "^", 1.5),
          "dask": ("C1", "D", 1.5)}


def _bars(ax: Any, data: dict[str, Any], value: Any, keys: list[str], labels: list[str],
          ylabel: str, title: str) -> None:
    """Grouped bars: a group per key (size, layout), a bar per system."""
    names = list(data)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        color = STYLES.get(name, ("C7",))[0]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(keys))]
        ax.bar(xs, [value(data[name], k) for k in keys], width, color=color,
               label=LABELS.get(name, name))
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(labels)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7)


def write_reports(results: dict[str, Any], stem: Path) -> list[Path]:
    results["bars"] = compute_bars(results)
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(results))
    paths = [json_path, md_path]
    png = plot(results, stem.with_suffix(".png"))
    if png:
        paths.append(png)
    return paths


DOCS_BEGIN = "<!-- bench-tables from {} (benchmarks/report.py --docs) -->"
DOCS_END = "<!-- /bench-tables -->"


def main(argv: list[str] | None = None) -> int:
    """Re-render a run's report from its .json, or print (or update) the tables that
    docs/performance.md quotes."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("result", type=Path, help="a run's benchmarks/results/<timestamp>.json")
    p.add_argument("--docs", action="store_true",
                   help="print the tables docs/performance.md quotes (small arrays, many "
                        "callers, issue 19's bars)")
    p.add_argument("--update-docs", type=Path, metavar="PAGE",
                   help="replace the tables between the bench-tables markers of PAGE "
                        "(docs/performance.md), and the run it names there, wherever PAGE "
                        "names it")
    p.add_argument("--rewrite", action="store_true",
                   help="write the run's .md and .png again from its .json")
    args = p.parse_args(argv)
    results = json.loads(args.result.read_text())
    results["bars"] = compute_bars(results)
    if args.rewrite:
        results.pop("bars")
        for path in write_reports(results, args.result.with_suffix("")):
            print(f"wrote {path}")
    tables = docs_tables(results)
    if args.docs:
        print(tables, end="")
    if args.update_docs:
        page = args.update_docs.read_text()
        pattern = re.compile(re.escape(DOCS_BEGIN).replace(r"\{\}", r"[^ ]+") + r"\n.*?"
                             + re.escape(DOCS_END), re.S)
        block = f"{DOCS_BEGIN.format(results['timestamp'])}\n\n{tables}\n{DOCS_END}"
        found = pattern.search(page)
        if not found:
            sys.exit(f"{args.update_docs}: no {DOCS_END} block to replace")
        quoted = re.search(r"bench-tables from (\S+) ", found.group(0))
        if quoted:  # the page's other mentions of the run (its .md, the commands), first:
            # the new tables may name the old run (the peak-RSS bar's earlier run)
            page = page.replace(quoted.group(1), results["timestamp"])
        page = pattern.sub(lambda _: block, page, count=1)
        args.update_docs.write_text(page)
        print(f"updated {args.update_docs} from run {results['timestamp']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
