"""The ETL benchmark's results: one row per system and row count, and the memory target."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.etl_runs import NODES, Sample
from bench.report import markdown_table, run_header, spread

__all__ = [
    "MEMORY_TARGET_BYTES",
    "SYSTEMS",
    "megabytes",
    "memory_verdicts",
    "render_markdown",
    "summarise",
]

#: The issue's target: no worker process holds more than this, whatever the row count.
MEMORY_TARGET_BYTES = 300 * 10**6
#: The order rows are shown in: figway's backends, then the references.
SYSTEMS = ("rq", "prefect", "native", "copy")


def megabytes(kb: int | None) -> float:
    """KiB (what /proc and psutil give) as MB of 10**6 bytes, the target's unit."""
    return (kb or 0) * 1024 / 10**6


def summarise(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """One row per system and row count: medians, ranges, and the memory peaks."""
    order = {name: index for index, name in enumerate(SYSTEMS)}
    groups: dict[tuple[str, int], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.system, sample.rows), []).append(sample)
    rows = []
    for (system, count), group in sorted(groups.items(), key=lambda g: (g[0][1], order[g[0][0]])):
        row: dict[str, Any] = {
            "system": system,
            "rows": count,
            "samples": len(group),
            "wall_s": [s.wall_s for s in group],
            "rows_per_second": [s.rows_per_second for s in group],
            "steps_s": {step: [s.steps_s[step] for s in group] for step in group[0].steps_s},
            "start_delay_s": [s.start_delay_s for s in group if s.start_delay_s is not None],
        }
        peaks = [s for s in group if s.peak_kb is not None]
        if peaks:
            top = max(peaks, key=lambda s: s.peak_kb or 0)
            row["peak_mb"] = [megabytes(s.peak_kb) for s in peaks]
            row["peak_role"] = top.peak_role
            row["peak_anon_mb"] = megabytes(top.peak_anon_kb) if top.peak_anon_kb else None
            row["tree_sum_mb"] = [megabytes(s.tree_sum_kb) for s in peaks]
            row["hwm_mb"] = max(megabytes(s.hwm_kb) for s in peaks)
            row["worker_idle_mb"] = [megabytes(s.worker_idle_kb) for s in peaks if s.worker_idle_kb]
            row["node_peak_mb"] = {node: _node_peak(peaks, node) for node in top.node_peaks}
        rows.append(row)
    return rows


def _node_peak(samples: Sequence[Sample], node: str) -> dict[str, float]:
    """The most the process running ``node`` held in any sample, and what it held at the start."""
    top = max(samples, key=lambda s: s.node_peaks[node]["largest_kb"]).node_peaks[node]
    return {"peak": megabytes(top["largest_kb"]), "start": megabytes(top["start_kb"])}


def memory_verdicts(samples: Sequence[Sample], backends: Sequence[str]) -> list[dict[str, Any]]:
    """Per backend: the largest single worker process of any run, against the target."""
    verdicts = []
    for backend in backends:
        runs = [s for s in samples if s.system == backend]
        if not runs:
            continue
        by_rows = {
            rows: max(megabytes(s.peak_kb) for s in runs if s.rows == rows)
            for rows in sorted({s.rows for s in runs})
        }
        top = max(runs, key=lambda s: s.peak_kb or 0)
        verdicts.append(
            {
                "backend": backend,
                "peak_mb": megabytes(top.peak_kb),
                "role": top.peak_role,
                "rows": top.rows,
                "peak_mb_by_rows": by_rows,
                "met": (top.peak_kb or 0) * 1024 <= MEMORY_TARGET_BYTES,
            }
        )
    return verdicts


def render_markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    packages = ", ".join(f"{name} {ver}" for name, ver in env["packages"].items())
    parts = [
        run_header(results, packages),
        "### Throughput (median (min-max) of the repeats; wall = just before the POST to the "
        "run's finished_at)",
    ]
    table = []
    for row in results["summary"]:
        steps = row["steps_s"]
        table.append(
            [
                row["system"],
                f"{row['rows']:,}",
                spread(row["wall_s"], 2),
                spread(row["rows_per_second"], 0),
                *(spread(steps[node], 2) if node in steps else "" for node in NODES),
                spread(row["start_delay_s"], 2) if row["start_delay_s"] else "",
            ]
        )
    header = ["system", "rows", "wall s", "rows/s", "extract s", "transform s", "load s"]
    parts.append(markdown_table([*header, "POST to first node s"], table))
    parts.append(
        "### Peak memory (MB = 10^6 bytes; RSS of every process of the worker's tree, "
        "sampled every 20 ms; largest process: median (min-max) of the repeats)"
    )
    table = []
    for row in results["summary"]:
        if "peak_mb" not in row:
            continue
        nodes = row.get("node_peak_mb", {})
        table.append(
            [
                row["system"],
                f"{row['rows']:,}",
                spread(row["peak_mb"], 0),
                row["peak_role"],
                f"{row['peak_anon_mb']:.0f}" if row["peak_anon_mb"] else "",
                f"{max(row['tree_sum_mb']):.0f}",
                f"{row['hwm_mb']:.0f}",
                spread(row["worker_idle_mb"], 0) if row["worker_idle_mb"] else "",
                *(
                    f"{nodes[node]['peak']:.0f} ({nodes[node]['start']:.0f})" if nodes else ""
                    for node in NODES
                ),
            ]
        )
    header = ["system", "rows", "largest process MB", "which", "its heap MB", "tree sum MB, max"]
    header += ["VmHWM MB, max", "idle worker MB"]
    header += [f"{node}: max MB (at its start)" for node in NODES]
    parts.append(markdown_table(header, table))
    lines = [f"### Target: peak worker memory under {MEMORY_TARGET_BYTES // 10**6} MB"]
    for verdict in results["memory_target"]:
        growth = ", ".join(
            f"{int(rows):,} rows {mb:.0f} MB" for rows, mb in verdict["peak_mb_by_rows"].items()
        )
        lines.append(
            f"- {verdict['backend']}: {verdict['peak_mb']:.0f} MB at most ({verdict['role']}, "
            f"{verdict['rows']:,} rows): {'met' if verdict['met'] else 'MISSED'} ({growth})"
        )
    parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
