"""What every benchmark report shares: what it ran on, its tables, its results file."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from redis import Redis

__all__ = [
    "environment",
    "format_load",
    "latency_tables",
    "machine",
    "markdown_table",
    "run_header",
    "spread",
    "stop_on_sigterm",
    "verdict",
    "write_results",
]


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


def run_header(results: dict[str, Any], software: str) -> str:
    """The first line of every report: when, on what machine and software, under what load."""
    env = results["environment"]
    return (
        f"Run {results['started_at']} on {env['cpus']} CPUs ({env['cpu']}), Python "
        f"{env['python']}, {software}, PostgreSQL {env['postgresql']}, Redis "
        f"{env['redis_server']}; figway {env['figway_commit']}. Load average (1/5/15 min) at "
        f"start {format_load(env.get('load_average_at_start'))}, at end "
        f"{format_load(env.get('load_average_at_end'))}."
    )


def latency_tables(latency: list[dict[str, Any]]) -> list[str]:
    """The submitters' latency table, then where each that splits its time spends it."""
    rows = [
        [
            item["label"],
            *(
                f"{item['summary'][key]:.2f}"
                for key in ("p50", "p99", "mean", "minimum", "maximum")
            ),
        ]
        for item in latency
    ]
    parts = [markdown_table(["submitter", "p50 ms", "p99 ms", "mean ms", "min ms", "max ms"], rows)]
    for item in latency:
        if item.get("breakdown_ms"):
            work = item.get("database_work") or {}
            parts.append(
                f"Where {item['label']} spends its time (mean ms per submission; "
                f"{work.get('statements', 0):.1f} SQL statements in "
                f"{work.get('commits', 0):.1f} commits per submission):"
            )
            parts.append(
                markdown_table(
                    ["call", "ms"], [[key, f"{ms:.2f}"] for key, ms in item["breakdown_ms"].items()]
                )
            )
    return parts


def spread(values: list[float] | tuple[float, ...], digits: int = 2) -> str:
    """``median (min-max)``; just the value when there is one.

    >>> spread([1.0, 3.0, 2.0])
    '2.00 (1.00-3.00)'
    """
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"
