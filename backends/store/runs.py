"""The state machine of runs and nodes, and the rest of the run records, behind
keyword-only methods.

Writes that move a run or a node go through :meth:`Store.record_node` or the
run-level methods; each is one transaction that (1) locks the run row, (2)
inserts the journal row, unique on (run, node, attempt, status), and (3) only
if that insert was new, updates the current state. A duplicate report is
therefore a no-op, and two nodes finishing at once cannot both miss that they
were the last.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, func, insert, select, update
from sqlalchemy.orm import Session

from backends.model import dag
from backends.model.errors import StoreError
from backends.model.status import (
    NODE_TERMINAL,
    NODE_UNFINISHED_VALUES,
    RUN_ACTIVE,
    RUN_TERMINAL,
    NodeStatus,
    RunStatus,
    node_transition_allowed,
)
from backends.model.workflow import NodeSpec, RunPlan, WorkflowDefinition
from backends.store.models import RUN_LEVEL, LogLine, NodeRun, Run, Transition, Workflow
from backends.store.node_transition_call import call_node_transition
from backends.store.plans import plan_from_document, plan_to_document
from backends.store.submission_statements import create_run_statement, mark_submitted_statement
from backends.store.transactions import (
    Transactions,
    autocommit,
    insert_ignoring_conflicts,
    utcnow,
)
from backends.store.views import (
    AttemptStart,
    LogRecord,
    NodeOutcome,
    Route,
    RunView,
    StaleNode,
    WorkflowVersion,
    node_views,
    run_view,
)

__all__ = ["Store"]


class Store(Transactions):
    """figway's database: workflows, runs, nodes, the transition journal and logs."""

    def __init__(self, engine: Engine, *, one_statement_writes: bool | None = None) -> None:
        super().__init__(engine)
        #: Whether the hot writes are one statement each: a node's transition
        #: (``figway_node_transition()``), a run's creation and its submission. PostgreSQL
        #: does; SQLite runs them statement by statement, which tests and benchmarks can
        #: ask of PostgreSQL too, to compare.
        self._one_round_trip = (
            engine.dialect.name == "postgresql"
            if one_statement_writes is None
            else one_statement_writes
        )

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers."""
        with self._transaction() as session:
            session.execute(select(1))

    # -- workflows -------------------------------------------------------------------

    def put_workflow(self, *, definition: WorkflowDefinition) -> tuple[int, bool]:
        """Store a definition; returns its new version and whether it was new."""
        now = utcnow()
        with self._transaction() as session:
            row = session.get(Workflow, definition.workflow_id, with_for_update=True)
            document = definition.model_dump(mode="json", exclude_defaults=False)
            if row is None:
                session.add(
                    Workflow(
                        workflow_id=definition.workflow_id,
                        workspace_id=definition.workspace_id,
                        folder_id=definition.folder_id,
                        definition=document,
                        version=1,
                        registered_at=now,
                        updated_at=now,
                    )
                )
                return 1, True
            if row.definition != document:
                row.definition = document
                row.workspace_id = definition.workspace_id
                row.folder_id = definition.folder_id
                row.version += 1
                row.updated_at = now
            return row.version, False

    def get_workflow(self, *, workflow_id: str) -> Workflow | None:
        with self._transaction() as session:
            return session.get(Workflow, workflow_id)

    def workflow_version(self, *, workflow_id: str) -> WorkflowVersion | None:
        """The workflow's current version, without its definition (which callers cache
        per version): what every submission reads."""
        query = select(Workflow.workflow_id, Workflow.version, Workflow.registered_at).where(
            Workflow.workflow_id == workflow_id
        )
        if self._one_round_trip:
            with autocommit(self.engine) as connection:
                row = connection.execute(query).first()
        else:
            with self._transaction() as session:
                row = session.execute(query).first()
        return None if row is None else WorkflowVersion(*row)

    # -- runs ------------------------------------------------------------------------

    def create_run(
        self,
        *,
        plan: RunPlan,
        backend: str,
        from_job: str | None,
        route: Route | None = None,
        shadow_of: str | None = None,
        workspace_id: str | None = None,
        folder_id: str | None = None,
    ) -> bool:
        """Record a new pending run, claimed for submission by the caller.

        ``workspace_id`` and ``folder_id`` are the client's, kept as sent (the legacy
        API kept them); unset, the workflow's. The plan keeps the workflow's own.
        Returns False, changing nothing, when ``plan.job_run_id`` exists already:
        the caller must not submit it (someone else owns it).
        """
        now = utcnow()
        if self._one_round_trip:
            return create_run_statement(
                self.engine,
                plan=plan,
                backend=backend,
                from_job=from_job,
                route=route,
                shadow_of=shadow_of,
                workspace_id=workspace_id,
                folder_id=folder_id,
                now=now,
            )
        with self._transaction() as session:
            # RETURNING says whether the row is new on both dialects (psycopg's rowcount is -1).
            inserted = session.execute(
                insert_ignoring_conflicts(session, Run)
                .values(
                    job_run_id=plan.job_run_id,
                    workflow_id=plan.workflow_id,
                    workspace_id=workspace_id or plan.workspace_id,
                    folder_id=folder_id or plan.folder_id,
                    job_id=plan.job_id,
                    from_job=from_job,
                    backend=backend,
                    status=RunStatus.PENDING,
                    plan=plan_to_document(plan),
                    created_at=now,
                    updated_at=now,
                    submit_claimed_at=now,
                    route_rule=route.rule if route else None,
                    route_version=route.version if route else None,
                    route_reason=route.reason if route else None,
                    shadow_of=shadow_of,
                )
                .returning(Run.job_run_id)
            ).first()
            if inserted is None:
                return False
            session.add_all(
                NodeRun(
                    job_run_id=plan.job_run_id,
                    node_id=node_id,
                    node_type=spec.type,
                    status=NodeStatus.PENDING,
                    attempts=0,
                    max_attempts=spec.retries + 1,
                )
                for node_id, spec in plan.nodes.items()
            )
            session.add(_journal(plan.job_run_id, RUN_LEVEL, 0, RunStatus.PENDING, now))
            return True

    def claim_submission(self, *, job_run_id: str, stale_after: timedelta) -> bool:
        """Claim a pending run whose earlier submission failed or was abandoned."""
        now = utcnow()
        with self._transaction() as session:
            claimed = session.execute(
                update(Run)
                .where(
                    Run.job_run_id == job_run_id,
                    Run.status == RunStatus.PENDING,
                    (Run.submit_claimed_at.is_(None)) | (Run.submit_claimed_at < now - stale_after),
                )
                .values(submit_claimed_at=now, updated_at=now)
            )
            return _rowcount(claimed) == 1

    def reroute(self, *, job_run_id: str, backend: str, reason: str) -> bool:
        """Move a run no backend has accepted yet to ``backend`` (a fallback); False if too late."""
        with self._transaction() as session:
            moved = session.execute(
                update(Run)
                .where(
                    Run.job_run_id == job_run_id,
                    Run.status == RunStatus.PENDING,
                    Run.submitted_at.is_(None),
                )
                .values(backend=backend, route_reason=reason, updated_at=utcnow())
            )
            return _rowcount(moved) == 1

    def mark_submitted(self, *, job_run_id: str) -> RunView:
        """The backend accepted the run: run and nodes move to ``queued``; returns the run."""
        now = utcnow()
        if self._one_round_trip:
            view = mark_submitted_statement(self.engine, job_run_id=job_run_id, now=now)
            if view is None:
                raise StoreError(f"no run {job_run_id!r}")
            return view
        with self._transaction() as session:
            run, _ = _lock_run(session, job_run_id)
            _execute(
                session,
                update(Run)
                .where(Run.job_run_id == job_run_id)
                .values(submitted_at=func.coalesce(Run.submitted_at, now), error=None),
            )
            if run.status in (RunStatus.PENDING, RunStatus.RUNNING):  # not killed meanwhile
                if run.status == RunStatus.PENDING:
                    _move_run(session, run, RunStatus.QUEUED, now)
                # A worker may have started some nodes already; the others are queued now.
                queued = session.scalars(
                    update(NodeRun)
                    .where(NodeRun.job_run_id == job_run_id, NodeRun.status == NodeStatus.PENDING)
                    .values(status=NodeStatus.QUEUED)
                    .returning(NodeRun.node_id)
                    .execution_options(synchronize_session=False)
                ).all()
                if queued:
                    session.execute(
                        insert(Transition),
                        [
                            {
                                "job_run_id": job_run_id,
                                "node_id": node_id,
                                "attempt": 0,
                                "status": NodeStatus.QUEUED,
                                "at": now,
                            }
                            for node_id in queued
                        ],
                    )
            row = session.get(Run, job_run_id)
            assert row is not None
            return run_view(row, node_views(session, row))

    def mark_submit_failed(self, *, job_run_id: str, error: str) -> None:
        """Submission failed: the run stays pending (not lost) with the reason, unclaimed."""
        with self._transaction() as session:
            session.execute(
                update(Run)
                .where(Run.job_run_id == job_run_id, Run.status == RunStatus.PENDING)
                .values(error=error, submit_claimed_at=None, updated_at=utcnow())
            )

    def get_run(self, *, job_run_id: str, with_nodes: bool = True) -> RunView | None:
        with self._transaction() as session:
            run = session.get(Run, job_run_id)
            if run is None:
                return None
            nodes = node_views(session, run) if with_nodes else {}
            return run_view(run, nodes)

    def load_plan(self, *, job_run_id: str) -> RunPlan | None:
        with self._transaction() as session:
            document = session.scalar(select(Run.plan).where(Run.job_run_id == job_run_id))
        return None if document is None else plan_from_document(document, job_run_id)

    def run_status(self, *, job_run_id: str) -> RunStatus | None:
        with self._transaction() as session:
            status = session.scalar(select(Run.status).where(Run.job_run_id == job_run_id))
        return None if status is None else RunStatus(status)

    # -- node transitions ------------------------------------------------------------

    def record_node(
        self,
        *,
        job_run_id: str,
        node_id: str,
        attempt: int,
        status: NodeStatus,
        error: str | None = None,
        output: Any = None,
        logs: Sequence[LogRecord] = (),
    ) -> NodeOutcome:
        """Record one node transition once (see the module docstring), with its log lines."""
        if self._one_round_trip:
            return call_node_transition(
                self.engine,
                job_run_id=job_run_id,
                node_id=node_id,
                attempt=attempt,
                status=status,
                now=utcnow(),
                error=error,
                output=output,
                logs=logs,
            ).outcome
        with self._transaction() as session:
            run, _ = _lock_run(session, job_run_id)
            outcome = _apply_node_transition(
                session, run, node_id, attempt, status, utcnow(), error=error, output=output
            )
            _insert_logs(session, logs)
            return outcome

    def start_attempt(self, *, job_run_id: str, node_id: str, attempt: int) -> AttemptStart:
        """Record ``running`` and hand back what the attempt needs, in one transaction.

        When the start is refused (run killed, node finished, stale attempt, an
        upstream node not succeeded), ``outcome.applied`` is False and the node must
        not run.
        """
        if self._one_round_trip:
            moved = call_node_transition(
                self.engine,
                job_run_id=job_run_id,
                node_id=node_id,
                attempt=attempt,
                status=NodeStatus.RUNNING,
                now=utcnow(),
                starting=True,
            )
            if not moved.outcome.applied:
                return AttemptStart(moved.outcome)
            return _attempt_start(moved.outcome, moved.plan, node_id, moved.upstream_outputs)
        with self._transaction() as session:
            run, document = _lock_run(session, job_run_id, with_plan=True)
            upstream = list(document["upstream"].get(node_id, ()))
            outputs: dict[str, Any] = {}
            if upstream:
                rows = session.execute(
                    select(NodeRun.node_id, NodeRun.status, NodeRun.output).where(
                        NodeRun.job_run_id == job_run_id, NodeRun.node_id.in_(upstream)
                    )
                ).all()
                if any(status != NodeStatus.SUCCEEDED for _, status, _ in rows):
                    # A job released early (a duplicate delivery) never runs on missing inputs.
                    current = session.scalar(
                        select(NodeRun.status).where(
                            NodeRun.job_run_id == job_run_id, NodeRun.node_id == node_id
                        )
                    )
                    if current is None:
                        raise StoreError(f"run {job_run_id!r} has no node {node_id!r}")
                    return AttemptStart(NodeOutcome(False, NodeStatus(current), run.status))
                outputs = {upstream_id: value for upstream_id, _, value in rows}
            outcome = _apply_node_transition(
                session, run, node_id, attempt, NodeStatus.RUNNING, utcnow()
            )
            if not outcome.applied:
                return AttemptStart(outcome)
            return _attempt_start(outcome, document, node_id, outputs)

    def heartbeat(self, *, job_run_id: str, node_id: str, attempt: int) -> bool:
        """Mark a running attempt alive; False when it should stop (killed or moved on)."""
        now = utcnow()
        with self._transaction() as session:
            alive = _rowcount(
                session.execute(
                    update(NodeRun)
                    .where(
                        NodeRun.job_run_id == job_run_id,
                        NodeRun.node_id == node_id,
                        NodeRun.attempts == attempt,
                        NodeRun.status == NodeStatus.RUNNING,
                    )
                    .values(heartbeat_at=now)
                )
            )
            run_status = session.scalar(select(Run.status).where(Run.job_run_id == job_run_id))
        return alive == 1 and run_status not in (RunStatus.CANCELLING, RunStatus.CANCELLED)

    def touch_run(self, *, job_run_id: str) -> None:
        """Mark an active run's orchestrator alive (a Prefect flow run between nodes).

        ``updated_at`` is what :meth:`active_runs_without_running_nodes` reads, so a run
        whose flow-run process lives is never taken for a quiet, lost one.
        """
        with self._transaction() as session:
            session.execute(
                update(Run)
                .where(
                    Run.job_run_id == job_run_id,
                    Run.status.in_([s.value for s in RUN_ACTIVE]),
                )
                .values(updated_at=utcnow())
            )

    def stale_nodes(self, *, silent_for: timedelta, limit: int = 500) -> list[StaleNode]:
        """Running nodes whose worker has not reported for ``silent_for``."""
        cutoff = utcnow() - silent_for
        with self._transaction() as session:
            rows = session.execute(
                select(NodeRun.job_run_id, NodeRun.node_id, NodeRun.attempts, Run.backend)
                .join(Run, Run.job_run_id == NodeRun.job_run_id)
                .where(NodeRun.status == NodeStatus.RUNNING, NodeRun.heartbeat_at < cutoff)
                .limit(limit)
            ).all()
        return [StaleNode(*row) for row in rows]

    # -- cancel ----------------------------------------------------------------------

    def request_cancel(self, *, job_run_id: str) -> RunStatus:
        """Move a run to ``cancelling`` and cancel its nodes that have not started.

        Returns the run's status before the call; a terminal status means nothing
        was changed. ``cancelling`` means a kill was already under way.
        """
        now = utcnow()
        with self._transaction() as session:
            run, _ = _lock_run(session, job_run_id)
            before = run.status
            if before in RUN_TERMINAL:
                return before
            if before != RunStatus.CANCELLING:
                _move_run(session, run, RunStatus.CANCELLING, now)
            waiting = (NodeStatus.PENDING, NodeStatus.QUEUED)
            _move_nodes(session, run, waiting, NodeStatus.CANCELLED, now, error="run cancelled")
            return before

    def complete_cancel(self, *, job_run_id: str) -> RunStatus:
        """After the backend stopped the run: every unfinished node and the run end ``cancelled``."""
        now = utcnow()
        with self._transaction() as session:
            run, _ = _lock_run(session, job_run_id)
            if run.status != RunStatus.CANCELLING:
                return run.status
            _move_nodes(
                session,
                run,
                NODE_UNFINISHED_VALUES,
                NodeStatus.CANCELLED,
                now,
                error="run cancelled",
            )
            _finish_run_if_done(session, run, now)
            return run.status

    def abandon_active_runs(self, *, reason: str) -> int:
        """End every unfinished run: its backend state is gone (an embedded restart)."""
        with self._transaction() as session:
            job_run_ids = session.scalars(
                select(Run.job_run_id).where(
                    Run.status.in_([s.value for s in (*RUN_ACTIVE, RunStatus.PENDING)])
                )
            ).all()
        for job_run_id in job_run_ids:
            self.abandon_run(job_run_id=job_run_id, reason=reason)
        return len(job_run_ids)

    def abandon_run(self, *, job_run_id: str, reason: str) -> RunStatus:
        """End a run its backend lost: every unfinished node fails with ``reason``."""
        now = utcnow()
        with self._transaction() as session:
            run, _ = _lock_run(session, job_run_id)
            if run.status in RUN_TERMINAL:
                return run.status
            _move_nodes(session, run, NODE_UNFINISHED_VALUES, NodeStatus.FAILED, now, error=reason)
            _finish_run_if_done(session, run, now)
            _execute(session, update(Run).where(Run.job_run_id == job_run_id).values(error=reason))
            return run.status

    def active_runs_without_running_nodes(
        self, *, silent_for: timedelta, limit: int = 200
    ) -> list[tuple[str, str]]:
        """(run, backend) of active runs with no node running and no change for ``silent_for``.

        A backend that lost such a run (a crashed flow-run process, a flushed queue)
        will never report on it; the reconciler asks.
        """
        cutoff = utcnow() - silent_for
        busy = select(NodeRun.job_run_id).where(NodeRun.status == NodeStatus.RUNNING)
        with self._transaction() as session:
            rows = session.execute(
                select(Run.job_run_id, Run.backend)
                .where(
                    Run.status.in_([RunStatus.QUEUED.value, RunStatus.RUNNING.value]),
                    Run.updated_at < cutoff,
                    Run.job_run_id.not_in(busy),
                )
                .order_by(Run.updated_at)
                .limit(limit)
            ).all()
        return [(job_run_id, backend) for job_run_id, backend in rows]

    def node_states(self, *, job_run_id: str) -> dict[str, tuple[NodeStatus, int]]:
        """Each node's status and attempts started, as recorded (empty for an unknown run)."""
        with self._transaction() as session:
            rows = session.execute(
                select(NodeRun.node_id, NodeRun.status, NodeRun.attempts).where(
                    NodeRun.job_run_id == job_run_id
                )
            ).all()
        return {node_id: (NodeStatus(status), attempts) for node_id, status, attempts in rows}

    def unsubmitted_runs(
        self, *, claim: timedelta, retry_after: timedelta, limit: int = 50
    ) -> list[str]:
        """Client runs still ``pending`` whose submission nobody holds any more.

        Either a gateway stopped mid-submit (its claim is older than ``claim``), or a
        submission failed (unclaimed) at least ``retry_after`` ago: each is tried
        once per such window, oldest first.
        """
        now = utcnow()
        with self._transaction() as session:
            return list(
                session.scalars(
                    select(Run.job_run_id)
                    .where(
                        Run.status == RunStatus.PENDING,
                        Run.shadow_of.is_(None),
                        (Run.submit_claimed_at < now - claim)
                        | (Run.submit_claimed_at.is_(None) & (Run.updated_at < now - retry_after)),
                    )
                    .order_by(Run.created_at)
                    .limit(limit)
                )
            )

    def cancelling_runs(self, *, limit: int = 100) -> list[str]:
        with self._transaction() as session:
            return list(
                session.scalars(
                    select(Run.job_run_id).where(Run.status == RunStatus.CANCELLING).limit(limit)
                )
            )

    def unstarted_shadows(self, *, older_than: timedelta, limit: int = 100) -> list[str]:
        """Shadow runs recorded but never submitted: their gateway stopped in between."""
        with self._transaction() as session:
            return list(
                session.scalars(
                    select(Run.job_run_id)
                    .where(
                        Run.shadow_of.is_not(None),
                        Run.status == RunStatus.PENDING,
                        Run.submitted_at.is_(None),
                        Run.created_at < utcnow() - older_than,
                    )
                    .limit(limit)
                )
            )

    # -- logs and stats --------------------------------------------------------------

    def append_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        with self._transaction() as session:
            _insert_logs(session, records)

    def logs(
        self, *, job_run_id: str, after_id: int = 0, limit: int = 1_000
    ) -> list[tuple[int, LogRecord]]:
        with self._transaction() as session:
            rows = session.scalars(
                select(LogLine)
                .where(LogLine.job_run_id == job_run_id, LogLine.id > after_id)
                .order_by(LogLine.id)
                .limit(limit)
            ).all()
        return [
            (r.id, LogRecord(r.job_run_id, r.node_id, r.attempt, r.at, r.level, r.message))
            for r in rows
        ]

    def stats(self, *, workspaces: Collection[str] | None = None) -> dict[str, Any]:
        """Client runs counted in total, by status, by backend and by workflow (with statuses);
        only those of ``workspaces`` when given.

        Shadow runs are not the client's and are left out.
        """
        query = select(Run.workflow_id, Run.backend, Run.status, func.count()).where(
            Run.shadow_of.is_(None)
        )
        if workspaces is not None:
            query = query.where(Run.workspace_id.in_(sorted(workspaces)))
        with self._transaction() as session:
            rows = session.execute(query.group_by(Run.workflow_id, Run.backend, Run.status)).all()
        by_status: dict[str, int] = {status.value: 0 for status in RunStatus}
        by_backend: dict[str, int] = {}
        by_workflow: dict[str, dict[str, int]] = {}
        total = 0
        for workflow_id, backend, status, count in rows:
            total += count
            by_status[status] = by_status.get(status, 0) + count
            by_backend[backend] = by_backend.get(backend, 0) + count
            per_workflow = by_workflow.setdefault(workflow_id, {"total": 0})
            per_workflow["total"] += count
            per_workflow[status] = per_workflow.get(status, 0) + count
        return {
            "total": total,
            "by_status": by_status,
            "by_backend": by_backend,
            "by_workflow": by_workflow,
        }


