"""Small statistics over latency samples: percentiles and a summary record."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Summary", "percentile", "summarise"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([5.0], 99)
    5.0
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """A latency or duration sample, summarised (same unit as the samples)."""

    count: int
    mean: float
    p50: float
    p99: float
    minimum: float
    maximum: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(values: Sequence[float]) -> Summary:
    """Count, mean, p50, p99, min and max of ``values``.

    >>> summarise([1.0, 3.0]).p50
    2.0
    """
    return Summary(
        count=len(values),
        mean=statistics.fmean(values),
        p50=percentile(values, 50),
        p99=percentile(values, 99),
        minimum=min(values),
        maximum=max(values),
    )
