"""Settling what nobody else will: interrupted cancels, unstarted shadows, runs no backend
took, and runs whose workers went quiet, judged by what their backend still holds.

A run left ``pending`` (its gateway stopped mid-submit, or its backend was unreachable
and the client never repeated the request) is submitted again to the backend it was
routed to, through the executor contract: once its submit claim has expired, or, when
its submission failed, every ``FIGWAY_NODE_SILENCE_SECONDS``; a backend that refuses it
fails it with the backend's reason.

Each gateway runs :meth:`Reconciler.reconcile_once` every
``FIGWAY_RECONCILE_INTERVAL_SECONDS``. Every move it makes goes through the store's
state machine, so two gateways reconciling the same run change it once.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta

from backends.contract import Executor
from backends.model.errors import BackendError, BackendUnavailableError
from backends.store import Store
from gateway.config import Settings
from gateway.dispatch.dispatcher import stop_on_backend

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

#: Quiet runs remembered between reconcile rounds; the memory starts over past this.
_QUIET_MEMORY = 10_000


class Reconciler:
    def __init__(
        self, *, store: Store, executors: Mapping[str, Executor], settings: Settings
    ) -> None:
        self.store = store
        self.executors = executors
        self.settings = settings
        # When each quiet run was last asked about (monotonic seconds).
        self._quiet_asked: dict[str, float] = {}

    def reconcile_once(self) -> int:
        """Finish interrupted cancels and settle nodes whose worker went silent.

        Returns how many nodes or runs it settled.
        """
        settled = 0
        # A shadow's gateway stops between recording and submitting it: nobody else will.
        claim = timedelta(seconds=self.settings.submit_claim_seconds)
        # A failed submission is tried again every silence window: within the bound.
        retry_after = timedelta(seconds=self.settings.node_silence_seconds)
        for job_run_id in self.store.unsubmitted_runs(claim=claim, retry_after=retry_after):
            settled += self._submit_again(job_run_id, claim)
        for job_run_id in self.store.unstarted_shadows(older_than=2 * claim):
            self.store.abandon_run(
                job_run_id=job_run_id, reason="shadow not started: its gateway stopped first"
            )
            settled += 1
        for job_run_id in self.store.cancelling_runs():
            run = self.store.get_run(job_run_id=job_run_id, with_nodes=False)
            if run is None:
                continue
            try:
                stop_on_backend(self.store, self.executors, run)
                settled += 1
            except BackendUnavailableError as exc:
                log.warning("cannot finish cancelling %s yet: %s", job_run_id, exc)

        silent = timedelta(seconds=self.settings.node_silence_seconds)
        by_run: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for stale in self.store.stale_nodes(silent_for=silent):
            by_run[(stale.job_run_id, stale.backend)][stale.node_id] = stale.attempt
        now = time.monotonic()
        for job_run_id, backend in self.store.active_runs_without_running_nodes(silent_for=silent):
            # A queued run waiting for a busy pool stays quiet for long: ask about it once
            # per silence window, not every round, so a backlog does not swamp the backend.
            if now - self._quiet_asked.get(job_run_id, -math.inf) >= silent.total_seconds():
                self._quiet_asked[job_run_id] = now
                by_run.setdefault((job_run_id, backend), {})
        if len(self._quiet_asked) > _QUIET_MEMORY:
            self._quiet_asked.clear()
        for (job_run_id, backend), running in by_run.items():
            plan = self.store.load_plan(job_run_id=job_run_id)
            executor = self.executors.get(backend)
            if plan is None or executor is None:
                continue
            try:
                reports = executor.reconcile(plan, running)
            except BackendUnavailableError as exc:
                log.warning("cannot reconcile %s yet: %s", job_run_id, exc)
                continue
            lost = next((r for r in reports if r.run_lost), None)
            if lost is not None:
                self.store.abandon_run(job_run_id=job_run_id, reason=lost.error)
                log.warning("run %s lost on %s: %s", job_run_id, backend, lost.error)
                settled += 1
                continue
            for report in reports:
                outcome = self.store.record_node(
                    job_run_id=job_run_id,
                    node_id=report.node_id,
                    attempt=report.attempt,
                    status=report.status,
                    error=report.error,
                )
                settled += int(outcome.applied)
                log.warning("run %s node %s: %s", job_run_id, report.node_id, report.error)
        return settled

    def _submit_again(self, job_run_id: str, claim: timedelta) -> int:
        """Submit a pending run nobody holds to its own backend; 1 if it was settled."""
        if not self.store.claim_submission(job_run_id=job_run_id, stale_after=claim):
            return 0  # a client's repeated request (or another gateway) took it meanwhile
        run = self.store.get_run(job_run_id=job_run_id, with_nodes=False)
        plan = self.store.load_plan(job_run_id=job_run_id)
        executor = self.executors.get(run.backend) if run is not None else None
        if run is None or plan is None or executor is None:
            return 0
        try:
            executor.submit(plan)
        except BackendUnavailableError as exc:
            # Still pending, with the reason; tried again once the claim window has passed.
            self.store.mark_submit_failed(job_run_id=job_run_id, error=str(exc))
            log.warning("run %s still not submitted to %s: %s", job_run_id, run.backend, exc)
            return 0
        except BackendError as exc:
            reason = f"{run.backend} refused the run when it was submitted again: {exc.message}"
            self.store.abandon_run(job_run_id=job_run_id, reason=reason)
            log.warning("run %s failed: %s", job_run_id, reason)
            return 1
        self.store.mark_submitted(job_run_id=job_run_id)
        log.warning(
            "run %s was pending with no submission under way; submitted it to %s",
            job_run_id,
            run.backend,
        )
        return 1
