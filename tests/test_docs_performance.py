"""docs/performance.md quotes one run of `make bench` (issue 4): the results file it
names exists, beside the command that reproduces it, and every ratio of its bars table,
and the echo throughputs, are what benchmarks/report.py computes from that run's JSON."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from report import compute_bars  # noqa: E402

MiB = 1 << 20
SECTION = (ROOT / "docs" / "performance.md").read_text()


@pytest.fixture(scope="module")
def run():
    [stamp] = set(re.findall(r"benchmarks/results/(\d{8}-\d{6})\.md", SECTION))
    # ... with the command that reproduces it (the must-show), beside its name
    assert re.search(rf"{stamp}\.md`, reproduced with\s+`\.venv/bin/python benchmarks/run\.py`",
                     SECTION)
    path = ROOT / "benchmarks" / "results" / f"{stamp}.json"
    assert path.with_suffix(".md").exists() and path.exists()
    results = json.loads(path.read_text())
    return results, compute_bars(results)


def table(header: str) -> list[list[str]]:
    """The rows (as lists of cells) of the page's table whose header row starts so."""
    lines = SECTION.splitlines()
    [start] = [i for i, ln in enumerate(lines) if ln.startswith(f"| {header}")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def row(header: str, label: str) -> list[str]:
    """The cells of the row whose first cell starts with ``label``."""
    [found] = [r for r in table(header) if r[0].startswith(label)]
    return found


def test_the_bars_quoted_are_the_runs(run):
    _, bars = run
    quoted = {
        "1 GiB throughput / the best other": bars["throughput_vs_best_other"]["value"],
        "(information) the same / the best `-reusing`": bars["throughput_vs_best_reusing"]["value"],
        "1 GiB throughput / raw grpcio": bars["throughput_vs_raw_grpc"]["value"],
        "(stricter) server": bars["memory_server"]["strict_value"],
        "tiny call p50 / raw grpcio": bars["tiny_p50_vs_raw_grpc"]["value"],
        "(information) the same right after": bars["tiny_p50_after_echo_vs_raw_grpc"]["value"],
        "linearity": bars["linearity"]["value"],
    }
    for label, value in quoted.items():
        assert row("bar", label)[1] == f"{value:.2f}", label
    memory = f"{bars['memory_client']['value']:.2f} / {bars['memory_server']['value']:.2f}"
    assert row("bar", "extra peak RSS")[1] == memory
    for label, key in (("1 GiB throughput / the best other", "throughput_vs_best_other"),
                       ("tiny call p50 / raw grpcio", "tiny_p50_vs_raw_grpc")):
        assert row("bar", label)[3].startswith("yes" if bars[key]["met"] else "**no**"), label


def test_the_echo_throughputs_quoted_are_the_runs(run):
    results, _ = run
    for label, name in (("dagen", "dagen"), ("raw grpcio", "grpc"), ("Arrow Flight", "flight")):
        echo = results["systems"][name]["echo"]
        measured = [round(echo[size]["throughput_Bps"] / MiB) for size in sorted(echo, key=int)]
        assert [int(cell) for cell in row("echo throughput", label)[1:5]] == measured, label
