"""A real Prefect 3 server and worker for the tests, started once per test session.

``prefect server start`` runs on a PostgreSQL database of its own (created here,
dropped at the end), ``figway setup prefect`` creates figway's work pools and
deployments on it, and one ``prefect worker start --pool default-worker-pool``
picks up flow runs; the flow-run processes it starts record into the session's
figway database (``FIGWAY_DATABASE_URL``). The contract suite
(``tests/contract``) and the integration tests (``tests/integration``) share
the one server and worker: each test module defines a session fixture that
enters :func:`shared_prefect_services`, which starts everything for the first
module and stops it after the last one.

Every process leads a session of its own and logs to a file that failing tests
print; they are SIGKILLed at the end (a Prefect worker ignores the first
SIGTERM while it is idle), whatever the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

from tests.support.policy import test_policy_env
from tests.support.processes import (
    LoggedProcess,
    command_line,
    descendants,
    free_port,
    process_alive,
)

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun, StateType

__all__ = [
    "BIN",
    "PG_ADMIN_URL",
    "PrefectServices",
    "descendants",
    "flow_runs_of",
    "own_prefect_services",
    "service_env",
    "shared_prefect_services",
]

BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "FIGWAY_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: The one pool the session's worker serves; the others have no worker on purpose.
WORKER_POOL = "default-worker-pool"
#: How long the server, the setup and the worker may take to come up.
START_DEADLINE_SECONDS = 120.0


def service_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without FIGWAY_* and PREFECT_* settings, plus ``settings``.

    The test process points Prefect at its own ephemeral API; nothing of that may
    leak into a server, a worker or a CLI call.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIGWAY_", "PREFECT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"  # Prefect's CLI draws tables as wide as the terminal says
    # The session's shared artifact store (tests/conftest.py), as every worker's would be;
    # outside the tests (the fault benchmark) ``settings`` names one.
    if "FIGWAY_TEST_ARTIFACT_URL" in os.environ:
        env["FIGWAY_ARTIFACT_URL"] = os.environ["FIGWAY_TEST_ARTIFACT_URL"]
    env.update(test_policy_env())
    env["FIGWAY_AUTH"] = "off"  # access control has tests of its own
    env.update(settings)
    return env


def flow_runs_of(client: SyncPrefectClient, job_run_id: str) -> list[FlowRun]:
    """figway's flow runs of one figway run: named after it and tagged ``figway``."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        FlowRunFilterTags,
    )

    return list(
        client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[job_run_id]),
                tags=FlowRunFilterTags(all_=["figway"]),
            )
        )
    )


