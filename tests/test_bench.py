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
    relay = results["relay"]  # dagen through `dagen relay` beside the direct connection
    if "skipped" not in relay:  # (without asyncssh)
        assert set(relay["systems"]) == {"dagen", "dagen-relay"}
        assert relay["throughput_ratio"] > 0 and relay["tiny_p50_ratio"] > 0
    table = result.with_suffix(".md").read_text()
    assert "## The bars (issue 4)" in table and "| dagen |" in table
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
