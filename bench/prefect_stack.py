"""The services the Prefect benchmark owns: a Prefect server and worker beside figway's stack.

:class:`PrefectBenchStack` creates a PostgreSQL database for a Prefect server
(``prefect_bench_<random>``) and starts ``prefect server start`` on it, on a
free loopback port, with its own ``PREFECT_HOME``. Inside it runs a
:class:`~bench.stack.BenchStack` (figway's own database
``figway_bench_p_<random>``, a Redis db of its own, ``figway db upgrade`` and
``figway serve``) whose processes talk to that server, after
``figway setup prefect`` has created figway's pools and deployments there;
on demand, one ``prefect worker start --pool default-worker-pool``.

Leaving the ``with`` block (normally, on an error or on Ctrl-C) stops the
worker, the gateway and the server by process group, escalating to SIGKILL
(an idle Prefect worker ignores the first SIGTERM), and drops both databases.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.stack import (
    BenchStack,
    ManagedProcess,
    OwnedStack,
    StackConfig,
    StackError,
    create_database,
    drop_database,
    free_port,
    wait_until_answers,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

__all__ = ["WORKER_POOL", "PrefectBenchStack", "PrefectStackConfig"]

#: The work pool of figway's ``default`` pool, which the benchmark's runs go to.
WORKER_POOL = "default-worker-pool"
#: How long the server, the gateway and the worker may take to come up.
START_TIMEOUT_SECONDS = 120.0
#: An idle `prefect worker start` ignores the first SIGTERM: SIGKILL after this long.
WORKER_STOP_GRACE_SECONDS = 4.0


@dataclass(frozen=True)
class PrefectStackConfig:
    pg_admin_url: str = StackConfig.pg_admin_url
    redis_url: str = StackConfig.redis_url
    redis_db: int = 13
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    #: How often the worker asks the server for runs (Prefect's default is 10 s).
    worker_query_seconds: float = 1.0
    #: The gateway's FIGWAY_NODE_SILENCE_SECONDS (see :class:`PrefectBenchStack`).
    node_silence_seconds: float = 3_600.0
    #: Extra variables for `figway setup prefect`, the gateway and the worker (whose
    #: flow-run processes inherit them): secrets, the artifact store.
    extra_env: Mapping[str, str] = field(default_factory=dict)


class PrefectBenchStack(OwnedStack):
    """A Prefect server, figway's gateway on it, and a worker (a context manager).

    The gateway runs with a long ``FIGWAY_NODE_SILENCE_SECONDS``: the submit part
    leaves hundreds of runs queued on purpose (no worker runs then), and figway's
    reconciler would otherwise ask Prefect about every one of them every few
    seconds for the rest of the benchmark, loading the gateway and the server
    while the end-to-end part is measured.
    """

    def __init__(self, config: PrefectStackConfig) -> None:
        self.config = config
        self.database = f"prefect_bench_{uuid.uuid4().hex[:8]}"
        admin_base = config.pg_admin_url.rsplit("/", 1)[0]
        self.database_url = (
            admin_base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{self.database}"
        )
        self.workdir = Path(tempfile.mkdtemp(prefix="figway-bench-prefect-"))
        self.home = self.workdir / "prefect-home"
        self.home.mkdir()
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        #: What a Prefect client (this process, the gateway, the worker) needs.
        self.client_env = {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        self.figway = BenchStack(
            StackConfig(
                pg_admin_url=config.pg_admin_url,
                redis_url=config.redis_url,
                redis_db=config.redis_db,
                database_prefix="figway_bench_p_",
                strip_env_prefixes=("FIGWAY_", "PREFECT_"),
                extra_env={
                    **config.extra_env,
                    **self.client_env,
                    "FIGWAY_NODE_SILENCE_SECONDS": f"{config.node_silence_seconds:g}",
                    "COLUMNS": "200",  # Prefect's CLI draws tables as wide as the terminal says
                },
            )
        )
        self.setup_output = ""
        self._server: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self._created_database = False
        self._figway_started = False
        self._failed = False

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self) -> None:
        create_database(self.config.pg_admin_url, self.database)
        self._created_database = True
        server_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("FIGWAY_", "PREFECT_"))
        }
        server_env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.database_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        argv = [self._bin("prefect"), "server", "start", "--host", "127.0.0.1"]
        self._server = ManagedProcess(
            "prefect-server",
            [*argv, "--port", str(self.port)],
            env=server_env,
            workdir=self.workdir,
        )
        wait_until_answers(
            self._server,
            f"{self.api_url}/health",
            "`prefect server start`",
            timeout=START_TIMEOUT_SECONDS,
        )
        # Before `figway serve`: its /readyz answers 503 while Prefect lacks figway's pools.
        setup = subprocess.run(
            [self._bin("figway"), "setup", "prefect"],
            cwd=self.workdir,
            env=self.figway.env(),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
        if setup.returncode != 0:
            raise StackError(f"`figway setup prefect` failed:\n{setup.stdout}{setup.stderr}")
        self.setup_output = setup.stdout.strip()
        self.figway.__enter__()  # figway's database, Redis db, `db upgrade`, `serve`
        self._figway_started = True

    def close(self) -> None:
        """Stop the worker, the gateway and the server; drop both databases (safe to repeat).

        Every step runs even when an earlier one fails.
        """
        with contextlib.ExitStack() as steps:  # run last-in, first-out
            steps.callback(self._drop_database)
            steps.callback(self._stop_server)
            steps.callback(self._stop_figway)
            steps.callback(self.stop_worker)
        self._clear_workdir("Prefect logs")

    def _stop_figway(self) -> None:
        if self._figway_started:
            self._figway_started = False
            if self._failed:
                self.figway.__exit__(StackError, None, None)  # keeps its logs
            else:
                self.figway.__exit__(None, None, None)

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=15.0, family=True)
            self._server = None

    def _drop_database(self) -> None:
        if self._created_database:
            drop_database(self.config.pg_admin_url, self.database)
            self._created_database = False

    # -- worker ------------------------------------------------------------------------

    def start_worker(self) -> None:
        """Start one ``prefect worker start --pool default-worker-pool``; wait until it is online."""
        if self.worker is not None:
            raise StackError("the worker is already running")
        env = self.figway.env()  # FIGWAY_DATABASE_URL for figway's flow, PYTHONPATH for ours
        env["PREFECT_WORKER_QUERY_SECONDS"] = f"{self.config.worker_query_seconds:g}"
        name = f"bench-{uuid.uuid4().hex[:6]}"
        self.worker = ManagedProcess(
            "prefect-worker",
            [self._bin("prefect"), "worker", "start", "--pool", WORKER_POOL, "--name", name],
            env=env,
            workdir=self.workdir,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with self.client() as client:
            while True:
                if not self.worker.alive:
                    raise StackError(f"`prefect worker start` exited:\n{self.worker.tail()}")
                workers = client.read_workers_for_work_pool(WORKER_POOL)
                if any(
                    w.name == name and str(w.status).upper().endswith("ONLINE") for w in workers
                ):
                    return
                if time.monotonic() > deadline:
                    raise StackError(f"the Prefect worker is not online:\n{self.worker.tail()}")
                time.sleep(0.25)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop(timeout=WORKER_STOP_GRACE_SECONDS, family=True)
            self.worker = None

    def worker_busy(self) -> bool:
        """True while the worker has a child process (a flow run being started or run)."""
        return self.worker is not None and bool(self.worker.children())

    # -- Prefect API -------------------------------------------------------------------

    @contextlib.contextmanager
    def as_client(self) -> Iterator[None]:
        """This process's PREFECT_* variables point at this server for the block.

        A Prefect client reads its settings when prefect is first imported: the
        block refuses to start once something imported it.
        """
        if "prefect" in sys.modules and os.environ.get("PREFECT_API_URL") != self.api_url:
            raise StackError("prefect was imported before the benchmark could configure it")
        saved = {name: os.environ.get(name) for name in self.client_env}
        os.environ.update(self.client_env)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def client(self) -> SyncPrefectClient:
        """A Prefect client of this server (``PREFECT_API_URL`` must be set in this process)."""
        from prefect.client.orchestration import get_client

        if os.environ.get("PREFECT_API_URL") != self.api_url:
            raise StackError("set this process's PREFECT_* variables from client_env first")
        return get_client(sync_client=True)

    def delete_flow_runs(self, state_types: Iterable[str]) -> int:
        """Delete every flow run in one of ``state_types`` (50 per call); returns how many."""
        body: dict[str, Any] = {
            "flow_runs": {"state": {"type": {"any_": list(state_types)}}},
            "limit": 50,
        }
        deleted = 0
        with httpx.Client(base_url=self.api_url, timeout=60.0) as http:
            while True:
                response = http.post("/flow_runs/bulk_delete", json=body)
                response.raise_for_status()
                batch = response.json()["deleted"]
                if not batch:
                    return deleted
                deleted += len(batch)

    def server_version(self) -> str | None:
        with httpx.Client(base_url=self.api_url, timeout=10.0) as http:
            response = http.get("/admin/version")
            return str(response.json()) if response.status_code == 200 else None

    # -- helpers -----------------------------------------------------------------------

    def _bin(self, program: str) -> str:
        path = self.config.bin_dir / program
        if not path.exists():
            raise StackError(f"{path} not found: install figway's virtualenv (`make bench` does)")
        return str(path)
