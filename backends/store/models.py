"""The tables figway keeps: the system of record for workflows, runs, nodes and logs.

``transitions`` is the journal: one row per (run, node, attempt, status), unique,
so a redelivered job or a repeated report can never count twice. ``runs`` and
``node_runs`` hold the current state, updated in the same transaction as the
journal row that moved them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "GuardTrip",
    "Lease",
    "LiveTicket",
    "LogLine",
    "MetricTotal",
    "NodeRun",
    "Rollout",
    "RolloutEvent",
    "RulesApplied",
    "RulesVersion",
    "Run",
    "ShadowComparison",
    "Transition",
    "UTCDateTime",
    "Workflow",
]

#: The node id used for run-level journal rows and log lines (NULL would defeat uniqueness).
RUN_LEVEL = ""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# Autoincrement BIGINT on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Workflow(Base):
    __tablename__ = "workflows"

    workflow_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(128))
    folder_id: Mapped[str] = mapped_column(String(128))
    definition: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    registered_at: Mapped[datetime]  # first definition: Phase 2 routes on it
    updated_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"

    job_run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(128), index=True)
    workspace_id: Mapped[str] = mapped_column(String(128))
    folder_id: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str] = mapped_column(String(128))
    from_job: Mapped[str | None] = mapped_column(String(128))
    backend: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    plan: Mapped[dict[str, Any]]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    submitted_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    # Set by whoever is submitting the run, so concurrent requests never submit it twice.
    submit_claimed_at: Mapped[datetime | None]
    # Why the run went to its backend: the rule (NULL for the default), the rules version
    # (content hash) and a sentence a person can read.
    route_rule: Mapped[str | None] = mapped_column(String(128))
    route_version: Mapped[str | None] = mapped_column(String(64))
    route_reason: Mapped[str | None] = mapped_column(Text)
    # Set on a shadow run: the client's run it shadows. Clients never see shadow runs.
    shadow_of: Mapped[str | None] = mapped_column(String(128), index=True)
    # How far the metrics ledger has counted this run: 0 not yet, 1 its submission,
    # 2 its end too. Set in the transaction that adds the run to `metric_totals`.
    metrics_stage: Mapped[int] = mapped_column(Integer, default=0, server_default="0", index=True)
    # When the run's table outputs were removed from the artifact store (retention).
    artifacts_purged_at: Mapped[datetime | None]

    __table_args__ = (
        # What a guard reads every round: the runs its rule routed, then their workflows'.
        Index(None, "route_rule", "created_at"),
        Index(None, "workflow_id", "finished_at"),
        # What the artifact janitor reads: finished runs whose files are still there.
        Index(None, "artifacts_purged_at", "finished_at"),
        # Client runs only, as every reader below wants them (measured on 1,000,000 runs,
        # docs/performance.md): the console's latest runs, newest first...
        Index(
            "ix_runs_client_created",
            text("created_at DESC"),
            "job_run_id",
            postgresql_where=text("shadow_of IS NULL"),
            sqlite_where=text("shadow_of IS NULL"),
        ),
        # ...the job ids a workflow's runs used (rule planning), and GET /workflow_runs/stats,
        # which counts from the index alone.
        Index(
            "ix_runs_client_workflow_job",
            "workflow_id",
            "job_id",
            "created_at",
            postgresql_where=text("shadow_of IS NULL"),
            sqlite_where=text("shadow_of IS NULL"),
        ),
        Index(
            "ix_runs_client_counts",
            "workflow_id",
            "backend",
            "status",
            postgresql_where=text("shadow_of IS NULL"),
            sqlite_where=text("shadow_of IS NULL"),
        ),
    )


class NodeRun(Base):
    __tablename__ = "node_runs"

    job_run_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("runs.job_run_id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[Any | None] = mapped_column(JSON)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    __table_args__ = (Index(None, "status", "heartbeat_at"),)


class Transition(Base):
    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_run_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("runs.job_run_id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("job_run_id", "node_id", "attempt", "status"),)


class LogLine(Base):
    __tablename__ = "log_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_run_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("runs.job_run_id", ondelete="CASCADE")
    )
    node_id: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(10))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index(None, "job_run_id", "id"),)


class RulesVersion(Base):
    """A routing rules file figway has applied, stored once per content."""

    __tablename__ = "rules_versions"

    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    phase: Mapped[int] = mapped_column(Integer)
    first_applied_at: Mapped[datetime]


class RulesApplied(Base):
    """Each time a gateway put a different rules version in force."""

    __tablename__ = "rules_applied"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(String(64), ForeignKey("rules_versions.content_hash"))
    source: Mapped[str] = mapped_column(String(500))
    applied_at: Mapped[datetime] = mapped_column(index=True)


class GuardTrip(Base):
    """A guard that rolled its rule back; in force until a person resets it."""

    __tablename__ = "guard_trips"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    rules_version: Mapped[str] = mapped_column(String(64))
    tripped_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]]
    reset_at: Mapped[datetime | None]
    reset_by: Mapped[str | None] = mapped_column(String(128))

    # One trip in force per rule, however many gateways evaluate the guard at once.
    __table_args__ = (
        Index(
            "uq_guard_trips_rule_in_force",
            "rule_id",
            unique=True,
            postgresql_where=text("reset_at IS NULL"),
            sqlite_where=text("reset_at IS NULL"),
        ),
    )


class Rollout(Base):
    """Where a rule's rollout in steps stands, shared by every gateway.

    ``revision`` grows with every change, and a change names the revision it read:
    of two gateways moving one rollout at once, one moves it and the other re-reads.
    """

    __tablename__ = "rollouts"

    rule_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    steps: Mapped[list[float]] = mapped_column(JSON)
    percent: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column(Integer)
    step_started_at: Mapped[datetime]  # evidence at this position counts from here
    updated_at: Mapped[datetime]


class RolloutEvent(Base):
    """One move of a rollout (started, advanced, rolled back, paused, resumed, pinned,
    reconciled with the file), by whom, why, and the evidence it rested on."""

    __tablename__ = "rollout_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(16))
    from_percent: Mapped[float | None] = mapped_column(Float)
    to_percent: Mapped[float | None] = mapped_column(Float)
    by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]]

    __table_args__ = (Index(None, "rule_id", "id"),)


class ShadowComparison(Base):
    """A client's run compared node by node with its shadow run, once both finished."""

    __tablename__ = "shadow_comparisons"

    job_run_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("runs.job_run_id", ondelete="CASCADE"), primary_key=True
    )
    shadow_run_id: Mapped[str] = mapped_column(String(128))
    workflow_id: Mapped[str] = mapped_column(String(128), index=True)
    primary_backend: Mapped[str] = mapped_column(String(32))
    shadow_backend: Mapped[str] = mapped_column(String(32))
    matched: Mapped[bool] = mapped_column(Boolean)
    mismatches: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    compared_at: Mapped[datetime] = mapped_column(index=True)


class MetricTotal(Base):
    """A running total behind a Prometheus series: a counter, or one histogram bucket.

    ``labels`` is the series' labels as canonical JSON. Totals only grow, and a
    run is added once (``runs.metrics_stage``), so every gateway that exports
    them agrees and a restart continues where the last one stopped.
    """

    __tablename__ = "metric_totals"

    family: Mapped[str] = mapped_column(String(96), primary_key=True)
    labels: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[float] = mapped_column(Float, default=0.0)


class Lease(Base):
    """A role one gateway holds at a time (the metrics ledger), renewed before it expires."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


class ApiKey(Base):
    """An API key: its id is public, its secret is kept only as a hash."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    # Space-separated: runs, workflows, admin.
    scopes: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(128))
    # Space-separated workspace ids the key is limited to; NULL: every workspace.
    workspaces: Mapped[str | None] = mapped_column(Text)


class LiveTicket(Base):
    """A short-lived, one-use ticket a browser opens a WebSocket with instead of its key.

    Only its hash is kept; redeeming deletes it, so it opens one socket, on any gateway.
    """

    __tablename__ = "live_tickets"

    ticket_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(index=True)
