"""The console's panel and charts without a gateway: what each key sees, that every
user-named thing is escaped, and that the charts carry the figures they draw."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from backends.store.api_keys import SCOPES
from backends.store.routing_records import RecentRun
from gateway.reports.comparison import Thresholds, build_report
from gateway.reports.overview import build_status
from gateway.web.console.charts import ecdf_chart, failure_chart
from gateway.web.console.panel import Migration, Panel, render_panel

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script>'


def rules_json(**rule: Any) -> dict[str, Any]:
    return {
        "version": "abc123",
        "phase": 2,
        "default": "rq",
        "source": "routing_rules.yaml",
        "applied_at": NOW.isoformat(),
        "backends": {"rq": True, "prefect": True},
        "rules": [{"id": "r1", "match": {"workflow_id": HOSTILE}, "backend": "prefect", **rule}],
        "tripped_guards": [],
        "rollouts": [],
        "refused": None,
    }


def migration(**rule: Any) -> Migration:
    comparison = build_report([], [], since=NOW, until=NOW, thresholds=Thresholds())
    view = build_status(
        gateway="",
        rules=rules_json(**rule),
        guards=[],
        comparison=comparison.model_dump(mode="json"),
        in_flight={"prefect": {"queued": 2}},
        versions=[],
        rollout_events=[],
        trips=[],
    )
    return Migration(
        view=view,
        rollouts=[],
        comparison=comparison,
        samples={},
        shadows={HOSTILE: {"compared": 1, "mismatched": 1}},
        mismatches=[
            {
                "job_run_id": HOSTILE,
                "shadow_run_id": "s",
                "workflow_id": "w",
                "shadow_backend": "prefect",
                "mismatches": [{"node": HOSTILE, "field": "status", "primary": 1, "shadow": 2}],
            }
        ],
    )


RUN = RecentRun(HOSTILE, "w", "rq", "succeeded", NOW, NOW, None)


def test_everything_a_user_named_is_escaped() -> None:
    html = render_panel(Panel(frozenset(SCOPES), migration(percent=10), [RUN]))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert 'href="/console/runs/%3Cscript%3Ealert%28%22x%22%29%3C%2Fscript%3E"' in html


def test_with_every_scope_the_buttons_are_drawn_and_shares_are_shown() -> None:
    html = render_panel(Panel(frozenset(SCOPES), migration(percent=10), [RUN]))
    assert 'data-path="/routing/reload"' in html
    assert 'data-backend="prefect" data-percent="10"' in html
    assert 'data-backend="rq" data-percent="90"' in html
    assert "withheld" not in html


def test_a_runs_key_sees_runs_and_no_migration_and_no_button() -> None:
    html = render_panel(Panel(frozenset({"runs"}), None, [RUN]))
    assert "lacks the admin scope" in html
    assert "<button" not in html
    assert 'id="runs"' in html


def test_an_admin_only_key_sees_the_migration_but_not_the_runs() -> None:
    html = render_panel(Panel(frozenset({"admin"}), migration(), None))
    assert "lacks the runs scope" in html
    assert 'id="rules"' in html
    assert 'data-path="/routing/reload"' in html


def test_the_ecdf_steps_through_every_value() -> None:
    svg = ecdf_chart("execution time", {"rq": [3.0, 1.0, 2.0], "prefect": [4.0]})
    assert 'data-backend="rq" data-count="3" data-p50="2.000" data-p95="3.000"' in svg
    assert 'data-backend="prefect" data-count="1" data-p50="4.000"' in svg
    # rq's line ends at its last value at 100% and goes on flat to the axis' end.
    assert svg.count("<polyline") == 2


def test_the_failure_chart_carries_rates_and_intervals() -> None:
    svg = failure_chart({"rq": (0, 10), "prefect": (5, 10), "other": (0, 0)})
    assert 'data-failed="5" data-runs="10" data-rate="0.500000"' in svg
    assert 'data-low="0.236593" data-high="0.763407"' in svg
    assert "no finished runs" in svg