@dataclass
class PrefectServices:
    """The running Prefect server and worker, and how to reach them."""

    api_url: str
    home: Path
    log_dir: Path
    figway_database_url: str
    server: LoggedProcess
    database: str
    worker: LoggedProcess | None = None
    #: What the session's first `figway setup prefect` printed (on an empty server).
    first_setup_output: str = ""
    #: How the server and the worker were started, so a fault test can start them again.
    server_argv: list[str] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)
    worker_argv: list[str] = field(default_factory=list)
    worker_env: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def env(self, settings: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a process that talks to this server."""
        return service_env(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_HOME": str(self.home),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                **(settings or {}),
            }
        )

    @contextlib.contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """Prefect's own client on this server (whatever the test process's settings say)."""
        from prefect.client.orchestration import SyncPrefectClient

        with SyncPrefectClient(self.api_url) as client:
            yield client

    def flow_runs(self, job_run_id: str) -> list[FlowRun]:
        with self.client() as client:
            return flow_runs_of(client, job_run_id)

    def flow_run_state(self, job_run_id: str) -> StateType | None:
        """The state type of the run's one flow run (None while it has none)."""
        runs = self.flow_runs(job_run_id)
        assert len(runs) <= 1, f"{len(runs)} Prefect flow runs for {job_run_id}: {runs}"
        return runs[0].state_type if runs else None

    def wait_for_flow_run_state(
        self,
        job_run_id: str,
        wanted: StateType,
        *,
        timeout: float = 60,
        context: Callable[[], str] = lambda: "",
    ) -> None:
        """Poll the run's flow run until it is ``wanted``; fail with its history otherwise."""
        deadline = time.monotonic() + timeout
        while (state := self.flow_run_state(job_run_id)) != wanted:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the Prefect flow run of {job_run_id} is {state}, not {wanted}, after "
                    f"{timeout:.0f} s\n{self.describe(job_run_id)}\n{context()}"
                )
            time.sleep(0.2)

    def describe(self, job_run_id: str) -> str:
        """The run's flow runs and their state history, for failure messages."""
        try:
            with self.client() as client:
                lines = []
                for flow_run in flow_runs_of(client, job_run_id):
                    history = [
                        f"{s.type.value}({s.name}: {s.message or ''})"
                        for s in client.read_flow_run_states(flow_run.id)
                    ]
                    lines.append(f"flow run {flow_run.id}: {' -> '.join(history)}")
        except Exception as exc:  # a failure message must not fail itself
            return f"(cannot read the Prefect flow runs of {job_run_id}: {exc})"
        return "\n".join(lines) or f"(no Prefect flow run named {job_run_id})"

    def engine_processes(self) -> list[int]:
        """The live `python -m prefect.engine` flow-run processes the worker started."""
        assert self.worker is not None
        return [
            pid
            for pid in descendants(self.worker.pid)
            if "prefect.engine" in command_line(pid) and process_alive(pid)
        ]

    def unfinished_flow_runs(self) -> list[FlowRun]:
        """figway's flow runs that are not in a final state."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import TERMINAL_STATES

        with self.client() as client:
            return list(
                client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        tags=FlowRunFilterTags(all_=["figway"]),
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(not_any_=list(TERMINAL_STATES))
                        ),
                    )
                )
            )

    def settle(self, timeout: float) -> list[str]:
        """Wait until no figway flow run is unfinished and no flow-run process runs.

        Returns what was still there after ``timeout`` s, having SIGKILLed those
        processes and cancelled those flow runs, so that nothing of one test can
        record into the next test's runs or wait for the worker.
        """
        from prefect.states import Cancelled

        deadline = time.monotonic() + timeout
        while True:
            unfinished = self.unfinished_flow_runs()
            processes = self.engine_processes()
            if not unfinished and not processes:
                return []
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with self.client() as client:
            for flow_run in unfinished:
                client.set_flow_run_state(flow_run.id, Cancelled(), force=True)
        return [
            *(f"flow run {r.name} ({r.state_type}), cancelled now" for r in unfinished),
            *(f"flow-run process {pid}, killed now" for pid in processes),
        ]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `figway ...` or `prefect ...` (the first argument) against this server."""
        program, *rest = args
        return subprocess.run(
            [str(BIN / program), *rest],
            env=self.env(),
            cwd=self.log_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self, lines: int = 40) -> str:
        processes = [p for p in (self.server, self.worker) if p is not None]
        return "\n".join(
            f"--- prefect {p.name} (pid {p.pid}) ---\n{p.tail(lines)}" for p in processes
        )

    def kill_server(self) -> None:
        """SIGKILL the server (an outage: clients are refused from now on)."""
        self.server.kill_everything()

    def start_server(self) -> None:
        """Start the server again, on its port and database, and wait until it is healthy."""
        assert not self.server.running(), "kill_server() first"
        self.server = LoggedProcess.start(
            "server", self.server_argv, env=self.server_env, log_dir=self.log_dir
        )
        _wait_healthy(self)

    def kill_worker(self) -> None:
        """SIGKILL the worker with every process below it (its flow-run processes too)."""
        assert self.worker is not None
        self.worker.kill_everything()

    def start_worker(self) -> None:
        """Start the worker again and wait until the server lists it online."""
        self.worker = LoggedProcess.start(
            "worker", self.worker_argv, env=self.worker_env, log_dir=self.log_dir
        )
        _wait_worker_online(self)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.kill_everything()
        self.server.stop()


def _create_database() -> tuple[str, str]:
    """A new PostgreSQL database for the Prefect server: (name, asyncpg URL)."""
    name = f"figway_prefect_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    server_url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{server_url}/{name}"


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait_healthy(services: PrefectServices) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    with httpx.Client(timeout=5) as http:
        while True:
            if not services.server.running():
                raise RuntimeError(f"`prefect server start` exited:\n{services.server.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if http.get(f"{services.api_url}/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Prefect server was not healthy within {START_DEADLINE_SECONDS:.0f} s\n"
                    f"{services.server.tail()}"
                )
            time.sleep(0.25)


def _wait_worker_online(services: PrefectServices) -> None:
    assert services.worker is not None
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while True:
        if not services.worker.running():
            raise RuntimeError(f"`prefect worker start` exited:\n{services.worker.tail()}")
        with services.client() as client:
            workers = client.read_workers_for_work_pool(WORKER_POOL)
        if any(str(w.status).upper().endswith("ONLINE") for w in workers):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the Prefect worker was not online within {START_DEADLINE_SECONDS:.0f} s\n"
                f"{services.worker.tail()}"
            )
        time.sleep(0.25)


