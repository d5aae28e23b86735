"""Each workflow's runs per backend as distributions, for the console's charts.

The comparison report (``comparison.py``) gives percentiles and the judge's answer;
a person comparing two backends would rather look at the whole distribution. This
module keeps, per workflow and backend, every value of the figures the console draws
(queue wait, execution time), with the same definitions as the judge (it reads the
same records through :func:`gateway.reports.evidence.sample_of`), and the failure
rate with a Wilson score interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from backends.model.status import RunStatus
from backends.store.comparison_records import FinishedRunRecord
from gateway.reports.evidence import sample_of
from gateway.reports.judge import Figure

__all__ = ["DRAWN", "BackendSample", "samples_by_workflow", "wilson_interval"]

#: The figures the console draws as distributions.
DRAWN = (Figure.QUEUE_WAIT, Figure.EXECUTION_TIME)


def wilson_interval(failed: int, runs: int, *, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a failure rate (95% by default), as fractions.

    >>> [round(x, 4) for x in wilson_interval(0, 10)]
    [0.0, 0.2775]
    >>> [round(x, 4) for x in wilson_interval(5, 10)]
    [0.2366, 0.7634]
    """
    if runs == 0:
        return 0.0, 1.0
    rate = failed / runs
    denominator = 1 + z * z / runs
    centre = (rate + z * z / (2 * runs)) / denominator
    spread = z * math.sqrt(rate * (1 - rate) / runs + z * z / (4 * runs * runs)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


@dataclass
class BackendSample:
    """One workflow's finished client runs on one backend."""

    backend: str
    succeeded: int = 0
    failed: int = 0
    values: dict[Figure, list[float]] = field(default_factory=lambda: {f: [] for f in DRAWN})

    @property
    def runs(self) -> int:
        return self.succeeded + self.failed

    def add(self, run: FinishedRunRecord) -> None:
        if run.status is RunStatus.SUCCEEDED:
            self.succeeded += 1
        elif run.status is RunStatus.FAILED:
            self.failed += 1
        else:  # cancelled: counted by the comparison, judged in nothing, drawn in nothing
            return
        sample = sample_of(run)
        for figure in DRAWN:
            value = sample.value(figure)
            if value is not None:
                self.values[figure].append(value)


def samples_by_workflow(
    runs: Iterable[FinishedRunRecord], *, backends: tuple[str, ...]
) -> dict[str, dict[str, BackendSample]]:
    """Per workflow, per backend (every one of ``backends``, empty when it ran nothing)."""
    found: dict[str, dict[str, BackendSample]] = {}
    for run in runs:
        per_backend = found.setdefault(run.workflow_id, {b: BackendSample(b) for b in backends})
        per_backend.setdefault(run.backend, BackendSample(run.backend)).add(run)
    return found
