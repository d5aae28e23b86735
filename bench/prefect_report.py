"""The Prefect path's own report tables, with the RQ path's results beside them, and its targets.

The report's header, submit latency table and targets heading are the
harness's (:meth:`bench.harness.BenchPath.render`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import markdown_table, verdict

__all__ = ["PER_NODE_TARGET", "find_rq_results", "rq_reference", "sections", "target_lines"]

#: figway's in-flow time on Prefect may be at most this many times native Prefect's.
PER_NODE_TARGET = 1.2


def find_rq_results(folder: Path) -> Path | None:
    """The newest full ``rq_path`` results in ``folder``, else the newest quick ones."""
    # The harness names them rq_path-<start>.json and rq_path-quick-<start>.json.
    quick = sorted(folder.glob("rq_path-quick-*.json"))
    full = sorted(set(folder.glob("rq_path-*.json")) - set(quick))
    found = full or quick
    return found[-1] if found else None


def rq_reference(path: Path, sizes: dict[str, int]) -> dict[str, Any]:
    """The figures of an ``rq_path`` run that the side-by-side table shows.

    ``sizes`` maps each DAG to its number of nodes, for the per-node difference.
    """
    data = json.loads(path.read_text())
    latency = {item["name"]: item["summary"]["p50"] for item in data.get("submit_latency", [])}
    rows = []
    for row in data.get("end_to_end", {}).get("summary", []):
        figway, native = row["figway"]["median_s"], row["native"]["median_s"]
        nodes = sizes.get(row["dag"])
        rows.append(
            {
                "mode": row["mode"],
                "dag": row["dag"],
                "figway_s": figway,
                "native_s": native,
                "ratio": row["ratio"],
                "per_node_ms": (figway - native) * 1_000 / nodes if nodes else None,
            }
        )
    return {
        "path": str(path),
        "started_at": data.get("started_at"),
        "quick": data.get("settings", {}).get("quick"),
        "submit_p50_ms": {
            "figway": latency.get("figway_http"),
            "baseline": latency.get("baseline"),
        },
        "end_to_end": rows,
    }


def _range(figures: dict[str, float], digits: int = 2) -> str:
    return (
        f"{figures['median']:.{digits}f} ({figures['min']:.{digits}f}-{figures['max']:.{digits}f})"
    )


def _ms(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _end_to_end_tables(results: dict[str, Any]) -> list[str]:
    settings = results["settings"]
    e2e = results.get("end_to_end")
    if not e2e:
        return []
    parts = [
        f"### End to end on Prefect (1 worker, PREFECT_WORKER_QUERY_SECONDS="
        f"{settings['worker_query_seconds']:g}; runs of each DAG and system: {settings['repeats']}, "
        "figway and native alternating; median (min-max))"
    ]
    rows = []
    for row in e2e["summary"]:
        for system in ("figway", "native"):
            fig = row[system]
            rows.append(
                [
                    f"{row['dag']}, {system}",
                    _range(fig["total_s"]),
                    _range(fig["pickup_s"]),
                    _range(fig["in_flow_s"]),
                    f"{fig['submit_ms']:.0f}",
                    _ms(fig["task_mean_ms"]),
                    _ms(fig["task_gap_mean_ms"]),
                    f"{_ms(fig['head_ms'], 0)} / {_ms(fig['tail_ms'], 0)}",
                ]
            )
    parts.append(
        markdown_table(
            [
                "DAG, system",
                "total s (submit -> flow run end)",
                "pick-up s (submit -> flow run start)",
                "in-flow s (start -> end)",
                "submit ms",
                "in-task ms (mean)",
                "release gap ms (mean)",
                "flow head / tail ms",
            ],
            rows,
        )
    )
    rows = []
    for row in e2e["summary"]:
        fig = row["figway"]
        rows.append(
            [
                row["dag"],
                f"{row['in_flow_ratio']:.2f}x",
                f"{row['per_node_overhead_ms']:+.1f}",
                f"{row['total_ratio']:.2f}x",
                f"{fig['run_done_s']:.2f}",
                f"{fig['run_server_s']:.2f}",
                f"{fig['node_mean_ms']:.1f}",
                f"{fig['flow_tail_s']:.2f}",
            ]
        )
    parts.append(
        "figway against native (medians). Per-node overhead = (figway in-flow - native "
        "in-flow) / nodes. figway's own records: its run's `finished_at` from just before the "
        "POST and from its `created_at`, the mean time of a node in figway's node runtime "
        "(`started_at` -> `finished_at`), and the flow run's end after the run's `finished_at`:"
    )
    parts.append(
        markdown_table(
            [
                "DAG",
                "in-flow figway/native",
                "per-node overhead ms",
                "total figway/native",
                "figway run done s (from POST)",
                "figway finished_at - created_at s",
                "figway node ms (mean)",
                "flow end after run finished s",
            ],
            rows,
        )
    )
    return parts


def _side_by_side(results: dict[str, Any]) -> list[str]:
    e2e = results.get("end_to_end")
    rq = results.get("rq_reference")
    prefect_rows = {row["dag"]: row for row in e2e["summary"]} if e2e else {}
    dags = list(prefect_rows) or [row["dag"] for row in (rq or {}).get("end_to_end", [])]
    if not dags:
        return []
    parts = ["### RQ and Prefect side by side"]
    if rq:
        kind = "a quick run" if rq.get("quick") else "a full run"
        parts.append(
            f"RQ figures from {kind} of `python -m bench.rq_path` started {rq['started_at']} "
            f"(`{Path(rq['path']).name}`), not from this run: compare shapes, not decimals. "
            "RQ has no pick-up delay or flow run: its columns are end to end "
            "(submission -> last node finished)."
        )
    else:
        parts.append("No `rq_path` results found in the results folder: Prefect only.")

    def cell(figway: float, native: float, ratio: float, per_node: float | None) -> str:
        extra = f"; {per_node:+.1f} ms/node" if per_node is not None else ""
        return f"{figway:.3f} / {native:.3f} s = {ratio:.2f}x{extra}"

    header = ["path", "submit p50 figway / baseline"] + [f"{dag}: figway / native" for dag in dags]
    rows = []
    if rq:
        p50 = rq["submit_p50_ms"]
        submit = (
            f"{p50['figway']:.2f} / {p50['baseline']:.2f} ms = {p50['figway'] / p50['baseline']:.2f}x"
            if p50["figway"] and p50["baseline"]
            else "n/a"
        )
        for mode in dict.fromkeys(row["mode"] for row in rq["end_to_end"]):
            by_dag = {row["dag"]: row for row in rq["end_to_end"] if row["mode"] == mode}
            worker = "forking `Worker`" if mode == "fork" else "`SimpleWorker`"
            rows.append(
                [f"RQ, {worker}, end to end", submit]
                + [
                    cell(r["figway_s"], r["native_s"], r["ratio"], r["per_node_ms"])
                    if (r := by_dag.get(dag))
                    else "n/a"
                    for dag in dags
                ]
            )
    latency = {item["name"]: item["summary"]["p50"] for item in results.get("submit_latency", [])}
    submit = (
        f"{latency['figway_http']:.2f} / {latency['baseline']:.2f} ms = "
        f"{latency['figway_http'] / latency['baseline']:.2f}x"
        if "figway_http" in latency and "baseline" in latency
        else "n/a"
    )
    if prefect_rows:
        rows.append(
            ["Prefect, in-flow", submit]
            + [
                cell(
                    r["figway"]["in_flow_s"]["median"],
                    r["native"]["in_flow_s"]["median"],
                    r["in_flow_ratio"],
                    r["per_node_overhead_ms"],
                )
                for r in (prefect_rows[dag] for dag in dags)
            ]
        )
        rows.append(
            ["Prefect, total (with pick-up)", submit]
            + [
                cell(
                    r["figway"]["total_s"]["median"],
                    r["native"]["total_s"]["median"],
                    r["total_ratio"],
                    None,
                )
                for r in (prefect_rows[dag] for dag in dags)
            ]
        )
    parts.append(markdown_table(header, rows))
    return parts


def sections(results: dict[str, Any]) -> list[str]:
    """End to end on Prefect, then RQ and Prefect side by side."""
    return [*_end_to_end_tables(results), *_side_by_side(results)]


def target_lines(targets: dict[str, Any]) -> list[str]:
    lines = []
    for item in targets.get("in_flow", []):
        lines.append(
            f"- per-node overhead on Prefect, {item['dag']}: in-flow figway / native "
            f"{verdict(item['ratio'], PER_NODE_TARGET)}, "
            f"{item['per_node_overhead_ms']:+.1f} ms per node"
        )
    return lines
