"""Chaos benchmark (`make bench-faults`): runs through a random sequence of faults.

A gateway and two forking `figway worker rq` processes run on a ``redis-server``
of this benchmark's own and on PostgreSQL reached through a link it can cut.
Beside them run a ``prefect server`` (on a database of its own, reached through
the same link) and a ``prefect worker``, both of the benchmark's own
(``tests/support/prefect_services.py``). ``--runs`` runs (a chain of three
``python`` nodes that note each execution in a ledger; a ``--prefect-share`` of
them on a workflow routed to Prefect) are submitted in batches; right after each
batch one fault strikes:

- ``redis-restart``: Redis stopped (SIGTERM, data kept) and started again;
- ``redis-wipe``: Redis killed and started empty (a host lost with its disk);
- ``postgres-cut``: every connection to PostgreSQL (figway's and the Prefect
  server's) dropped and refused;
- ``worker-kill``: an RQ worker and its work horse SIGKILLed, then started again
  under its name, as a supervisor would;
- ``prefect-outage``: the Prefect server SIGKILLed, started again after
  ``--prefect-outage`` seconds;
- ``prefect-worker-kill``: the Prefect worker SIGKILLed with its flow-run
  processes, then started again;
- ``flow-run-kill``: one flow-run process SIGKILLed (skipped when none runs).

Redis and PostgreSQL faults last ``--outage`` seconds. A few runs are POSTed
during each outage; one the gateway could not record is sent again after it,
with the same ``job_run_id``, as a client would. For every fault it reports how
long after the fault ended runs were ending again (progress) and every accepted
run had ended (settle time; it includes the batch's own remaining work), and at
the end the runs lost (ended ``failed``: the workflow cannot fail by itself),
the runs stuck (not ended ``--settle`` seconds after the last fault), and the
node executions that were not one per recorded attempt. A Prefect worker that
exits by itself is started again, as a supervisor would, and counted. Nothing is ever fixed
by hand. Results go to ``bench/results/faults-<time>.json`` and as Markdown to
standard output. Lost and stuck runs are counted per backend, settle times per
backend too (a run's backend is its workflow's).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.report import machine, markdown_table, stop_on_sigterm, write_results
from bench.stack import BenchStack, StackConfig
from tests.support.faults import CuttableLink, OwnRedis, execution_problems, executions
from tests.support.policy import test_policy_env
from tests.support.prefect_services import PrefectServices, own_prefect_services

RQ_FAULTS = ("redis-restart", "redis-wipe", "postgres-cut", "worker-kill")
PREFECT_FAULTS = ("prefect-outage", "prefect-worker-kill", "flow-run-kill")
#: The workflow of each backend's runs (the same chain; only the routing differs).
WORKFLOWS = {"rq": "chaos_chain", "prefect": "chaos_chain_prefect"}
#: The Prefect worker's settings that docs/operations.md asks for (its flow-run processes
#: inherit them): retry the 500s a server answers while its database is away, so a
#: starting flow-run process does not exit on them and leave its flow run Pending.
PREFECT_WORKER_SETTINGS = {"PREFECT_CLIENT_RETRY_EXTRA_CODES": "500"}
#: How long each node sleeps: a flow run's nodes last long enough that the Prefect faults
#: find flow-run processes at work (RQ's are as short as before, for comparable figures).
NODE_SECONDS = {"rq": 0.05, "prefect": 2.0}
#: How long a flow-run-kill waits for a flow-run process to kill.
FLOW_RUN_WAIT_SECONDS = 20.0
#: The windows of every process: the bound is FIGWAY_NODE_SILENCE_SECONDS + 2 reconcile rounds.
SETTINGS = {
    "FIGWAY_NODE_SILENCE_SECONDS": "5",
    "FIGWAY_RQ_WORKER_SILENCE_SECONDS": "10",
    "FIGWAY_RECONCILE_INTERVAL_SECONDS": "2",
    "FIGWAY_SUBMIT_CLAIM_SECONDS": "5",
    "FIGWAY_HEARTBEAT_SECONDS": "1",
    "FIGWAY_BACKEND_CHECK_SECONDS": "2",
}
TERMINAL = ("succeeded", "failed", "cancelled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=500, help="runs to submit in all")
    parser.add_argument(
        "--faults", type=int, default=14, help="faults to inject, one per batch (2 of each kind)"
    )
    parser.add_argument(
        "--outage", type=float, default=10.0, help="seconds Redis/PostgreSQL is away"
    )
    parser.add_argument(
        "--prefect-share",
        type=float,
        default=0.25,
        help="share of the runs routed to Prefect (0: no Prefect, no Prefect faults)",
    )
    parser.add_argument(
        "--prefect-outage", type=float, default=30.0, help="seconds the Prefect server is away"
    )
    parser.add_argument("--settle", type=float, default=300.0, help="longest wait per fault")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated fault kinds to draw from (default: every kind)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the process logs (printed: where) to read after"
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    return parser.parse_args(argv)


class Chaos:
    def __init__(
        self,
        stack: BenchStack,
        redis: OwnRedis,
        link: CuttableLink,
        ledger: Path,
        prefect: PrefectServices | None,
    ):
        self.stack = stack
        self.redis = redis
        self.link = link
        self.ledger = ledger
        self.prefect = prefect
        self.http = httpx.Client(base_url=stack.api_url, timeout=30)
        self.accepted: list[str] = []
        self.unrecorded: list[str] = []  # POSTs refused without a record: sent again later
        self.backend_of: dict[str, str] = {}  # every run's backend, chosen when its id is made
        self.prefect_worker_exits = 0  # times the Prefect worker exited by itself

    def put_workflows(self) -> None:
        for backend, workflow_id in WORKFLOWS.items():
            if backend == "prefect" and self.prefect is None:
                continue
            nodes = {
                f"n{i}": {
                    "type": "python",
                    "config": {
                        "callable": "tests.support.faults:count_execution",
                        "kwargs": {"ledger": str(self.ledger), "seconds": NODE_SECONDS[backend]},
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
                "backend": backend,
            }
            response = self.http.put(f"/workflows/{workflow_id}", json=body)
            response.raise_for_status()

    def post(self, job_run_id: str) -> None:
        body = {
            "workspace_id": "chaos",
            "folder_id": "chaos",
            "job_id": "chaos-job",
            "workflow_id": WORKFLOWS[self.backend_of[job_run_id]],
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

    def ended(self) -> dict[str, int] | None:
        """Runs ended, per backend (None while the gateway cannot say)."""
        try:
            response = self.http.get("/workflow_runs/stats")
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        by_workflow = response.json()["by_workflow"]
        return {
            backend: sum(by_workflow.get(workflow_id, {}).get(s, 0) for s in TERMINAL)
            for backend, workflow_id in WORKFLOWS.items()
        }

    def wait_settled(self, timeout: float) -> dict[str, float | None]:
        """Seconds until runs end again (``progress``), until every accepted run has ended
        (``settled``), and until every accepted run of each backend has (``rq``, ``prefect``).

        Each is None when it did not happen within ``timeout``.
        """
        start = time.monotonic()
        accepted = Counter(self.backend_of[i] for i in self.accepted)
        before: int | None = None
        found: dict[str, float | None] = {"progress": None, "settled": None}
        found |= {backend: None for backend in accepted}
        while time.monotonic() - start < timeout:
            self.supervise()
            ended = self.ended()
            if ended is not None:
                now = round(time.monotonic() - start, 1)
                total = sum(ended.values())
                before = total if before is None else before
                if found["progress"] is None and total > before:
                    found["progress"] = now
                for backend, count in accepted.items():
                    if found[backend] is None and ended[backend] >= count:
                        found[backend] = now
                if all(found[backend] is not None for backend in accepted):
                    found["settled"] = now
                    return found
            time.sleep(0.25)
        return found

    def supervise(self) -> None:
        """Start the Prefect worker again if it exited by itself, as a supervisor would
        (systemd's ``Restart=always``, compose's ``restart:``); counted, and reported."""
        worker = self.prefect.worker if self.prefect is not None else None
        if worker is None or worker.running():
            return
        self.prefect_worker_exits += 1
        print(f"the Prefect worker exited by itself:\n{worker.tail(8)}", flush=True)
        assert self.prefect is not None
        self.prefect.start_worker()

    def strike(self, fault: str, args: argparse.Namespace, during: list[str]) -> str:
        """Inject ``fault``; POST the ``during`` runs while it lasts. Returns what was done."""
        if fault in ("worker-kill", "prefect-worker-kill", "flow-run-kill"):
            done = self._kill(fault)
            for job_run_id in during:
                self.post(job_run_id)
            return done
        outage = args.prefect_outage if fault == "prefect-outage" else args.outage
        if fault == "postgres-cut":
            self.link.cut()
        elif fault == "redis-restart":
            self.redis.stop()
        elif fault == "redis-wipe":
            self.redis.kill(lose_data=True)
        else:
            assert self.prefect is not None
            self.prefect.kill_server()
        started = time.monotonic()
        for job_run_id in during:
            self.post(job_run_id)
        time.sleep(max(0.0, outage - (time.monotonic() - started)))
        if fault == "postgres-cut":
            self.link.restore()
        elif fault == "prefect-outage":
            assert self.prefect is not None
            self.prefect.start_server()
        else:
            self.redis.start()
        return f"away {outage:g} s"

    def _kill(self, fault: str) -> str:
        if fault == "worker-kill":
            return f"RQ worker pid {self.stack.kill_worker(random.randrange(2))} killed"
        assert self.prefect is not None
        if fault == "prefect-worker-kill":
            flow_runs = len(self.prefect.engine_processes())
            self.prefect.kill_worker()  # its flow-run processes go down with it
            self.prefect.start_worker()  # as a supervisor would
            return f"Prefect worker killed with {flow_runs} flow-run processes"
        deadline = time.monotonic() + FLOW_RUN_WAIT_SECONDS
        while not (processes := self.prefect.engine_processes()):
            if time.monotonic() > deadline:
                return "skipped: no flow-run process ran"
            time.sleep(0.2)
        victim = random.choice(processes)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return f"flow-run process {victim} killed ({len(processes)} running)"


@contextlib.contextmanager
def prefect_beside(
    args: argparse.Namespace, stack: BenchStack, link: CuttableLink, workdir: Path
) -> Iterator[PrefectServices | None]:
    """The benchmark's own Prefect server and worker (None with ``--prefect-share 0``).

    The server reaches PostgreSQL through ``link``, so a ``postgres-cut`` is its
    database's outage too; the worker's flow-run processes record into the stack's
    database through it and run with the stack's settings.
    """
    if args.prefect_share <= 0:
        yield None
        return
    log_dir = workdir / "prefect"
    log_dir.mkdir()
    worker_settings = {
        **stack.config.extra_env,
        "PYTHONPATH": stack.env()["PYTHONPATH"],  # the ledger node lives in tests/support
        **PREFECT_WORKER_SETTINGS,
    }
    with own_prefect_services(
        stack.linked_database_url(),
        log_dir,
        database_port=link.port,
        worker_settings=worker_settings,
    ) as services:
        yield services


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
        strip_env_prefixes=("FIGWAY_", "PREFECT_"),
        extra_env={
            **SETTINGS,
            **test_policy_env(),
            # One artifact store for the gateway, the RQ workers and the flow-run processes.
            "FIGWAY_ARTIFACT_URL": str(workdir / "artifacts"),
        },
    )
    kinds = RQ_FAULTS + (PREFECT_FAULTS if args.prefect_share > 0 else ())
    if args.only:
        chosen = tuple(args.only.split(","))
        unknown = [k for k in chosen if k not in kinds]
        if unknown:
            raise SystemExit(f"--only: unknown fault kinds {unknown}; known: {list(kinds)}")
        kinds = chosen
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
    faults: list[dict[str, Any]] = []
    stack = BenchStack(config)
    try:
        with prefect_beside(args, stack, link, workdir) as prefect:
            if prefect is not None:
                # The gateway is a client of the Prefect server: it must know it before it starts.
                client_env = {k: v for k, v in prefect.env().items() if k.startswith("PREFECT_")}
                stack.config = replace(config, extra_env={**config.extra_env, **client_env})
            with stack:
                stack.start_workers(2, simple=False)
                chaos = Chaos(stack, redis, link, ledger, prefect)
                chaos.put_workflows()
                ids = [f"chaos-{uuid.uuid4().hex[:10]}" for _ in range(args.runs)]
                for job_run_id in ids:
                    on_prefect = prefect is not None and random.random() < args.prefect_share
                    chaos.backend_of[job_run_id] = "prefect" if on_prefect else "rq"
                batch = max(1, len(ids) // (args.faults + 1))
                # Every kind of fault in each round, in a random order.
                rounds = range(0, args.faults, len(kinds))
                sequence = [f for _ in rounds for f in random.sample(kinds, len(kinds))]
                for index, fault in enumerate(sequence[: args.faults]):
                    for job_run_id in ids[index * batch : (index + 1) * batch - 3]:
                        chaos.post(job_run_id)
                    # The batch is in flight when the fault strikes (a flow run takes longer
                    # to start: a worker's poll and a process of its own).
                    time.sleep(4.0 if fault in PREFECT_FAULTS else 1.0)
                    during = ids[(index + 1) * batch - 3 : (index + 1) * batch]
                    done = chaos.strike(fault, args, during)
                    chaos.resend_unrecorded()
                    settled = chaos.wait_settled(args.settle)
                    faults.append(
                        {
                            "fault": fault,
                            "done": done,
                            "runs_accepted_so_far": len(chaos.accepted),
                            "prefect_runs_so_far": sum(
                                chaos.backend_of[i] == "prefect" for i in chaos.accepted
                            ),
                            "progress_seconds": settled["progress"],
                            "settled_seconds": settled["settled"],
                            "rq_settled_seconds": settled.get("rq"),
                            "prefect_settled_seconds": settled.get("prefect"),
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
    if args.keep:
        print(f"logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = {i: r.get("error") for i, r in runs.items() if r["status"] == "failed"}
    stuck = [i for i, r in runs.items() if r["status"] not in TERMINAL]
    by_backend = {
        backend: {
            "accepted": sum(chaos.backend_of[i] == backend for i in runs),
            "succeeded": sum(
                chaos.backend_of[i] == backend and r["status"] == "succeeded"
                for i, r in runs.items()
            ),
            "lost": sum(chaos.backend_of[i] == backend for i in failed),
            "stuck": sum(chaos.backend_of[i] == backend for i in stuck),
        }
        for backend in sorted(set(chaos.backend_of.values()))
    }
    return {
        "started_at": started_at,
        "machine": machine(),
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "settings": {**SETTINGS, **PREFECT_WORKER_SETTINGS},
        "runs_submitted": args.runs,
        "runs_accepted": len(runs),
        "runs_never_recorded": args.runs - len(runs),
        "runs_succeeded": sum(r["status"] == "succeeded" for r in runs.values()),
        "runs_lost": len(failed),
        "lost_reasons": dict(Counter(f"{chaos.backend_of[i]}: {e}" for i, e in failed.items())),
        "runs_stuck": len(stuck),
        "stuck_runs": {i: f"{chaos.backend_of[i]}, {runs[i]['status']}" for i in stuck[:20]},
        "by_backend": by_backend,
        "prefect_worker_exits": chaos.prefect_worker_exits,
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
            f.get("done", ""),
            f"{f['runs_accepted_so_far']} ({f.get('prefect_runs_so_far', 0)})",
            str(f.get("progress_seconds")),
            str(f.get("rq_settled_seconds")),
            str(f.get("prefect_settled_seconds")),
            str(f["settled_seconds"]),
        ]
        for i, f in enumerate(results["faults"])
    ]
    table = markdown_table(
        [
            "#",
            "fault",
            "what was done",
            "runs accepted so far (on Prefect)",
            "runs ending again after (s)",
            "RQ runs all ended after (s)",
            "Prefect runs all ended after (s)",
            "all ended after (s)",
        ],
        rows,
    )
    per_kind: dict[str, list[float | None]] = {}
    for f in results["faults"]:
        per_kind.setdefault(f["fault"], []).append(f["settled_seconds"])
    kinds = markdown_table(
        ["fault", "times", "all ended after (s), longest", "not settled"],
        [
            [
                kind,
                str(len(times)),
                str(max((t for t in times if t is not None), default=None)),
                str(sum(t is None for t in times)),
            ]
            for kind, times in per_kind.items()
        ],
    )
    backends = markdown_table(
        ["backend", "accepted", "succeeded", "lost", "stuck"],
        [
            [b, str(n["accepted"]), str(n["succeeded"]), str(n["lost"]), str(n["stuck"])]
            for b, n in results.get("by_backend", {}).items()
        ],
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
    exits = (
        f"The Prefect worker exited by itself {results.get('prefect_worker_exits', 0)} times "
        "(started again each time, as a supervisor would)."
    )
    return (
        f"## Faults\n\n{table}\n\n{kinds}\n\n{backends}\n\n{exits}\n\n{summary}\n\n"
        f"{reasons or '(no run lost)'}\n"
    )


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    args = parse_args(argv)
    results = run(args)
    write_results(results, render(results), output=args.output, name="faults")
    broken = results["runs_lost"] + results["runs_stuck"] + results["executions_beyond_attempts"]
    return 0 if broken == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
