"""The composition root: builds the store, the node runtime, the executors and the
gateway's services from settings, and starts and stops its background work.

``figway serve`` (through the app factory), ``figway worker`` and every CLI command
that talks to a backend start here, so the gateway, the workers and the commands
always agree on the database, the node types and the backends. Nothing else
constructs a concrete executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry
from redis import Redis
from sqlalchemy import Engine

from backends.contract import Executor
from backends.model.backend_names import LEGACY_BACKEND
from backends.model.errors import BackendRejectedError, BackendUnavailableError, FigwayError
from backends.model.status import RunStatus
from backends.model.workflow import POOLS
from backends.nodes import NodeRegistry, default_registry
from backends.prefect.executor import PrefectExecutor
from backends.rq.embedded import EmbeddedWorkers
from backends.rq.executor import NodeStates, RQExecutor
from backends.runtime.attempts import NodeRuntime
from backends.runtime.bootstrap import install_runtime
from backends.store import Store, create_database_engine, ensure_migrated
from backends.store.api_keys import ApiKeys
from backends.store.artifact_records import ArtifactRecords
from backends.store.journal import Journal
from backends.store.metric_records import MetricRecords
from backends.store.models import RUN_LEVEL
from backends.store.rollout_records import RolloutRecords
from backends.store.routing_records import RoutingRecords
from backends.store.run_retention import RunRetentionRecords
from backends.store.transactions import utcnow
from backends.store.views import LogRecord, RunView
from gateway.config import Settings
from gateway.dispatch.dispatcher import Dispatcher
from gateway.dispatch.reconcile import Reconciler
from gateway.live.feed import RunFeed
from gateway.live.listener import NotificationListener
from gateway.metrics.ledger import LedgerCollector, MetricsLedger
from gateway.metrics.process import GatewayMetrics
from gateway.routing.guard import GuardKeeper
from gateway.routing.promotion import RolloutKeeper
from gateway.routing.shadow import ShadowComparer
from gateway.routing.source import RulesSource
from gateway.upkeep.artifact_janitor import ArtifactJanitor
from gateway.upkeep.backend_startup import BackendStartup
from gateway.upkeep.periodic import Periodic
from gateway.upkeep.run_retention import RunRetention

__all__ = ["Services", "build_executors", "build_services", "stop_ephemeral_prefect"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: Store
    node_types: NodeRegistry
    runtime: NodeRuntime
    redis: Redis
    executors: dict[str, Executor]
    records: RoutingRecords
    rules: RulesSource
    guards: GuardKeeper
    rollouts: RolloutKeeper
    shadows: ShadowComparer
    metrics: GatewayMetrics
    ledger: MetricsLedger
    registry: CollectorRegistry
    janitor: ArtifactJanitor
    journal: Journal
    keys: ApiKeys
    feed: RunFeed
    dispatcher: Dispatcher
    reconciler: Reconciler
    listener: NotificationListener | None = None
    embedded_workers: EmbeddedWorkers | None = None
    #: Backends started in the background when the gateway starts, by name.
    startups: dict[str, BackendStartup] = field(default_factory=dict)
    # The runtime installed before this one (another gateway in the same process, in tests).
    previous_runtime: NodeRuntime | None = None
    _background: list[Periodic] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    def start_live_feed(self) -> None:
        """Start following the journal for WebSocket clients (and listening, on PostgreSQL)."""
        self.feed.start()
        if self.engine.dialect.name == "postgresql" and self.listener is None:
            self.listener = NotificationListener(
                self.settings.resolved_database_url(), self.feed.wake
            )
            self.listener.start()

    def start_backends(self) -> None:
        """Start, in the background, the in-process backends that take a while to come up:
        Prefect's temporary API (flows run in-process when no PREFECT_API_URL is set), so
        the first run sent to Prefect does not wait for it unannounced."""
        prefect = self.executors.get(PrefectExecutor.name)
        if not isinstance(prefect, PrefectExecutor) or not prefect.embedded:
            return
        if not self.settings.prefect_early_start:
            return
        if PrefectExecutor.name in self.startups:
            return
        startup = BackendStartup(
            PrefectExecutor.name, "Prefect's temporary API", prefect.start_ephemeral_api
        )
        self.startups[PrefectExecutor.name] = startup
        startup.begin()

    def waiting_for(self, run: RunView) -> str | None:
        """What ``run`` waits for while its backend is still starting; None: nothing."""
        startup = self.startups.get(run.backend)
        if startup is None or run.status not in (RunStatus.PENDING, RunStatus.QUEUED):
            return None
        return startup.waiting_for()

    def note_waiting(self, run: RunView) -> str | None:
        """Log on a new run what it waits for, if anything (its logs then say why it
        has not started); returns the same sentence as :meth:`waiting_for`."""
        waiting = self.waiting_for(run)
        if waiting is not None:
            self.store.append_logs(
                [
                    LogRecord(
                        run.job_run_id, RUN_LEVEL, 0, utcnow(), "INFO", f"waiting for {waiting}"
                    )
                ]
            )
        return waiting

    def start_embedded_workers(self) -> None:
        """Start in-process RQ workers (embedded default only)."""
        if not self.settings.embedded or self.embedded_workers is not None:
            return
        self.embedded_workers = EmbeddedWorkers(
            self.redis, POOLS, count=self.settings.embedded_workers
        )
        self.embedded_workers.start()

    def start_background(self) -> None:
        """Start the gateway's periodic work: reconciling, rules, guards, metrics, checks."""
        settings = self.settings
        self._background = [
            Periodic(
                "reconciler",
                self.reconciler.reconcile_once,
                interval_seconds=settings.reconcile_interval_seconds,
            ),
            # Beside the reconciler: what a backend shows of ended runs made to agree.
            Periodic(
                "agreement",
                self.agree_with_backends,
                interval_seconds=settings.reconcile_interval_seconds,
            ),
            Periodic(
                "routing", self.routing_upkeep, interval_seconds=settings.routing_reload_seconds
            ),
            Periodic("guards", self.judge_round, interval_seconds=settings.guard_interval_seconds),
            Periodic("metrics", self.metrics_round, interval_seconds=settings.metrics_fold_seconds),
            Periodic(
                "backend-checks",
                self.check_backends,
                interval_seconds=settings.backend_check_seconds,
            ),
            Periodic(
                "artifacts",
                self.janitor.purge_expired,
                interval_seconds=settings.artifact_cleanup_seconds,
            ),
        ]
        if settings.run_retention_days is not None:
            retention = RunRetention(
                RunRetentionRecords(self.engine),
                retention=timedelta(days=settings.run_retention_days),
            )
            self._background.append(
                Periodic(
                    "run-retention",
                    retention.delete_expired,
                    interval_seconds=settings.artifact_cleanup_seconds,
                )
            )
        for thread in self._background:
            thread.start()

    def routing_upkeep(self) -> None:
        """One round of keeping routing current: the file, trips and rollouts by any gateway,
        shadows."""
        self.rules.reload_if_changed()
        self.guards.refresh()
        self.metrics.rollouts(self.rollouts.sync(), self.rules.router.tripped)
        self.shadows.compare_finished()

    def judge_round(self) -> None:
        """One round of the judge: every guard, then every rollout in steps."""
        self.guards.check()
        self.rollouts.check()
        self.metrics.rollouts(self.rules.router.rollouts, self.rules.router.tripped)

    def metrics_round(self) -> None:
        """One round of the metrics ledger (fold finished runs if this gateway leads)."""
        self.ledger.round()
        self.metrics.leader.set(1 if self.ledger.leader else 0)

    def check_backends(self) -> None:
        """figway_backend_up, from each enabled backend's own health check."""
        rules = self.rules.document.rules
        for name, executor in self.executors.items():
            if rules.enabled(name):
                self.metrics.backend_up.labels(backend=name).set(1 if executor.health().up else 0)
            else:  # switched off: no series, rather than a stale 0 that keeps alerting
                with contextlib.suppress(KeyError):
                    self.metrics.backend_up.remove(name)

    def agree_with_backends(self) -> None:
        """One round of making each backend's view of ended runs agree with the record.

        A backend that cannot be reached is skipped until it is back: its outage is
        the backend check's to report (figway_backend_up, /readyz), not a warning a round.
        """
        for name, executor in self.executors.items():
            try:
                executor.agree_with_record()
            except BackendUnavailableError as exc:
                log.debug("%s: agreement waits for the backend: %s", name, exc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for thread in self._background:
            thread.stop()
        self.dispatcher.close()
        if self.listener is not None:
            self.listener.stop()
        self.feed.stop()
        if self.embedded_workers is not None:
            self.embedded_workers.stop()
        for executor in self.executors.values():
            executor.close()
        try:
            self.ledger.release()  # another gateway takes the ledger over at once
        except FigwayError as exc:
            log.warning("could not release the metrics lease: %s", exc)
        install_runtime(self.previous_runtime)
        self.engine.dispose()


def build_services(settings: Settings) -> Services:
    """Connect to the database (migrating the embedded one) and wire the backends."""
    engine = create_database_engine(settings.resolved_database_url())
    ensure_migrated(engine, auto_migrate=settings.should_auto_migrate())
    store = Store(engine)
    node_types = default_registry(settings.node_policy())
    artifacts = settings.artifact_store()
    runtime = NodeRuntime(
        store,
        node_types,
        heartbeat_seconds=settings.heartbeat_seconds,
        artifacts=artifacts,
        max_output_bytes=settings.max_output_bytes,
    )
    previous_runtime = install_runtime(runtime)
    redis = connect_redis(settings)
    executors = build_executors(
        settings,
        redis,
        run_status=lambda job_run_id: store.run_status(job_run_id=job_run_id),
        node_states=lambda job_run_id: store.node_states(job_run_id=job_run_id),
    )
    records = RoutingRecords(engine)
    journal = Journal(engine)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    rules = RulesSource.start(
        records=records,
        configured=settings.routing_rules,
        default_backend=settings.default_backend,
        on_reload=lambda applied: metrics.reloaded(applied=applied),
    )
    ledger = MetricsLedger(
        MetricRecords(engine), records, lease_seconds=settings.metrics_lease_seconds
    )
    registry.register(LedgerCollector(ledger))
    guards = GuardKeeper(rules.router, records)
    guards.refresh()
    rollouts = RolloutKeeper(rules.router, records, RolloutRecords(engine))
    rollouts.sync()
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        node_types=node_types,
        runtime=runtime,
        redis=redis,
        executors=executors,
        records=records,
        rules=rules,
        guards=guards,
        rollouts=rollouts,
        shadows=ShadowComparer(store, records),
        metrics=metrics,
        ledger=ledger,
        registry=registry,
        journal=journal,
        keys=ApiKeys(engine),
        dispatcher=Dispatcher(
            store=store,
            executors=executors,
            node_types=node_types,
            settings=settings,
            router=rules.router,
            metrics=metrics,
        ),
        reconciler=Reconciler(store=store, executors=executors, settings=settings),
        feed=RunFeed(journal, poll_seconds=settings.live_poll_seconds),
        janitor=ArtifactJanitor(
            ArtifactRecords(engine),
            artifacts,
            retention=timedelta(hours=settings.artifact_retention_hours),
        ),
        previous_runtime=previous_runtime,
    )


