"""Chaos benchmark (`make bench-faults`): runs through a random sequence of faults.

A gateway and two forking `figway worker rq` processes run on a ``redis-server``
of this benchmark's own and on PostgreSQL reached through a link it can cut.
``--runs`` runs (a chain of three ``python`` nodes that note each execution in
a ledger) are submitted in batches; right after each batch one fault strikes:

- ``redis-restart``: Redis stopped (SIGTERM, data kept) and started again;
- ``redis-wipe``: Redis killed and started empty (a host lost with its disk);
- ``postgres-cut``: every connection to PostgreSQL dropped and refused;
- ``worker-kill``: a worker and its work horse SIGKILLed, then started again
  under its name, as a supervisor would.

Redis and PostgreSQL faults last ``--outage`` seconds. A few runs are POSTed
during each outage; one the gateway could not record is sent again after it,
with the same ``job_run_id``, as a client would. For every fault it reports how
long after the fault ended runs were ending again (progress) and every accepted
run had ended (settle time; it includes the batch's own remaining work), and at
the end the runs lost (ended ``failed``: the workflow cannot fail by itself),
the runs stuck (not ended ``--settle`` seconds after the last fault), and the
node executions that were not one per recorded attempt. Nothing is ever fixed
by hand. Results go to ``bench/results/faults-<time>.json`` and as Markdown to
standard output.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.report import machine, markdown_table, stop_on_sigterm, write_results
from bench.stack import BenchStack, StackConfig
from tests.support.faults import CuttableLink, OwnRedis, execution_problems, executions
from tests.support.policy import test_policy_env

FAULTS = ("redis-restart", "redis-wipe", "postgres-cut", "worker-kill")
WORKFLOW = "chaos_chain"
#: The windows of every process: the bound is FIGWAY_NODE_SILENCE_SECONDS + 2 reconcile rounds.
SETTINGS = {
    "FIGWAY_NODE_SILENCE_SECONDS": "5",
    "FIGWAY_RQ_WORKER_SILENCE_SECONDS": "10",
    "FIGWAY_RECONCILE_INTERVAL_SECONDS": "2",
    "FIGWAY_SUBMIT_CLAIM_SECONDS": "5",
    "FIGWAY_HEARTBEAT_SECONDS": "1",
}
TERMINAL = ("succeeded", "failed", "cancelled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=500, help="runs to submit in all")
    parser.add_argument("--faults", type=int, default=8, help="faults to inject, one per batch")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds a service is away")
    parser.add_argument("--settle", type=float, default=300.0, help="longest wait per fault")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    return parser.parse_args(argv)


class Chaos:
    def __init__(self, stack: BenchStack, redis: OwnRedis, link: CuttableLink, ledger: Path):
        self.stack = stack
        self.redis = redis
        self.link = link
        self.ledger = ledger
        self.http = httpx.Client(base_url=stack.api_url, timeout=30)
        self.accepted: list[str] = []
        self.unrecorded: list[str] = []  # POSTs refused without a record: sent again later

    def put_workflow(self) -> None:
        nodes = {
            f"n{i}": {
                "type": "python",
                "config": {
                    "callable": "tests.support.faults:count_execution",
                    "kwargs": {"ledger": str(self.ledger), "seconds": 0.05},
                },
                "retries": 2,
            }
            for i in range(3)
        }
        body = {
            "workspace_id": "chaos",
            "folder_id": "chaos",
            "nodes": nodes,
            "dependencies": {"n0": [], "n1": ["n0"], "n2": ["n1"]},
        }
        response = self.http.put(f"/workflows/{WORKFLOW}", json=body)
        response.raise_for_status()

    def post(self, job_run_id: str) -> None:
        body = {
            "workspace_id": "chaos",
            "folder_id": "chaos",
            "job_id": "chaos-job",
            "workflow_id": WORKFLOW,
            "job_run_id": job_run_id,
        }
        try:
            response = self.http.post("/workflow_runs/", json=body)
        except httpx.TransportError:
            self.unrecorded.append(job_run_id)
            return
        recorded = response.status_code in (200, 201, 202) or self._known(job_run_id)
        (self.accepted if recorded else self.unrecorded).append(job_run_id)

    def _known(self, job_run_id: str) -> bool:
        try:
            return self.http.get(f"/workflow_runs/{job_run_id}").status_code == 200
        except httpx.TransportError:
            return False

    def resend_unrecorded(self) -> None:
        """Send again, as a client would, the POSTs the gateway could not record."""
        pending, self.unrecorded = self.unrecorded, []
        for job_run_id in pending:
            self.post(job_run_id)

    def counts(self) -> Counter[str]:
        try:
            response = self.http.get("/workflow_runs/stats")
            return (
                Counter(response.json()["by_status"]) if response.status_code == 200 else Counter()
            )
        except httpx.TransportError:
            return Counter()

    def wait_settled(self, timeout: float) -> tuple[float | None, float | None]:
        """Seconds until runs end again (progress) and until every accepted run has ended.

        Either is None when it did not happen within ``timeout``.
        """
        start = time.monotonic()
        before = sum(self.counts()[s] for s in TERMINAL)
        progress: float | None = None
        while time.monotonic() - start < timeout:
            ended = sum(self.counts()[s] for s in TERMINAL)
            if progress is None and ended > before:
                progress = time.monotonic() - start
            if ended >= len(self.accepted):
                return progress, time.monotonic() - start
            time.sleep(0.25)
        return progress, None

    def strike(self, fault: str, outage: float, during: list[str]) -> None:
        """Inject ``fault``; POST the ``during`` runs while it lasts."""
        if fault == "worker-kill":
            self.stack.kill_worker(random.randrange(2))
            for job_run_id in during:
                self.post(job_run_id)
            return
        if fault == "postgres-cut":
            self.link.cut()
        elif fault == "redis-restart":
            self.redis.stop()
        else:
            self.redis.kill(lose_data=True)
        started = time.monotonic()
        for job_run_id in during:
            self.post(job_run_id)
        time.sleep(max(0.0, outage - (time.monotonic() - started)))
        if fault == "postgres-cut":
            self.link.restore()
        else:
            self.redis.start()


def run(args: argparse.Namespace) -> dict[str, Any]:
    random.seed(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="figway-faults-"))
    redis = OwnRedis(workdir)
    redis.start()
    link = CuttableLink(("127.0.0.1", 5432))
    ledger = workdir / "executions.txt"
    config = StackConfig(
        redis_url=f"redis://127.0.0.1:{redis.port}",
        redis_db=0,
        database_port=link.port,
        database_prefix="figway_faults_",
        extra_env={**SETTINGS, **test_policy_env()},
    )
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
    faults: list[dict[str, Any]] = []
    try:
        with BenchStack(config) as stack:
            stack.start_workers(2, simple=False)
            chaos = Chaos(stack, redis, link, ledger)
            chaos.put_workflow()
            ids = [f"chaos-{uuid.uuid4().hex[:10]}" for _ in range(args.runs)]
            batch = max(1, len(ids) // (args.faults + 1))
            # Every kind of fault in each round of four, in a random order.
            sequence = [f for _ in range(0, args.faults, 4) for f in random.sample(FAULTS, 4)]
            for index, fault in enumerate(sequence[: args.faults]):
                for job_run_id in ids[index * batch : (index + 1) * batch - 3]:
                    chaos.post(job_run_id)
                time.sleep(1.0)  # the batch is in flight when the fault strikes
                during = ids[(index + 1) * batch - 3 : (index + 1) * batch]
                chaos.strike(fault, args.outage, during)
                chaos.resend_unrecorded()
                progress, settle = chaos.wait_settled(args.settle)
                faults.append(
                    {
                        "fault": fault,
                        "runs_accepted_so_far": len(chaos.accepted),
                        "progress_seconds": None if progress is None else round(progress, 1),
                        "settled_seconds": None if settle is None else round(settle, 1),
                    }
                )
                print(f"fault {index + 1}: {faults[-1]}", flush=True)
            for job_run_id in ids[args.faults * batch :]:
                chaos.post(job_run_id)
            chaos.resend_unrecorded()
            chaos.wait_settled(args.settle)
            runs = {i: chaos.http.get(f"/workflow_runs/{i}").json() for i in chaos.accepted}
    finally:
        link.close()
        redis.close()
    problems = execution_problems(runs, ledger)
    ran = executions(ledger)
    # Executed more than once in one attempt, or in an attempt figway never recorded: a
    # broken promise. An attempt recorded but never executed (its worker killed between
    # recording the start and the node's first line) is a lost attempt, retried.
    twice = sum(1 for key, n in ran.items() if n > 1 or key[0] not in runs)
    twice += sum(
        1
        for (run_id, node_id, attempt) in ran
        if run_id in runs and attempt > runs[run_id]["nodes"][node_id]["attempts"]
    )
    unexecuted = sum(
        1
        for run_id, run in runs.items()
        for node_id, node in run["nodes"].items()
        for attempt in range(1, node["attempts"] + 1)
        if ran[(run_id, node_id, attempt)] == 0
    )
    shutil.rmtree(workdir, ignore_errors=True)
    failed = {i: r.get("error") for i, r in runs.items() if r["status"] == "failed"}
    stuck = [i for i, r in runs.items() if r["status"] not in TERMINAL]
    return {
        "started_at": started_at,
        "machine": machine(),
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "settings": SETTINGS,
        "runs_submitted": args.runs,
        "runs_accepted": len(runs),
        "runs_never_recorded": args.runs - len(runs),
        "runs_succeeded": sum(r["status"] == "succeeded" for r in runs.values()),
        "runs_lost": len(failed),
        "lost_reasons": dict(Counter(str(e) for e in failed.values())),
        "runs_stuck": len(stuck),
        "nodes_not_once_per_attempt": len(problems),
        "executions_beyond_attempts": twice,
        "attempts_never_executed": unexecuted,
        "execution_problems": problems[:20],
        "retries": sum(
            max(0, node["attempts"] - 1) for r in runs.values() for node in r["nodes"].values()
        ),
        "faults": faults,
    }


def render(results: dict[str, Any]) -> str:
    rows = [
        [
            str(i + 1),
            f["fault"],
            str(f["runs_accepted_so_far"]),
            str(f.get("progress_seconds")),
            str(f["settled_seconds"]),
        ]
        for i, f in enumerate(results["faults"])
    ]
    table = markdown_table(
        [
            "#",
            "fault",
            "runs accepted so far",
            "runs ending again after (s)",
            "all ended after (s)",
        ],
        rows,
    )
    summary = markdown_table(
        [
            "runs",
            "accepted",
            "succeeded",
            "lost",
            "stuck",
            "executed twice",
            "attempts killed before running",
            "retries",
        ],
        [
            [
                str(results["runs_submitted"]),
                str(results["runs_accepted"]),
                str(results["runs_succeeded"]),
                str(results["runs_lost"]),
                str(results["runs_stuck"]),
                str(results["executions_beyond_attempts"]),
                str(results["attempts_never_executed"]),
                str(results["retries"]),
            ]
        ],
    )
    reasons = "\n".join(f"- {n} x {reason}" for reason, n in results["lost_reasons"].items())
    return f"## Faults\n\n{table}\n\n{summary}\n\n{reasons or '(no run lost)'}\n"


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    args = parse_args(argv)
    results = run(args)
    write_results(results, render(results), output=args.output, name="faults")
    broken = results["runs_lost"] + results["runs_stuck"] + results["executions_beyond_attempts"]
    return 0 if broken == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
