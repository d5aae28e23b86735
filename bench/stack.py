"""The services a benchmark run owns: its database, its Redis db, the gateway and the workers.

:class:`BenchStack` creates a PostgreSQL database of its own, flushes one Redis
logical database, migrates with ``figway db upgrade``, serves the API with
``figway serve`` on a free loopback port and starts ``figway worker rq``
processes on demand. Leaving the ``with`` block (normally, on an error or on
Ctrl-C) stops every process it started, flushes the Redis db and drops the
database.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx
import psycopg
from psycopg import sql
from redis import Redis
from rq import Worker
from sqlalchemy.engine import make_url

__all__ = [
    "BenchStack",
    "ManagedProcess",
    "OwnedStack",
    "StackConfig",
    "StackError",
    "create_database",
    "descendants",
    "drop_database",
    "free_port",
    "rss_kb",
    "status_kb",
    "wait_until_answers",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: How long `figway serve` may take to answer /readyz.
READY_TIMEOUT_SECONDS = 60.0

#: The plain table the legacy-style baseline inserts one row into per submission.
LEGACY_TABLE_DDL = """
CREATE TABLE legacy_runs (
    id           bigserial PRIMARY KEY,
    job_run_id   text NOT NULL UNIQUE,
    workflow_id  text NOT NULL,
    workspace_id text NOT NULL,
    folder_id    text NOT NULL,
    job_id       text NOT NULL,
    status       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
)
"""


class StackError(RuntimeError):
    """A service of the benchmark did not start or answer."""


@dataclass(frozen=True)
class StackConfig:
    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379"
    redis_db: int = 12
    figway: Path = field(default_factory=lambda: Path(sys.executable).with_name("figway"))
    #: Name prefix of the database the stack creates (a random suffix follows).
    database_prefix: str = "figway_bench_"
    #: Variables of this process that the stack's processes do not inherit.
    strip_env_prefixes: tuple[str, ...] = ("FIGWAY_",)
    #: Extra variables for `figway db upgrade`, `figway serve` and the workers.
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: A loopback port the gateway and workers reach PostgreSQL through (a link the fault
    #: benchmark cuts); None: straight to the server of ``pg_admin_url``.
    database_port: int | None = None


class ManagedProcess:
    """A child process in a session of its own, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the benchmark only; it stops us in order
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0, *, family: bool = False) -> None:
        """SIGTERM (a warm shutdown for RQ workers), then SIGKILL to the group if it hangs.

        With ``family`` the SIGTERM goes to the whole process group, and whatever
        is left after ``timeout`` is SIGKILLed: the group and every descendant,
        including those that lead sessions of their own (a Prefect worker's
        flow-run processes).
        """
        if self.alive:
            kin = descendants(self.popen.pid) if family else []
            with contextlib.suppress(ProcessLookupError):
                if family:
                    os.killpg(self.popen.pid, signal.SIGTERM)
                else:
                    self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            for pid in [*kin, *(descendants(self.popen.pid) if self.alive else [])]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()

    def children(self) -> list[int]:
        """Every live process below this one (read from /proc)."""
        return descendants(self.popen.pid) if self.alive else []

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class OwnedStack:
    """What every benchmark stack shares: a ``with`` block that always tears down.

    A subclass starts its services in ``_start`` and stops them in ``close``
    (which must be safe to repeat and to call after a partial start); a failed
    start or a ``with`` block left by an exception keeps the process logs in
    ``workdir``, a clean exit removes them.
    """

    workdir: Path
    _failed: bool = False

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._failed = True
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._failed = self._failed or exc_type is not None
        self.close()

    def _start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _clear_workdir(self, what: str) -> None:
        if self._failed:
            print(f"{what} kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


class BenchStack(OwnedStack):
    """The database, Redis db and processes of one benchmark run (a context manager)."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.database = f"{config.database_prefix}{uuid.uuid4().hex[:8]}"
        self.database_url = config.pg_admin_url.rsplit("/", 1)[0] + f"/{self.database}"
        self.redis_url = f"{config.redis_url.rstrip('/')}/{config.redis_db}"
        self.redis = Redis.from_url(self.redis_url)
        self.workdir = Path(tempfile.mkdtemp(prefix="figway-bench-"))
        self.api_url = ""
        self._server: ManagedProcess | None = None
        self._workers: list[ManagedProcess] = []
        self._created_database = False
        self._failed = False

    @property
    def figway(self) -> BenchStack:
        """figway's part of the stack: all of it (a Prefect stack holds one beside its server)."""
        return self

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self) -> None:
        if not self.config.figway.exists():
            raise StackError(f"{self.config.figway} not found: run `make bench` (it installs it)")
        create_database(self.config.pg_admin_url, self.database)
        self._created_database = True
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(LEGACY_TABLE_DDL)
        self.redis.flushdb()
        upgrade = subprocess.run(
            [str(self.config.figway), "db", "upgrade"],
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if upgrade.returncode != 0:
            raise StackError(f"`figway db upgrade` failed:\n{upgrade.stdout}{upgrade.stderr}")
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        serve = [str(self.config.figway), "serve", "--port", str(port)]
        # The legacy WebSocket endpoint gets a free port too: its default may be taken.
        serve += ["--ws-port", str(free_port()), "--log-level", "warning"]
        self._server = ManagedProcess(
            "serve",
            serve,
            env=self.env(),
            workdir=self.workdir,
        )
        wait_until_answers(
            self._server, f"{self.api_url}/readyz", "`figway serve`", timeout=READY_TIMEOUT_SECONDS
        )

    def close(self) -> None:
        """Stop every process, flush the Redis db, drop the database (safe to repeat)."""
        try:
            self.stop_workers()
            if self._server is not None:
                self._server.stop()
                self._server = None
            self.redis.flushdb()
        finally:
            self.redis.close()
            if self._created_database:
                drop_database(self.config.pg_admin_url, self.database)
                self._created_database = False
        self._clear_workdir("process logs")

    # -- workers -----------------------------------------------------------------------

    def start_workers(self, count: int, *, simple: bool, timeout: float = 60.0) -> None:
        """Start ``count`` ``figway worker rq`` processes and wait until RQ lists them all."""
        if self._workers:
            raise StackError("workers are already running; stop them first")
        kind = "simple" if simple else "fork"
        for index in range(count):
            name = f"bench-{kind}-{index}-{uuid.uuid4().hex[:6]}"
            argv = [str(self.config.figway), "worker", "rq", "--name", name]
            if simple:
                argv.append("--simple")
            self._workers.append(
                ManagedProcess(f"worker-{kind}-{index}", argv, env=self.env(), workdir=self.workdir)
            )
        deadline = time.monotonic() + timeout
        while Worker.count(connection=self.redis) < count:
            for process in self._workers:
                if not process.alive:
                    raise StackError(f"{process.name} exited:\n{process.tail()}")
            if time.monotonic() > deadline:
                raise StackError(
                    f"only {Worker.count(connection=self.redis)} of {count} workers came up"
                )
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        """The process ids of the running ``figway worker rq`` processes."""
        return [process.popen.pid for process in self._workers if process.alive]

    def worker_rss_kb(self) -> list[int]:
        """Resident memory of each worker process (what a fork has to map into every work horse)."""
        return [rss for process in self._workers if (rss := rss_kb(process.popen.pid)) is not None]

    def stop_workers(self) -> None:
        for process in self._workers:
            if process.alive:
                process.popen.send_signal(signal.SIGTERM)  # all at once, then wait for each
        for process in self._workers:
            process.stop()
        self._workers = []

    # -- helpers -----------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of the stack's processes.

        This process's, less the variables of ``strip_env_prefixes``, plus ``extra_env``
        and the stack's own database, Redis db and ``PYTHONPATH``.
        """
        strip = self.config.strip_env_prefixes
        env = {k: v for k, v in os.environ.items() if not k.startswith(strip)}
        # The benchmarks measure the paths, not key checks: the API is open to them.
        env["FIGWAY_AUTH"] = "off"
        env.update(self.config.extra_env)
        env["FIGWAY_DATABASE_URL"] = self.linked_database_url()
        env["FIGWAY_REDIS_URL"] = self.redis_url
        # The workers import the baseline's job function from this checkout's `bench` package.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def linked_database_url(self) -> str:
        """The database's URL as the stack's processes reach it (through the link, if any)."""
        if self.config.database_port is None:
            return self.database_url
        return str(
            make_url(self.database_url)
            .set(host="127.0.0.1", port=self.config.database_port)
            .render_as_string(hide_password=False)
        )

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker ``index`` and its work horse, then start it again under its name.

        What a supervisor (systemd, compose's ``restart:``) does after a crash; returns
        the pid that was killed.
        """
        process = self._workers[index]
        pid = process.popen.pid
        for child in process.children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        process.popen.wait(10)
        process.stop()  # closes its log
        self._workers[index] = ManagedProcess(
            f"{process.name}-again", process.popen.args, env=self.env(), workdir=self.workdir
        )
        return pid


def rss_kb(pid: int) -> int | None:
    """VmRSS of a process in KiB, from /proc (None when it cannot be read)."""
    return status_kb(pid).get("VmRSS")


def status_kb(pid: int) -> dict[str, int]:
    """Every KiB figure of ``/proc/<pid>/status`` (VmRSS, VmHWM, RssAnon, RssFile, ...).

    Empty when the process is gone or /proc cannot be read.
    """
    figures: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return figures
    for line in lines:
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            figures[key] = int(parts[0])
    return figures


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), read from /proc."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(kid) for kid in children.read_text().split()]
            except (OSError, ValueError):
                continue  # the thread or process ended meanwhile
            found.extend(kids)
            frontier.extend(kids)
    return found


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def create_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE ``name`` on the server of ``admin_url``."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE ``name`` with whatever is still connected to it (safe to repeat)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def wait_until_answers(server: ManagedProcess, url: str, what: str, *, timeout: float) -> None:
    """Poll ``url`` until it answers 200; StackError when ``server`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5.0) as client:
        while True:
            if not server.alive:
                raise StackError(f"{what} exited:\n{server.tail()}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"{what} not ready after {timeout:.0f} s:\n{server.tail()}")
            time.sleep(0.2)