def connect_redis(settings: Settings) -> Redis:
    """Redis at ``FIGWAY_REDIS_URL``; on the embedded default, an in-process stand-in."""
    if settings.redis_url:
        return Redis.from_url(settings.redis_url)
    try:
        import fakeredis  # the embedded default only: the `embedded` extra
    except ImportError:
        raise BackendRejectedError(
            LEGACY_BACKEND,
            "the embedded default needs its in-process Redis stand-in: pip install "
            "'figway[embedded]' (make run does), or set FIGWAY_REDIS_URL to a real Redis",
        ) from None
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


def build_executors(
    settings: Settings,
    redis: Redis,
    *,
    run_status: Callable[[str], RunStatus | None] | None = None,
    node_states: NodeStates | None = None,
) -> dict[str, Executor]:
    """Every backend's executor, by name: the one place a concrete executor is built.

    ``run_status`` reads figway's own record of a run (the Prefect executor leaves a
    finished run's flow run alone when a late cancel arrives); ``node_states`` its
    nodes (the RQ executor lines its jobs up with them after an outage).
    """
    if settings.prefect_api_url is None:
        _keep_ephemeral_prefect_local(settings)
    executors: list[Executor] = [
        RQExecutor(
            redis,
            job_timeout_seconds=settings.job_timeout_seconds,
            worker_silence=timedelta(seconds=settings.rq_worker_silence_seconds),
            node_states=node_states,
            release=settings.rq_release,
        ),
        PrefectExecutor(
            embedded=settings.prefect_api_url is None,
            api_url=settings.prefect_api_url,
            run_status=run_status,
        ),
    ]
    return {executor.name: executor for executor in executors}


def stop_ephemeral_prefect() -> None:
    """Stop Prefect's ephemeral API server, if this process started one.

    Prefect stops it at exit (atexit), but uvicorn ends `figway serve` on SIGTERM by
    raising the signal again once it has shut down, and a process killed by a signal
    runs no atexit hook: the server would outlive the gateway.
    """
    if "prefect.server.api.server" not in sys.modules:
        return  # no flow ran here: nothing was started
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()  # the ephemeral API's server (no port given); idempotent


def _keep_ephemeral_prefect_local(settings: Settings) -> None:
    """Point Prefect's ephemeral API at the data dir, offline, with room to start slowly.

    Prefect reads these when it is first imported, which figway does only when a
    run goes to Prefect; anything the operator set wins.
    """
    os.environ.setdefault("PREFECT_HOME", str((settings.data_dir / "prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The first start migrates a fresh SQLite file: 14 s measured, 20 s is Prefect's default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
