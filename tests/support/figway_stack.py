"""figway in production shape for tests: `figway serve` and `figway worker rq` processes.

Every process runs in a session of its own, so a test can kill a worker's whole
process group, and its output goes to a log file that failing tests print.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from rq import Worker

from backends.model.status import RUN_TERMINAL
from tests.support.policy import test_policy_env
from tests.support.processes import LoggedProcess, descendants, free_port, process_alive

__all__ = ["FIGWAY", "Stack", "clean_env"]

FIGWAY = str(Path(sys.executable).with_name("figway"))
TERMINAL = {status.value for status in RUN_TERMINAL}


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its FIGWAY_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIGWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    # The session's shared artifact store (tests/conftest.py), as every worker's would be.
    env["FIGWAY_ARTIFACT_URL"] = os.environ["FIGWAY_TEST_ARTIFACT_URL"]
    # Access control has tests of its own (tests/access/test_api_keys.py); these drive the API open.
    env["FIGWAY_AUTH"] = "off"
    env.update(test_policy_env())
    env.update(settings)
    return env


@dataclass
class Stack:
    """A gateway and RQ workers on the real PostgreSQL and Redis, driven over HTTP."""

    database_url: str
    redis_url: str
    log_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    #: Settings of the workers only, on top of ``settings`` (a worker held to a policy
    #: other than the gateway's, say).
    worker_settings: dict[str, str] = field(default_factory=dict)
    #: Settings left out of every process's environment: ``FIGWAY_AUTH``, say, so that
    #: the backing decides access control as it does in production.
    unset: tuple[str, ...] = ()
    gateway: LoggedProcess | None = None
    workers: dict[str, LoggedProcess] = field(default_factory=dict)
    port: int = 0
    ws_port: int = 0
    _http: httpx.Client | None = None

    # -- processes --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = clean_env(
            {
                "FIGWAY_DATABASE_URL": self.database_url,
                "FIGWAY_REDIS_URL": self.redis_url,
                "FIGWAY_NODE_SILENCE_SECONDS": "3",
                "FIGWAY_RQ_WORKER_SILENCE_SECONDS": "8",
                "FIGWAY_RECONCILE_INTERVAL_SECONDS": "1",
                "FIGWAY_HEARTBEAT_SECONDS": "0.5",
                **self.settings,
            }
        )
        return {name: value for name, value in env.items() if name not in self.unset}

    def start_gateway(self) -> None:
        """Launch `figway serve`; it is waited for on first use, so workers can start meanwhile."""
        self.port, self.ws_port = free_port(), free_port()
        args = ["serve", "--port", str(self.port), "--ws-port", str(self.ws_port)]
        self.gateway = LoggedProcess.start(
            "gateway", [FIGWAY, *args], env=self.env(), log_dir=self.log_dir
        )

    def wait_for_gateway(self) -> None:
        if self._http is not None:
            return
        assert self.gateway is not None, "start_gateway() first"
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            if not self.gateway.running():
                client.close()
                raise AssertionError(f"`figway serve` exited at start:\n{self.gateway.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    self._http = client
                    return
            if time.monotonic() > deadline:
                client.close()
                raise AssertionError(f"the gateway did not answer within 60 s\n{self.logs()}")
            time.sleep(0.1)

    def launch_worker(self, name: str) -> LoggedProcess:
        """Start one `figway worker rq` named ``name``, without waiting for it."""
        self.workers[name] = LoggedProcess.start(
            name,
            [FIGWAY, "worker", "rq", "--name", name],
            env={**self.env(), **self.worker_settings},
            log_dir=self.log_dir,
        )
        return self.workers[name]

    def start_workers(self, *names: str) -> None:
        """Start one `figway worker rq` per name and wait until Redis lists them all."""
        for name in names:
            self.launch_worker(name)
        self.wait_for_gateway()
        deadline = time.monotonic() + 60
        with Redis.from_url(self.redis_url) as redis:
            while not set(names) <= {w.name for w in Worker.all(connection=redis)}:
                dead = [self.workers[n] for n in names if not self.workers[n].running()]
                if dead:
                    raise AssertionError(f"a worker exited at start\n{self.logs()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"workers {names} did not register in 60 s\n{self.logs()}")
                time.sleep(0.1)

    def horse_of(self, worker: str) -> int:
        """The pid of the work horse the worker forked for its current job."""
        parent = self.workers[worker].pid
        deadline = time.monotonic() + 15
        while True:
            # The horse leads a process group of its own; the scheduler stays in the worker's.
            horses = [
                pid
                for pid in descendants(parent)
                if _process_group(pid) == pid and process_alive(pid)
            ]
            if len(horses) == 1:
                return horses[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no single work horse under {worker}: {horses}")
            time.sleep(0.05)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        for worker in self.workers.values():
            worker.kill_everything()
        if self.gateway is not None:
            self.gateway.stop()

    def logs(self) -> str:
        processes = [p for p in (self.gateway, *self.workers.values()) if p is not None]
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail()}" for p in processes)

    # -- HTTP -------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        self.wait_for_gateway()
        assert self._http is not None
        return self._http

    def put_workflow(
        self,
        workflow_id: str,
        nodes: Mapping[str, Mapping[str, Any]],
        dependencies: Mapping[str, list[str]] | None = None,
        **fields: Any,
    ) -> None:
        """PUT a workflow; ``fields`` adds top-level fields (``backend``, ``pool``, ``tags``)."""
        body = {
            "workspace_id": "ws-int",
            "folder_id": "folder-int",
            "nodes": dict(nodes),
            "dependencies": dict(dependencies or {}),
            **fields,
        }
        response = self.http.put(f"/workflows/{workflow_id}", json=body)
        assert response.status_code in (200, 201), response.text

    def run_body(self, workflow_id: str, job_run_id: str) -> dict[str, str]:
        return {
            "workspace_id": "ws-int",
            "folder_id": "folder-int",
            "job_id": f"job-{workflow_id}",
            "workflow_id": workflow_id,
            "job_run_id": job_run_id,
        }

    def start_run(self, workflow_id: str, job_run_id: str) -> dict[str, Any]:
        response = self.http.post("/workflow_runs/", json=self.run_body(workflow_id, job_run_id))
        assert response.status_code == 201, response.text
        run: dict[str, Any] = response.json()
        return run

    def post_at_once(self, body: Mapping[str, Any], count: int) -> list[httpx.Response]:
        """POST the same run ``count`` times at the same moment, each on its own connection."""
        gate = threading.Barrier(count)

        def post(_: int) -> httpx.Response:
            with httpx.Client(base_url=str(self.http.base_url), timeout=30) as client:
                gate.wait()
                return client.post("/workflow_runs/", json=dict(body))

        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(pool.map(post, range(count)))

    def get_run(self, job_run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/workflow_runs/{job_run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        return run

    def explain(self, job_run_id: str) -> str:
        try:
            run: Any = self.get_run(job_run_id)
        except (AssertionError, httpx.HTTPError) as exc:
            run = f"(cannot read the run: {exc})"
        return f"run {job_run_id}:\n{json.dumps(run, indent=2)}\n\n{self.logs()}"

    def wait_for(
        self,
        job_run_id: str,
        what: str,
        condition: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Poll the run over HTTP until ``condition`` holds; fail naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(job_run_id)
            if condition(run):
                return run
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what} did not happen within {timeout:.0f} s\n{self.explain(job_run_id)}"
                )
            time.sleep(0.1)

    def wait_for_end(self, job_run_id: str, *, timeout: float = 60) -> dict[str, Any]:
        return self.wait_for(
            job_run_id, "the run finishing", lambda run: run["status"] in TERMINAL, timeout=timeout
        )

    def wait_for_all(self, job_run_ids: list[str], *, timeout: float) -> dict[str, dict[str, Any]]:
        """Wait until every run has ended; fail naming those that did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        ended: dict[str, dict[str, Any]] = {}
        while True:
            for job_run_id in job_run_ids:
                if job_run_id not in ended:
                    run = self.get_run(job_run_id)
                    if run["status"] in TERMINAL:
                        ended[job_run_id] = run
            if len(ended) == len(job_run_ids):
                return ended
            if time.monotonic() > deadline:
                stuck = {i: self.get_run(i) for i in job_run_ids if i not in ended}
                raise AssertionError(
                    f"{len(stuck)} run(s) did not end within {timeout:.0f} s: "
                    f"{json.dumps(stuck, indent=1)[:6000]}\n{self.logs()}"
                )
            time.sleep(0.2)

    def wait_for_node(self, job_run_id: str, node_id: str, status: str) -> dict[str, Any]:
        return self.wait_for(
            job_run_id,
            f"node {node_id!r} reaching {status!r}",
            lambda run: run["nodes"][node_id]["status"] == status,
        )


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