def start_prefect_services(
    figway_database_url: str,
    log_dir: Path,
    *,
    database_port: int | None = None,
    worker_settings: Mapping[str, str] | None = None,
) -> PrefectServices:
    """Start the server on a fresh database, set figway up on it, start the worker.

    ``database_port``: the server reaches PostgreSQL through this loopback port (a
    proxy a fault test can cut) instead of PostgreSQL's own. ``worker_settings``:
    more variables for the worker, which its flow-run processes inherit.
    """
    database, server_database_url = _create_database()
    if database_port is not None:
        server_database_url = re.sub(
            r"@[^/@]+/", f"@127.0.0.1:{database_port}/", server_database_url, count=1
        )
    port = free_port()
    home = log_dir / "prefect-home"
    home.mkdir(exist_ok=True)
    server: LoggedProcess | None = None
    services: PrefectServices | None = None
    try:
        env = service_env(
            {
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": server_database_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
            }
        )
        server_argv = [
            *(str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
        ]
        server = LoggedProcess.start("server", server_argv, env=env, log_dir=log_dir)
        services = PrefectServices(
            api_url=f"http://127.0.0.1:{port}/api",
            home=home,
            log_dir=log_dir,
            figway_database_url=figway_database_url,
            server=server,
            database=database,
            server_argv=server_argv,
            server_env=env,
        )
        _wait_healthy(services)
        setup = services.cli("figway", "setup", "prefect")
        if setup.returncode != 0:
            raise RuntimeError(f"`figway setup prefect` failed:\n{setup.stdout}{setup.stderr}")
        services.first_setup_output = setup.stdout
        services.worker_argv = [str(BIN / "prefect"), "worker", "start", "--pool", WORKER_POOL]
        services.worker_env = services.env(
            {
                "FIGWAY_DATABASE_URL": figway_database_url,
                "FIGWAY_HEARTBEAT_SECONDS": "0.5",
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                **(worker_settings or {}),
            }
        )
        services.start_worker()
    except BaseException:
        if services is not None:
            services.close()
        elif server is not None:
            server.stop()
        _drop_database(database)
        raise
    return services


@contextlib.contextmanager
def own_prefect_services(
    figway_database_url: str,
    log_dir: Path,
    *,
    database_port: int | None = None,
    worker_settings: Mapping[str, str] | None = None,
) -> Iterator[PrefectServices]:
    """A Prefect server and worker of the caller's own, which it may kill and restart
    (the fault tests, the fault benchmark); stopped and their database dropped on the way out."""
    services = start_prefect_services(
        figway_database_url,
        log_dir,
        database_port=database_port,
        worker_settings=worker_settings,
    )
    try:
        yield services
    finally:
        try:
            services.close()
        finally:
            _drop_database(services.database)


# -- one server for the whole session ---------------------------------------------------------

_shared: dict[str, Any] = {"services": None, "users": 0}
_shared_lock = threading.Lock()


@contextlib.contextmanager
def shared_prefect_services(figway_database_url: str, log_dir: Path) -> Iterator[PrefectServices]:
    """The session's Prefect server and worker: started by the first user, stopped by the last.

    Each test module's session-scoped fixture enters this, so the modules share
    one server even though pytest keeps one fixture per module.
    """
    with _shared_lock:
        services: PrefectServices | None = _shared["services"]
        if services is None:
            services = start_prefect_services(figway_database_url, log_dir)
            _shared["services"] = services
        elif services.figway_database_url != figway_database_url:
            raise RuntimeError("the Prefect worker records into another figway database")
        _shared["users"] += 1
    try:
        yield services
    finally:
        with _shared_lock:
            _shared["users"] -= 1
            if _shared["users"] == 0:
                _shared["services"] = None
                try:
                    services.close()
                finally:
                    _drop_database(services.database)


def setup_lines(output: str) -> dict[str, str]:
    """`figway setup prefect` output as {"work pool NAME" or "deployment NAME": action}.

    >>> setup_lines("work pool a: created (process, concurrency 10)\\ndeployment f/d: unchanged")
    {'work pool a': 'created', 'deployment f/d': 'unchanged'}
    """
    found = {}
    for line in output.splitlines():
        subject, _, rest = line.partition(": ")
        if rest:
            found[subject] = rest.split(" ", 1)[0]
    return found


def cli_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a `prefect ... --output json` call printed (failing with its output if not)."""
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not JSON ({exc}):\n{result.stdout}{result.stderr}") from exc
