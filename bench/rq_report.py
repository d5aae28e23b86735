"""The RQ path's own report tables: sustained rate, end to end, probes, and its targets.

The report's header, submit latency table and targets heading are the
harness's (:meth:`bench.harness.BenchPath.render`).
"""

from __future__ import annotations

from typing import Any

from bench.report import markdown_table, verdict

__all__ = [
    "END_TO_END_TARGET",
    "SCALE_TARGET",
    "SUBMIT_TARGET",
    "SUSTAINED_TARGET",
    "sections",
    "target_lines",
]

#: figway's submit p50 may be at most this many times its baseline's.
SUBMIT_TARGET = 2.0
#: figway's end-to-end time may be at most this many times native RQ's.
END_TO_END_TARGET = 1.2
#: figway's figures with many finished runs stored may be at most this many times the empty
#: database's.
SCALE_TARGET = 1.2
#: figway's sustained submissions per second over the baseline's, at least.
SUSTAINED_TARGET = 0.6


def _probe_tables(results: dict[str, Any]) -> list[str]:
    probes = results.get("probes", {})
    parts: list[str] = []
    if "pg_connect_ms" in probes:
        pg = probes["pg_connect_ms"]
        parts.append(
            f"PostgreSQL connection setup (psycopg connect + close, {pg['count']} times): "
            f"p50 {pg['p50']:.2f} ms, p99 {pg['p99']:.2f} ms."
        )
    runtime = probes.get("node_runtime")
    if not runtime:
        return parts
    parts.append("### Node runtime probe (figway's NodeRuntime on noop nodes, no RQ)")
    rows = [
        [f"in-process, warm: {dag}", f"{d['node_ms']['p50']:.2f}", f"{d['node_ms']['mean']:.2f}"]
        for dag, d in runtime["in_process"].items()
    ]
    labelled = (
        ("statement_by_statement", "in-process, warm, each transition as separate statements"),
        ("new_connection_per_node", "in-process, new connection per node"),
        ("forked_relayed", "forked child per node, recording through this process (relay)"),
    )
    for key, label in labelled:
        for dag, d in runtime.get(key, {}).items():
            rows.append([f"{label}: {dag}", f"{d['p50']:.2f}", f"{d['mean']:.2f}"])
    for dag, d in runtime["forked"].items():
        rows.append(
            [
                f"forked child per node, its own connection: {dag}",
                f"{d['node_ms']['p50']:.2f}",
                f"{d['node_ms']['mean']:.2f}",
            ]
        )
        rows.append(
            [
                "empty fork + exit (reference)",
                f"{d['empty_fork_ms']['p50']:.2f}",
                f"{d['empty_fork_ms']['mean']:.2f}",
            ]
        )
    parts.append(markdown_table(["per node", "p50 ms", "mean ms"], rows))
    if runtime.get("probe_process_rss_kb"):
        parts.append(
            f"(The probe forks the benchmark process, {runtime['probe_process_rss_kb'] / 1024:.0f} MiB resident.)"
        )
    dags = list(runtime["in_process"])
    keys = sorted({k for d in runtime["in_process"].values() for k in d["phases_ms_per_node"]})
    parts.append("Store calls of one warm in-process node (mean ms per node), and its SQL:")
    rows = []
    for key in keys:
        rows.append(
            [
                key,
                *(
                    f"{runtime['in_process'][d]['phases_ms_per_node'].get(key, 0.0):.2f}"
                    for d in dags
                ),
            ]
        )
    for unit in ("statements", "commits"):
        rows.append(
            [
                f"SQL {unit} per node",
                *(f"{runtime['in_process'][d]['database_work_per_node'][unit]:.1f}" for d in dags),
            ]
        )
    parts.append(markdown_table(["call", *dags], rows))
    return parts


