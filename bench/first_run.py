"""The first run's wait on a fresh data directory: what a new user meets on ``make run``.

Starts ``figway serve`` (the embedded default) in an empty directory with the example
workflows and rules, waits until it answers ``/healthz``, then, after ``--delay``
seconds (0: at once; a person reading the README takes a little while), starts one
run of ``sales_daily`` (routed to Prefect) and times it from the POST to its end. It
also notes when the run was first seen running. Each repeat measures Prefect's
ephemeral API started at the first run (``FIGWAY_PREFECT_EARLY_START=false``, as
before) and at the gateway's start (the default), one after the other.

    python -m bench.first_run --delay 10 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
FIGWAY = str(Path(sys.executable).parent / "figway")


def one_first_run(delay: float, *, early: bool) -> tuple[float, float | None, str]:
    """(seconds POST to finished, seconds POST to running, final status)."""
    with tempfile.TemporaryDirectory(prefix="figway-first-run-") as scratch:
        directory = Path(scratch)
        shutil.copy(ROOT / "routing_rules.yaml", directory / "routing_rules.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FIGWAY_", "PREFECT_"))}
        env["FIGWAY_DATA_DIR"] = str(directory / ".figway")
        env["FIGWAY_PREFECT_EARLY_START"] = "true" if early else "false"
        subprocess.run(
            [FIGWAY, "workflows", "load", str(ROOT / "examples" / "workflows")],
            cwd=directory,
            env=env,
            check=True,
            capture_output=True,
        )
        port, ws_port = free_port(), free_port()
        server = subprocess.Popen(
            [FIGWAY, "serve", "--port", str(port), "--ws-port", str(ws_port)],
            cwd=directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                time.sleep(delay)
                body = {
                    "workspace_id": "ws1",
                    "folder_id": "folder1",
                    "job_id": "daily",
                    "workflow_id": "sales_daily",
                    "job_run_id": "first-run",
                }
                posted = time.monotonic()
                assert client.post("/workflow_runs/", json=body).status_code == 201
                running_at = None
                while time.monotonic() < posted + 300:
                    run = client.get("/workflow_runs/first-run").json()
                    if running_at is None and run["status"] in ("running", "succeeded", "failed"):
                        running_at = time.monotonic() - posted
                    if run["status"] in ("succeeded", "failed", "cancelled"):
                        return time.monotonic() - posted, running_at, run["status"]
                    time.sleep(0.1)
                return time.monotonic() - posted, running_at, "unfinished"
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.0, help="seconds after /healthz")
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args()
    # Alternated, so that both settings meet the same machine (load varies over minutes).
    for _ in range(options.repeats):
        for early in (False, True):
            total, running, status = one_first_run(options.delay, early=early)
            shown = "-" if running is None else f"{running:.1f}"
            when = "at the gateway's start" if early else "at the first run (before)"
            print(
                f"Prefect started {when}, run {options.delay:g} s after /healthz: "
                f"POST to running {shown} s, to {status} {total:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
