"""What a benchmark run ran on, and its results as Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from redis import Redis

__all__ = [
    "END_TO_END_TARGET",
    "SUBMIT_TARGET",
    "environment",
    "format_load",
    "machine",
    "markdown_table",
    "render_markdown",
    "stop_on_sigterm",
    "verdict",
    "write_results",
]

#: figway's submit p50 may be at most this many times its baseline's.
SUBMIT_TARGET = 2.0
#: figway's end-to-end time may be at most this many times native RQ's.
END_TO_END_TARGET = 1.2


def environment(
    database_url: str, redis: Redis, *, extra_packages: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Machine, versions and the database settings that weigh on commit latency."""
    with psycopg.connect(database_url) as connection:
        pg_version = connection.execute("SHOW server_version").fetchone()
        pg_settings = {
            name: connection.execute(f"SHOW {name}").fetchone()
            for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections")
        }
    redis_info = redis.info("server")
    return {
        **machine(),
        "packages": {
            name: version(name)
            for name in (
                "rq",
                "redis",
                "httpx",
                "psycopg",
                "sqlalchemy",
                "fastapi",
                "uvicorn",
                *extra_packages,
            )
        },
        "postgresql": pg_version[0] if pg_version else None,
        "postgresql_settings": {k: v[0] if v else None for k, v in pg_settings.items()},
        "redis_server": redis_info.get("redis_version"),
    }


def machine() -> dict[str, Any]:
    """The machine, the Python, figway's commit and the load: what any benchmark reports."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "figway_commit": _git_commit(),
        "load_average_at_start": os.getloadavg(),
    }


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so a benchmark tears down as on Ctrl-C."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def write_results(results: dict[str, Any], markdown: str, *, output: Path, name: str) -> Path:
    """Write ``results`` (with ``markdown``) as ``output/<name>-<start time>.json``; print it.

    The file name's time is the run's ``started_at`` without colons, in UTC
    (``rq_path-2026-11-29T001616Z.json``); returns the file's path.
    """
    output.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("+0000", "Z")
    path = output / f"{name}-{stamp}.json"
    path.write_text(json.dumps({**results, "markdown": markdown}, indent=2, default=str) + "\n")
    print()
    print(markdown, flush=True)
    return path


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{' (modified)' if dirty else ''}"


def format_load(values: list[float] | tuple[float, ...] | None) -> str:
    """Load averages as ``1/5/15``.

    >>> format_load((2.5, 1.0, 0.25))
    '2.50/1.00/0.25'
    """
    return "/".join(f"{v:.2f}" for v in values) if values else "n/a"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ratio: float, target: float) -> str:
    """A ratio against its target.

    >>> verdict(1.1, 1.2)
    '1.10x (target <= 1.2x: met)'
    """
    return f"{ratio:.2f}x (target <= {target:g}x: {'met' if ratio <= target else 'MISSED'})"


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
    for dag, d in runtime.get("new_connection_per_node", {}).items():
        rows.append(
            [f"in-process, new connection per node: {dag}", f"{d['p50']:.2f}", f"{d['mean']:.2f}"]
        )
    for dag, d in runtime["forked"].items():
        rows.append(
            [
                f"forked child per node: {dag}",
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


def render_markdown(results: dict[str, Any]) -> str:
    """The run's tables: submit latency, sustained rate, end-to-end, and the targets."""
    parts: list[str] = []
    settings = results["settings"]
    env = results["environment"]
    parts.append(
        f"Run {results['started_at']} on {env['cpus']} CPUs ({env['cpu']}), Python {env['python']}, "
        f"rq {env['packages']['rq']}, redis-py {env['packages']['redis']}, "
        f"PostgreSQL {env['postgresql']}, Redis {env['redis_server']}; "
        f"figway {env['figway_commit']}. Load average (1/5/15 min) at start "
        f"{format_load(env.get('load_average_at_start'))}, at end {format_load(env.get('load_average_at_end'))}."
    )

    latency = results.get("submit_latency")
    if latency:
        parts.append(
            f"### Submit latency: {settings['submit_dag']} ({settings['requests']} sequential "
            f"submissions each after {settings['warmup']} warm-up, interleaved; no workers running)"
        )
        rows = [
            [
                item["label"],
                f"{item['summary']['p50']:.2f}",
                f"{item['summary']['p99']:.2f}",
                f"{item['summary']['mean']:.2f}",
                f"{item['summary']['minimum']:.2f}",
                f"{item['summary']['maximum']:.2f}",
            ]
            for item in latency
        ]
        parts.append(
            markdown_table(["submitter", "p50 ms", "p99 ms", "mean ms", "min ms", "max ms"], rows)
        )
        for item in latency:
            if item.get("breakdown_ms"):
                work = item.get("database_work") or {}
                parts.append(
                    f"Where {item['label']} spends its time (mean ms per submission; "
                    f"{work.get('statements', 0):.1f} SQL statements in {work.get('commits', 0):.1f} "
                    "commits per submission):"
                )
                parts.append(
                    markdown_table(
                        ["call", "ms"],
                        [[key, f"{ms:.2f}"] for key, ms in item["breakdown_ms"].items()],
                    )
                )

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

    targets = results.get("targets", {})
    if targets:
        lines = ["### Targets"]
        if "submit_p50_ratio" in targets:
            lines.append(
                f"- submit p50, figway POST / baseline: "
                f"{verdict(targets['submit_p50_ratio'], SUBMIT_TARGET)}"
            )
        for item in targets.get("end_to_end", []):
            lines.append(
                f"- end to end, {item['mode']} workers, {item['dag']}: "
                f"{verdict(item['ratio'], END_TO_END_TARGET)}"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