# -- transaction helpers -----------------------------------------------------------------


def _attempt_start(
    outcome: NodeOutcome, document: Any, node_id: str, upstream_outputs: dict[str, Any]
) -> AttemptStart:
    """What a started attempt needs, from its run's plan document."""
    return AttemptStart(
        outcome,
        spec=NodeSpec.model_validate(document["nodes"][node_id]),
        parameters=document.get("parameters", {}),
        upstream_outputs=upstream_outputs,
        sandboxed=document.get("sandboxed", False),
        workspace_id=document.get("workspace_id", ""),
        run_configs={k: v.get("config", {}) for k, v in document["nodes"].items()},
        plan_nodes=document["nodes"],
    )


def _journal(job_run_id: str, node_id: str, attempt: int, status: str, at: datetime) -> Transition:
    return Transition(job_run_id=job_run_id, node_id=node_id, attempt=attempt, status=status, at=at)


def _insert_journal(
    session: Session,
    job_run_id: str,
    node_id: str,
    attempt: int,
    status: str,
    at: datetime,
    error: str | None = None,
) -> bool:
    inserted = session.execute(
        insert_ignoring_conflicts(session, Transition)
        .values(
            job_run_id=job_run_id,
            node_id=node_id,
            attempt=attempt,
            status=status,
            at=at,
            error=error,
        )
        .returning(Transition.id)
    ).first()
    return inserted is not None


