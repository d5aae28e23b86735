"""The routing benchmark runs end to end on a few rules: every case is reported, nothing timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import routing

CASES = [
    f"{workload}_{path}"
    for workload in ("realistic", "globs_scope_misses", "globs_worst")
    for path in ("warm", "cold", "naive")
] + ["timer_floor"]


def test_quick_run_reports_every_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    figures = tmp_path / "routing.json"
    argv = ["--quick", "--rules", "30", "--samples", "300", "--slow-samples", "40"]

    assert routing.main([*argv, "--json", str(figures)]) == 0

    results = json.loads(figures.read_text())
    assert [case["name"] for case in results["cases"]] == CASES
    for case in results["cases"]:
        assert case["summary_us"]["count"] >= 40
        assert case["target"] in ("met", "MISSED")
    assert set(results["workloads"]) == {"realistic", "globs_scope_misses", "globs_worst"}
    # The reference decides as the router does, so its figures compare like with like.
    assert all(check["naive_disagrees"] == 0 for check in results["checks"].values())
    output = capsys.readouterr().out
    for case in results["cases"]:
        assert case["label"] in output
    assert "### One routing decision (30 rules; microseconds per call)" in output
    assert "### Target: p99 under 50 µs with 1,000 rules (this run has 30)" in output
    assert results["markdown"] in output


def test_the_worst_case_falls_through_and_the_realistic_mix_does_not_only() -> None:
    args = routing.parse_args(["--quick", "--rules", "30"])
    bench = routing.Bench(args, progress=lambda message: None)

    assert bench.checks["globs_worst"]["routed_by"] == {"fell through to the default": 64}
    assert bench.checks["globs_scope_misses"]["routed_by"] == {"fell through to the default": 64}
    realistic = bench.checks["realistic"]["routed_by"]
    assert realistic.get("routed by an exact-id rule", 0) > 0
    assert realistic.get("fell through to the default", 0) > 0
