"""``figway runs watch``'s picture of a run: the live feed's messages folded into the run."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from gateway.cli.run_watch import WatchedRun, render


def snapshot() -> dict[str, Any]:
    def node(level: int, status: str = "pending", max_attempts: int = 1) -> dict[str, Any]:
        return {"status": status, "attempts": 0, "max_attempts": max_attempts, "level": level}

    return {
        "job_run_id": "r1",
        "workflow_id": "etl",
        "backend": "rq",
        "status": "queued",
        "error": None,
        "nodes": {"a": node(0), "b": node(0, max_attempts=3), "c": node(1)},
    }


def message(node_id: str | None, status: str, attempt: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "type": "run" if node_id is None else "node",
        "node_id": node_id,
        "status": status,
        "attempt": attempt,
        "error": None,
        **extra,
    }


def test_transitions_are_folded_in_and_described_once() -> None:
    run = WatchedRun.from_snapshot(snapshot())
    assert run.apply(message("a", "running")) == "node a running"
    assert run.apply(message("a", "running")) is None  # sent again around a snapshot
    assert run.apply(message("b", "retrying", 1, error="boom")) == (
        "node b retrying (attempt 1/3): boom"
    )
    assert run.apply(message("b", "running", 2)) == "node b running (attempt 2/3)"
    assert run.apply(message(None, "running")) == "run r1 running"
    assert run.nodes["b"].attempt == 2
    assert not run.ended
    assert (
        run.apply(message(None, "failed", error="node c failed")) == "run r1 failed: node c failed"
    )
    assert run.ended
    assert run.error == "node c failed"


def test_nodes_of_an_unknown_id_are_ignored() -> None:
    run = WatchedRun.from_snapshot(snapshot())
    assert run.apply(message("zz", "running")) is None
    assert set(run.nodes) == {"a", "b", "c"}


def test_the_picture_has_one_bar_per_level_counting_ended_nodes() -> None:
    run = WatchedRun.from_snapshot(snapshot())
    run.apply(message("a", "succeeded"))
    run.apply(message("b", "failed"))
    console = Console(width=120, record=True, color_system=None)
    console.print(render(run))
    text = console.export_text()
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2, text
    assert rows[0].split()[:1] + rows[1].split()[:1] == ["0", "1"]
    assert "2/2" in rows[0]
    assert "a:succeeded" in rows[0]
    assert "0/1" in rows[1]
    assert "c:pending" in rows[1]
    assert "etl run r1 on rq: queued" in text
