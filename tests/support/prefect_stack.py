"""figway in production shape with its Prefect backend, for the integration tests.

A :class:`PrefectStack` is the integration suite's :class:`~figway_stack.Stack`
(`figway serve` on PostgreSQL and Redis, driven over HTTP) whose gateway also
talks to the session's Prefect server, whose `prefect worker start` serves the
default pool. The server and worker come from ``tests/support/prefect_services.py``
and are shared with the contract suite: one of each per test session.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from backends.store import Store, create_database_engine
from backends.store.models import Base
from tests.support.figway_stack import Stack
from tests.support.prefect_services import PrefectServices

__all__ = ["SETTLE_DEADLINE_SECONDS", "PrefectStack", "prefect_stack"]

#: How long a finished test may wait for its flow runs to settle before the next test.
SETTLE_DEADLINE_SECONDS = 30.0


@dataclass
class PrefectStack(Stack):
    """A gateway on the real services whose Prefect backend is the session's server."""

    prefect: PrefectServices | None = None

    @property
    def services(self) -> PrefectServices:
        assert self.prefect is not None
        return self.prefect

    def explain(self, job_run_id: str) -> str:
        return f"{super().explain(job_run_id)}\n\n{self.services.describe(job_run_id)}"

    def logs(self) -> str:
        return f"{super().logs()}\n{self.services.logs()}"


def _truncate(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@contextmanager
def prefect_stack(
    *,
    database_url: str,
    redis_url: str,
    log_dir: Path,
    services: PrefectServices,
    settings: Mapping[str, str] | None = None,
    rules: str | None = None,
) -> Iterator[PrefectStack]:
    """A running gateway whose PREFECT_API_URL is the session's server; cleaned before and after.

    ``rules``: the content of its routing rules file.

    On the way out every process of the stack is stopped, and the test's flow runs
    must have settled (final, no flow-run process left) before the database is emptied.
    """
    engine = create_database_engine(database_url)
    _truncate(engine)
    if rules is not None:  # the gateway's routing rules file, written into its folder
        (log_dir / "routing_rules.yaml").write_text(rules)
        settings = {"FIGWAY_ROUTING_RULES": str(log_dir / "routing_rules.yaml"), **(settings or {})}
    running = PrefectStack(
        database_url=database_url,
        redis_url=redis_url,
        log_dir=log_dir,
        settings={
            "PREFECT_API_URL": services.api_url,
            "PREFECT_HOME": str(services.home),
            **(settings or {}),
        },
        prefect=services,
    )
    try:
        running.start_gateway()
        yield running
    finally:
        running.close()
        # Runs the test left unfinished (it failed half-way) are failed, which stops their
        # nodes, so their flow runs end instead of running on into the next test.
        Store(engine).abandon_active_runs(reason="the test ended before the run did")
        unfinished = services.settle(SETTLE_DEADLINE_SECONDS)
        _truncate(engine)
        engine.dispose()
        if unfinished:
            raise AssertionError(
                f"Prefect work still unfinished {SETTLE_DEADLINE_SECONDS:.0f} s after the "
                f"test: {unfinished}\n{services.logs()}"
            )
