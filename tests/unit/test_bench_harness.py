"""The benchmark harness's own logic: schedule, command line, and the scale part's plan reading."""

from __future__ import annotations

import pytest

from bench.harness import interleave, parse_args
from bench.prefect_path import PATH as PREFECT
from bench.rq_path import PATH as RQ
from bench.scale import _seq_scans


def test_interleave_rotates_which_system_goes_first() -> None:
    seen: list[tuple[str, str, int]] = []
    samples = interleave(
        lambda system, item, repeat: (system, item, repeat),
        systems=["figway", "native"],
        items=["chain", "layered"],
        repeats=2,
        progress=seen.append,
    )
    assert samples == seen
    assert samples == [
        ("figway", "chain", 1),
        ("native", "chain", 1),
        ("figway", "layered", 1),
        ("native", "layered", 1),
        ("native", "chain", 2),
        ("figway", "chain", 2),
        ("native", "layered", 2),
        ("figway", "layered", 2),
    ]


def test_quick_preset_fills_what_is_not_given_and_an_option_wins() -> None:
    args = parse_args(RQ, ["--quick", "--requests", "7"])
    assert (args.requests, args.warmup, args.repeats, args.sustain_seconds) == (7, 5, 1, 2.0)
    assert args.parts == ["submit", "e2e", "probe"]  # scale only when asked
    full = parse_args(PREFECT, [])
    assert (full.requests, full.warmup, full.repeats) == (300, 30, 5)
    assert full.redis_db == 13


@pytest.mark.parametrize(
    "argv", [["--parts", "probe"], ["--parts", ""], ["--requests", "0"], ["--warmup", "-1"]]
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(PREFECT, argv)
    assert "error" in capsys.readouterr().err


def test_seq_scans_of_large_tables_only() -> None:
    plan = {
        "Node Type": "Hash Join",
        "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "node_runs"},
            {
                "Node Type": "Hash",
                "Plans": [{"Node Type": "Seq Scan", "Relation Name": "workflows"}],
            },
            {"Node Type": "Index Scan", "Relation Name": "runs"},
        ],
    }
    assert _seq_scans(plan, {"node_runs": 5_000_000, "workflows": 3, "runs": 1_000_000}) == [
        "node_runs"
    ]