def _rowcount(result: Any) -> int:
    rows: int = cast(CursorResult[Any], result).rowcount
    return rows


@dataclass
class _LockedRun:
    """A run row locked for this transaction: its id and status, kept current as it moves."""

    job_run_id: str
    status: RunStatus


def _lock_run(
    session: Session, job_run_id: str, *, with_plan: bool = False
) -> tuple[_LockedRun, Any]:
    """Lock the run row (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already
    serialises writers) and return it, with its plan document when asked."""
    columns = (Run.status, Run.plan) if with_plan else (Run.status,)
    row = session.execute(
        select(*columns).where(Run.job_run_id == job_run_id).with_for_update()
    ).first()
    if row is None:
        raise StoreError(f"no run {job_run_id!r}")
    return _LockedRun(job_run_id, RunStatus(row[0])), (row[1] if with_plan else None)


def _apply_node_transition(
    session: Session,
    run: _LockedRun,
    node_id: str,
    attempt: int,
    status: NodeStatus,
    now: datetime,
    *,
    error: str | None = None,
    output: Any = None,
) -> NodeOutcome:
    """Move one node (its run row already locked) and whatever follows from it."""
    job_run_id = run.job_run_id
    node = session.execute(
        select(NodeRun.status, NodeRun.attempts).where(
            NodeRun.job_run_id == job_run_id, NodeRun.node_id == node_id
        )
    ).first()
    if node is None:
        raise StoreError(f"run {job_run_id!r} has no node {node_id!r}")
    current, attempts = NodeStatus(node.status), node.attempts
    refused = NodeOutcome(False, current, run.status)
    if not node_transition_allowed(current, status):
        return refused
    # A worker may start a node before the submitter marked the run queued.
    startable = (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING)
    if status is NodeStatus.RUNNING and (run.status not in startable or attempt < attempts):
        return refused  # killed meanwhile, or a stale redelivery of an older attempt
    if not _insert_journal(session, job_run_id, node_id, attempt, status, now, error):
        return refused
    if status is NodeStatus.RUNNING and current is NodeStatus.RUNNING:
        # A new attempt while the last one never reported: its worker died.
        lost = f"attempt {attempts} ended without a report (its worker was lost)"
        _insert_journal(session, job_run_id, node_id, attempts, NodeStatus.RETRYING, now, lost)

    changes: dict[str, Any] = {"status": status, "attempts": max(attempts, attempt)}
    if error is not None or status is NodeStatus.SUCCEEDED:
        changes["error"] = error
    if status is NodeStatus.RUNNING:
        changes["started_at"] = func.coalesce(NodeRun.started_at, now)
        changes["heartbeat_at"] = now
    if status is NodeStatus.SUCCEEDED:
        changes["output"] = output
    if status in NODE_TERMINAL:
        changes["finished_at"] = now
    _execute(
        session,
        update(NodeRun)
        .where(NodeRun.job_run_id == job_run_id, NodeRun.node_id == node_id)
        .values(**changes),
    )

    skipped: tuple[str, ...] = ()
    if status is NodeStatus.RUNNING and run.status in (RunStatus.PENDING, RunStatus.QUEUED):
        _move_run(session, run, RunStatus.RUNNING, now)
    elif status is not NodeStatus.RUNNING:
        # A node starting is no news for the silence window, which reads runs with no
        # node running (PostgreSQL's function lets starts share the run's lock for it).
        _execute(session, update(Run).where(Run.job_run_id == job_run_id).values(updated_at=now))
    ready: tuple[str, ...] = ()
    if status is NodeStatus.FAILED:
        skipped = _skip_downstream(session, run, node_id, now)
    if status is NodeStatus.SUCCEEDED:
        ready = _made_ready(session, run, node_id)
    if status in NODE_TERMINAL:
        _finish_run_if_done(session, run, now)
    return NodeOutcome(True, status, run.status, skipped, ready)


