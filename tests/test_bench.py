"""`make bench`'s harness runs to completion and writes its results (a smoke run:
benchmarks/run.py --quick with dagen and raw grpcio, real servers, ~10 s)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from conftest import ROOT


def test_the_benchmark_runs_and_writes_json_table_and_plot(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--systems", "dagen,grpc",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = tmp_path.glob("*.json")
    results = json.loads(result.read_text())
    assert {n: r["status"] for n, r in results["systems"].items()} == {"dagen": "ok", "grpc": "ok"}
    for name in ("dagen", "grpc"):
        echoes = results["systems"][name]["echo"].values()
        assert echoes and all(e["throughput_Bps"] > 0 for e in echoes)
        assert results["paired"]["systems"][name]["tiny_p50_us"] > 0
        tiny = results["tiny_rounds"]["systems"][name]
        assert tiny["calls"] == 200 and len(tiny["launch_p50_us"]) == 1 and tiny["p50_us"] > 0
        small = results["small"]["systems"][name]  # 8 KiB and 1 MiB, taking turns
        assert {int(k) for k in small} == {8 << 10, 1 << 20}
        assert all(e["calls"] == 20 and e["median_s"] > 0 for e in small.values())
        many = results["many"]["systems"][name]  # 50 threads; 4 processes x 12 threads
        assert many["threads"]["threads"] == 50 and many["processes"]["processes"] == 4
        for layout in many.values():  # every caller made calls, each one's sum checked
            assert layout["calls"] >= layout["processes"] * layout["threads"]
            assert layout["calls_per_s"] > 0 and layout["p99_us"] >= layout["p50_us"] > 0
    assert results["many"]["server_threads"] == 72  # the same for dagen and raw grpcio
    relay = results["relay"]  # dagen through `dagen relay` beside the direct connection
    if "skipped" not in relay:  # (without asyncssh)
        assert set(relay["systems"]) == {"dagen", "dagen-relay"}
        assert relay["throughput_ratio"] > 0 and relay["tiny_p50_ratio"] > 0
    table = result.with_suffix(".md").read_text()
    assert "## The bars (issue 4)" in table and "| dagen |" in table
    assert "## Small arrays" in table and "## Many callers" in table
    bars19 = results["bars"]["issue19"]
    for key in ("echo_8k_median_vs_flight", "echo_1m_throughput_vs_flight"):
        assert bars19[key]["value"] is None  # no Flight in this run: said, not invented
    assert bars19["many_threads_vs_raw_grpc"]["value"] > 0
    assert "| many callers, 50 threads, calls/s: dagen / raw grpcio |" in table
    assert "## Through the relay" in table
    assert "tiny-call ratio from tiny rounds (1 launch)" in table
    if importlib.util.find_spec("matplotlib") is not None:  # the plot needs `.[bench]`
        assert result.with_suffix(".png").stat().st_size > 0


def test_the_transport_ideas_script_echoes_every_layout_it_compares():
    """benchmarks/transport_ideas.py (parallel streams, read-ahead, channel options):
    every variant's echo is compared with what was sent, inside the script."""
    variants = "one,two-streams,two-connections,read-ahead,max-frame"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "transport_ideas.py"), "--size", "8MiB",
         "--rounds", "1", "--variants", variants],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == variants.split(",")


def test_a_run_with_a_failure_says_so_in_its_exit_status():
    """run.py exits 1 after writing its results when anything failed; a package that is
    missing, or a size skipped for time or memory, is not a failure."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import failures

    fine = {"systems": {
        "dagen": {"status": "ok", "echo": {"1048576": {"throughput_Bps": 1.0},
                                           "3221225472": {"skipped": "needs 28 GiB"}}},
        "flight": {"status": "skipped", "reason": "pyarrow is not installed"},
    }, "paired": {"systems": {}}}
    assert failures(fine) == []
    broken = {"systems": {
        "dagen": {"status": "ok", "echo": {"1048576": {"error": "AssertionError: differs"}}},
        "grpc": {"status": "failed", "reason": "failed to start: RuntimeError: port"},
    }, "tiny_rounds": {"error": "RuntimeError: gone"}}
    assert failures(broken) == ["dagen 1 MiB echo: AssertionError: differs",
                                "grpc: failed to start: RuntimeError: port",
                                "tiny_rounds: RuntimeError: gone"]


def test_a_stage_that_fails_midway_keeps_no_partial_results_and_is_named():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import failures, run_stage

    def measure(systems):
        systems["dagen"] = {"p50_us": 1.0}  # measured one, then the next failed
        raise RuntimeError("its server exited")

    record = {"launches": 1}
    run_stage("tiny rounds", record, measure)
    assert record == {"launches": 1, "systems": {}, "error": "RuntimeError: its server exited"}
    assert failures({"systems": {}, "tiny_rounds": record}) == [
        "tiny_rounds: RuntimeError: its server exited"]


def test_the_bulk_side_path_prototype_echoes_beside_dagen(tmp_path):
    """benchmarks/bulk_side_path.py: the side path (a second mutual-TLS connection
    carrying only the bytes) and dagen take turns; every echo is compared with what was
    sent, inside the script; the numbers are written as .md and .json."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bulk_side_path.py"), "--sizes", "8MiB",
         "--rounds", "2", "--systems", "side-path,dagen", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result] = tmp_path.glob("bulk-side-path-*.json")
    rows = json.loads(result.read_text())["sizes"]["8 MiB"]["systems"]
    assert set(rows) == {"side-path", "dagen"}
    assert all(len(r["times_s"]) == 2 and r["throughput_Bps"] > 0 for r in rows.values())
    assert "| side-path |" in result.with_suffix(".md").read_text()


def test_the_peak_rss_bar_compares_with_the_run_it_names():
    """Issue 19's no-regression bar: dagen's extra peak RSS during the reference echo
    over that of an earlier run (by default the newest one committed), named."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import compute_bars, issue19_rows
    from run import rss_baseline

    results_dir = ROOT / "benchmarks" / "results"
    results = json.loads((results_dir / "20261128-042511.json").read_text())
    size = results["config"]["memory_size"]
    results["rss_baseline"] = rss_baseline(str(results_dir / "20261128-041636.json"), size)
    earlier = json.loads((results_dir / "20261128-041636.json").read_text())
    mine, theirs = (r["systems"]["dagen"]["echo"][str(size)]["memory"] for r in (results, earlier))
    bars = compute_bars(results)["issue19"]
    for side in ("client", "server"):
        bar = bars[f"rss_{side}_vs_baseline"]
        assert bar["value"] == mine[f"{side}_extra"] / theirs[f"{side}_extra"]
        assert bar["met"] == (bar["value"] <= 1.05) and bar["baseline"] == "20261128-041636.json"
    results["bars"] = compute_bars(results)
    assert any("this run / 20261128-041636.json" in row for row in issue19_rows(results))
    # a run without that echo: no ratio, and the bar says why
    results["rss_baseline"] = rss_baseline(str(results_dir / "20261128-041636.json"), 64 << 20)
    results["bars"] = compute_bars(results)
    assert results["bars"]["issue19"]["rss_client_vs_baseline"]["value"] is None
    assert any("no peak RSS of dagen's 64 MiB echo there" in row for row in issue19_rows(results))
