"""What resuming a run in a new Prefect flow run says about the attempts the old one lost.

Shared by the gateway's side (``executor.py``, which reports the nodes that were
running) and the flow (``flow.py``, which settles them if it starts first), so both
record the same reason and the journal keeps one row.
"""

from __future__ import annotations

__all__ = ["lost_attempt_error"]


def lost_attempt_error(attempt: int, *, retried: bool) -> str:
    """Why an attempt that ended with its flow-run process is retried or failed.

    >>> lost_attempt_error(2, retried=False)
    'attempt 2 was lost with its Prefect flow-run process, and no retries are left'
    """
    said = f"attempt {attempt} was lost with its Prefect flow-run process"
    return f"{said}; retried in a new flow run" if retried else f"{said}, and no retries are left"
