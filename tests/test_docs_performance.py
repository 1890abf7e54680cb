"""docs/performance.md quotes one run of `make bench` (issues 4 and 19): the results file
it names exists, beside the command that reproduces it, and its tables are exactly what
benchmarks/report.py prints for that run's JSON (`report.py RUN.json --docs`); the
command that puts another run's tables there does so."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from report import DOCS_END, docs_tables  # noqa: E402
from report import main as report_main  # noqa: E402

PAGE = ROOT / "docs" / "performance.md"
SECTION = PAGE.read_text()
BLOCK = re.compile(r"<!-- bench-tables from (\d{8}-\d{6}) \(benchmarks/report\.py --docs\) -->"
                   r"\n\n(.*?)\n" + re.escape(DOCS_END), re.S)


@pytest.fixture(scope="module")
def run():
    [(stamp, tables)] = BLOCK.findall(SECTION)
    # ... with the command that reproduces it (the must-show), beside its name
    assert re.search(rf"{stamp}\.md`, reproduced with\s+`\.venv/bin/python benchmarks/run\.py`",
                     SECTION)
    path = ROOT / "benchmarks" / "results" / f"{stamp}.json"
    assert path.with_suffix(".md").exists() and path.exists()
    return stamp, tables, json.loads(path.read_text())


def test_the_tables_quoted_are_the_runs(run):
    _, tables, results = run
    assert tables == docs_tables(results)
    for caption in ("Echo, each system measured in turn:", "The bars of issue 19",
                    "The bars of issue 4:"):
        assert caption in tables


def test_the_update_command_puts_another_runs_tables_in_place(run, tmp_path):
    stamp, tables, results = run
    page = tmp_path / "performance.md"
    shutil.copy(PAGE, page)
    assert report_main([str(ROOT / "benchmarks" / "results" / f"{stamp}.json"),
                        "--update-docs", str(page)]) == 0
    assert page.read_text() == SECTION  # the same run: nothing changes
    other = json.loads(json.dumps(results))
    other["timestamp"] = "20990101-000000"
    other["systems"]["dagen"]["echo"][str(results["config"]["sizes"][0])]["throughput_Bps"] = 2.0**40
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert report_main([str(tmp_path / "other.json"), "--update-docs", str(page)]) == 0
    [(new_stamp, new_tables)] = BLOCK.findall(page.read_text())
    assert new_stamp == "20990101-000000" and new_tables != tables
    assert "| dagen | 1048576 |" in new_tables  # 2**40 B/s in MiB/s, in the first column
    # and the page names the new run wherever it named the old one
    assert page.read_text().replace(new_tables, "") == SECTION.replace(tables, "").replace(
        stamp, "20990101-000000")
    assert "benchmarks/results/20990101-000000.md`, reproduced with" in page.read_text()