def _execute(session: Session, statement: Any) -> Any:
    """A Core write: the ORM's identity map holds nothing of these rows to keep in step."""
    return session.execute(statement.execution_options(synchronize_session=False))


def _insert_logs(session: Session, records: Sequence[LogRecord]) -> None:
    if records:
        session.execute(
            insert(LogLine),
            [
                {
                    "job_run_id": r.job_run_id,
                    "node_id": r.node_id,
                    "attempt": r.attempt,
                    "at": r.at,
                    "level": r.level,
                    "message": r.message,
                }
                for r in records
            ],
        )


def _move_run(
    session: Session, run: _LockedRun, status: RunStatus, at: datetime, **extra: Any
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": at, **extra}
    if status is RunStatus.RUNNING:
        values["started_at"] = func.coalesce(Run.started_at, at)
    if status in RUN_TERMINAL:
        values["finished_at"] = at
    _execute(session, update(Run).where(Run.job_run_id == run.job_run_id).values(**values))
    run.status = status
    _insert_journal(session, run.job_run_id, RUN_LEVEL, 0, status, at)


def _move_nodes(
    session: Session,
    run: _LockedRun,
    statuses: Sequence[str],
    to: NodeStatus,
    at: datetime,
    *,
    error: str,
    only: Iterable[str] | None = None,
) -> list[str]:
    """Move every node of the run that is in one of ``statuses`` (and in ``only``) to ``to``.

    Journals first, so a node whose row for (attempt, ``to``) exists already is left as is.
    """
    query = select(NodeRun.node_id, NodeRun.attempts).where(
        NodeRun.job_run_id == run.job_run_id, NodeRun.status.in_(statuses)
    )
    if only is not None:
        query = query.where(NodeRun.node_id.in_(sorted(only)))
    nodes = session.execute(query).all()
    if not nodes:
        return []
    journaled = session.scalars(
        insert_ignoring_conflicts(session, Transition)
        .values(
            [
                {
                    "job_run_id": run.job_run_id,
                    "node_id": node_id,
                    "attempt": attempts,
                    "status": to,
                    "at": at,
                    "error": error,
                }
                for node_id, attempts in nodes
            ]
        )
        .returning(Transition.node_id)
    ).all()
    if journaled:
        _execute(
            session,
            update(NodeRun)
            .where(NodeRun.job_run_id == run.job_run_id, NodeRun.node_id.in_(journaled))
            .values(status=to, error=error, finished_at=at),
        )
    return sorted(journaled)


def _skip_downstream(
    session: Session, run: _LockedRun, failed_node: str, at: datetime
) -> tuple[str, ...]:
    plan: dict[str, Any] = session.scalars(
        select(Run.plan).where(Run.job_run_id == run.job_run_id)
    ).one()
    downstream = dag.downstream_of(failed_node, plan["upstream"])
    if not downstream:
        return ()
    reason = f"upstream node {failed_node!r} failed"
    return tuple(
        _move_nodes(
            session,
            run,
            NODE_UNFINISHED_VALUES,
            NodeStatus.SKIPPED,
            at,
            error=reason,
            only=downstream,
        )
    )


def _made_ready(session: Session, run: _LockedRun, succeeded_node: str) -> tuple[str, ...]:
    """The children of a node that just succeeded whose every upstream node has succeeded
    and that have not started: the run row is locked, so only one transition sees each."""
    plan: dict[str, Any] = session.scalars(
        select(Run.plan).where(Run.job_run_id == run.job_run_id)
    ).one()
    upstream: dict[str, list[str]] = plan["upstream"]
    children = [child for child, parents in upstream.items() if succeeded_node in parents]
    if not children:
        return ()
    involved = {parent for child in children for parent in upstream[child]} | set(children)
    statuses = dict(
        session.execute(
            select(NodeRun.node_id, NodeRun.status).where(
                NodeRun.job_run_id == run.job_run_id, NodeRun.node_id.in_(sorted(involved))
            )
        ).all()
    )
    not_started = (NodeStatus.PENDING, NodeStatus.QUEUED)
    return tuple(
        sorted(
            child
            for child in children
            if statuses.get(child) in not_started
            and all(statuses.get(parent) == NodeStatus.SUCCEEDED for parent in upstream[child])
        )
    )


def _finish_run_if_done(session: Session, run: _LockedRun, at: datetime) -> None:
    if run.status in RUN_TERMINAL:
        return
    counts = dict(
        session.execute(
            select(NodeRun.status, func.count())
            .where(NodeRun.job_run_id == run.job_run_id)
            .group_by(NodeRun.status)
        ).all()
    )
    if any(NodeStatus(status) not in NODE_TERMINAL for status in counts):
        return
    final = _final_run_status(run.status, [NodeStatus(s) for s in counts])
    extra = {}
    if final is RunStatus.FAILED:
        extra["error"] = f"{counts.get(NodeStatus.FAILED.value, 0)} node(s) failed"
    _move_run(session, run, final, at, **extra)


def _final_run_status(current: RunStatus, nodes: Iterable[NodeStatus]) -> RunStatus:
    statuses = set(nodes)
    if current is RunStatus.CANCELLING or NodeStatus.CANCELLED in statuses:
        return RunStatus.CANCELLED
    if statuses & {NodeStatus.FAILED, NodeStatus.SKIPPED}:
        return RunStatus.FAILED
    return RunStatus.SUCCEEDED