def sections(results: dict[str, Any]) -> list[str]:
    """Sustained rate, end to end and the probes, where the run measured them."""
    parts: list[str] = []
    settings = results["settings"]
    sustained = results.get("sustained")
    if sustained:
        parts.append("### Sustained submissions (concurrent clients, each with its own connection)")
        rows = [
            [
                item["label"],
                str(item["clients"]),
                f"{item['seconds']:.1f}",
                str(item["submissions"]),
                f"{item['per_second']:.1f}",
                f"{item['latency']['p50']:.2f}",
                f"{item['latency']['p99']:.2f}",
            ]
            for item in sustained
        ]
        parts.append(
            markdown_table(
                [
                    "submitter",
                    "clients",
                    "seconds",
                    "submissions",
                    "per second",
                    "p50 ms",
                    "p99 ms",
                ],
                rows,
            )
        )

    e2e = results.get("end_to_end")
    if e2e:
        parts.append(
            f"### End to end ({settings['workers']} workers per mode, {settings['repeats']} runs "
            "each, figway and native alternating; median (min-max) seconds)"
        )
        rows = []
        for row in e2e["summary"]:
            fig, nat = row["figway"], row["native"]
            rows.append(
                [
                    row["mode"],
                    row["dag"],
                    f"{fig['median_s']:.3f} ({fig['min_s']:.3f}-{fig['max_s']:.3f})",
                    f"{nat['median_s']:.3f} ({nat['min_s']:.3f}-{nat['max_s']:.3f})",
                    f"{row['ratio']:.2f}x",
                    f"{fig['submit_median_ms']:.0f} / {nat['submit_median_ms']:.0f}",
                    f"{fig['in_job_mean_ms']:.1f} / {nat['in_job_mean_ms']:.1f}",
                    f"{fig['release_gap_mean_ms']:.1f} / {nat['release_gap_mean_ms']:.1f}",
                ]
            )
        parts.append(
            markdown_table(
                [
                    "workers",
                    "DAG",
                    "figway s",
                    "native RQ s",
                    "figway/native",
                    "submit ms figway / native",
                    "in-job ms figway / native",
                    "release gap ms figway / native",
                ],
                rows,
            )
        )
        rss = e2e.get("worker_rss_kb", {})
        if rss:
            parts.append(
                "Resident memory of the `figway worker rq` processes (forked for every job by the "
                "forking worker): "
                + "; ".join(
                    f"{mode}: {', '.join(f'{kb / 1024:.0f} MiB' for kb in values)}"
                    for mode, values in rss.items()
                )
                + "."
            )

    parts.extend(_probe_tables(results))
    parts.extend(scale_tables(results))
    return parts


def scale_tables(results: dict[str, Any]) -> list[str]:
    """Part (d): the figures empty and seeded, the seed, and the plans' sequential scans."""
    scale = results.get("scale")
    if not scale:
        return []
    seed = scale["seed"]
    empty, seeded = scale["empty"], scale["seeded"]
    parts = [
        f"### At scale: {seed['runs']:,} finished runs in the database against none",
        markdown_table(
            ["figure", "empty", f"{seed['runs']:,} runs", "ratio"],
            [
                [
                    label,
                    f"{empty[key]:.2f}",
                    f"{seeded[key]:.2f}",
                    f"{seeded[key] / empty[key]:.2f}x",
                ]
                for label, key in (
                    ("submission p50 ms (figway POST)", "submit_p50_ms"),
                    ("submission p50 ms (baseline)", "baseline_p50_ms"),
                    ("node in-job ms (chain of 20, forking workers)", "in_job_ms"),
                )
            ],
        ),
        f"Seeded server-side at {seed['runs_per_second']:,.0f} runs/s (insert "
        f"{seed['insert_seconds']:.0f} s, VACUUM ANALYZE {seed['vacuum_analyze_seconds']:.0f} s); "
        "rows per run: "
        + ", ".join(f"{table} {rows}" for table, rows in seed["rows_per_run"].items())
        + "; tables: "
        + ", ".join(
            f"{table} {t['rows']:,} rows, {t['mb']:.0f} MB" for table, t in seed["tables"].items()
        )
        + ".",
    ]
    rows = [
        [item["statement"], f"{item['execution_ms']:.2f}", ", ".join(item["seq_scans"]) or "none"]
        for item in scale["explain"]
    ]
    nested = scale.get("explain_node_transition", [])
    rows.append(
        [
            f"figway_node_transition() ({len(nested)} nested statements)",
            "",
            ", ".join(sorted({t for item in nested for t in item["seq_scans"]})) or "none",
        ]
    )
    parts.append("EXPLAIN (ANALYZE, BUFFERS) on the seeded tables (plans in the JSON):")
    parts.append(markdown_table(["statement", "execution ms", "seq scans of large tables"], rows))
    return parts


def target_lines(targets: dict[str, Any]) -> list[str]:
    lines = [
        f"- sustained submissions, {item['clients']} client(s), figway / baseline: "
        f"{item['ratio']:.2f}x (target at least {SUSTAINED_TARGET:g}x)"
        for item in targets.get("sustained", [])
    ]
    for item in targets.get("end_to_end", []):
        lines.append(
            f"- end to end, {item['mode']} workers, {item['dag']}: "
            f"{verdict(item['ratio'], END_TO_END_TARGET)}"
        )
    for item in targets.get("scale", []):
        lines.append(
            f"- {item['figure']} with {item['runs']:,} finished runs / empty database: "
            f"{verdict(item['ratio'], SCALE_TARGET)}"
        )
    return lines
