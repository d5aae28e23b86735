"""The executor contract: what every backend (RQ, Prefect) guarantees the gateway.

The database is the system of record for runs, nodes and logs; executors are
asked only to start work, stop it, say whether they are up and what they still
hold, and tell what the database cannot know (a worker that died mid-node).
The gateway sees executors only through :class:`Executor`: no ``isinstance`` on
a concrete backend, no probing for optional methods. Every implementation must:

``name``
    One of :data:`BACKEND_NAMES`; runs record it, and it keys the executors.

``submit(plan)``
    Start the run described by ``plan``; return once the backend has accepted
    it (not when it has finished). Nodes of one level may run in parallel;
    a node starts only after all of its upstream nodes succeeded. Node
    attempts go through :class:`backends.runtime.attempts.NodeRuntime`, which
    records every transition. Raises
    :class:`~backends.model.errors.BackendUnavailableError` when the backend
    cannot be reached, with ``may_have_started=False`` only if the request
    certainly never arrived (the run may then go elsewhere), and
    :class:`~backends.model.errors.BackendRejectedError` when it refuses the plan.

``cancel(plan)``
    Make sure no node of the run starts from now on and stop the nodes that
    are running. Idempotent: cancelling a cancelled, finished or unknown run
    does nothing and raises nothing. The gateway records the outcome. Raises
    ``BackendUnavailableError`` when the backend cannot be reached.

``health()``
    A cheap check of the backend that never raises and never hangs (its calls have
    short timeouts). ``up`` says the backend answers; ``unserved`` names the places
    (queues, work pools) that hold work no live worker serves, so nothing there can
    start. ``detail`` is for the log, never for an unauthenticated caller: it may
    name hosts and connection errors.

``holdings()``
    The work the backend still holds, by place (``default.queued``,
    ``default.deferred``, a work pool's flow runs), zeros included: what must
    drain before the backend can be switched off. Raises
    ``BackendUnavailableError`` when it cannot count.

``reconcile(plan, running)``
    ``running`` are nodes the database believes are running but whose
    heartbeat stopped; it is empty when the run has been quiet with no node
    running. Return one :class:`NodeReport` per node whose fate the backend
    knows (retried, failed for good, or lost with the whole run); nodes it
    cannot judge yet are left out. A backend reporting a node failed for good
    also drops the work it still holds for that node's downstream nodes.

``agree_with_record()``
    Make what the backend shows of ended runs agree with figway's record, for the
    drift no one run's ``reconcile`` sees: Prefect's flow runs and task runs left
    Running by a flow-run process that died or whose reports an outage lost. The
    gateway's upkeep calls it every reconcile round, beside the reconciler; an
    implementation may act less often, and one with nothing to do (RQ, whose
    ``reconcile`` lines each quiet run's jobs up with the record) returns at once.
    It changes only the backend's view, never figway's record. Raises
    ``BackendUnavailableError`` when the backend cannot be reached.

``close()``
    Release what the executor holds open (clients, pools). Idempotent; the
    executor is not used again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from backends.model.backend_names import (
    BACKEND_NAMES,
    LEGACY_BACKEND,
    SUCCESSOR_BACKEND,
    BackendName,
)
from backends.model.status import NodeStatus
from backends.model.workflow import RunPlan

__all__ = [
    "BACKEND_NAMES",
    "LEGACY_BACKEND",
    "SUCCESSOR_BACKEND",
    "BackendHealth",
    "BackendName",
    "Executor",
    "NodeReport",
]


@dataclass(frozen=True)
class BackendHealth:
    backend: str
    up: bool
    detail: str = ""
    workers: int | None = None
    queued: Mapping[str, int] = field(default_factory=dict)
    #: Places holding work that no live worker serves (a work pool with flow runs waiting
    #: and no online worker): the backend answers, but nothing there can start.
    unserved: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeReport:
    """What the backend knows about a node the database thinks is running."""

    node_id: str
    attempt: int
    status: NodeStatus  # RETRYING (the backend will run it again) or FAILED (for good)
    error: str
    #: The backend lost the whole run (its orchestrating process died): every
    #: unfinished node fails, not only this one.
    run_lost: bool = False


@runtime_checkable
class Executor(Protocol):
    """One backend behind the gateway. See the module docstring for the contract."""

    @property
    def name(self) -> str: ...

    def submit(self, plan: RunPlan) -> None: ...

    def cancel(self, plan: RunPlan) -> None: ...

    def health(self) -> BackendHealth: ...

    def holdings(self) -> dict[str, int]: ...

    def reconcile(self, plan: RunPlan, running: Mapping[str, int]) -> Sequence[NodeReport]: ...

    def agree_with_record(self) -> None: ...

    def close(self) -> None: ...
