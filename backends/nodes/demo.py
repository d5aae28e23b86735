"""Callables figway ships for demonstrations: what the default policy lets ``python`` nodes call.

The ``hello`` example uses them, so the embedded default runs it with no setting at
all. Your own code goes in your own package, named in ``FIGWAY_PYTHON_CALLABLES``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from backends.nodes.base import NodeContext

__all__ = ["mean", "say_hello"]


def say_hello(name: str = "world", *, context: NodeContext) -> dict[str, str]:
    """Log and return a greeting.

    >>> import logging
    >>> from backends.nodes.base import NodeContext
    >>> context = NodeContext("run-1", "hi", 1, {}, {}, logging.getLogger("demo"))
    >>> say_hello("figway", context=context)
    {'greeting': 'hello, figway (run run-1)'}
    """
    greeting = f"hello, {name} (run {context.job_run_id})"
    context.logger.info(greeting)
    return {"greeting": greeting}


def mean(data: Sequence[float]) -> float:
    """The arithmetic mean of ``data``.

    >>> mean([1, 2, 3, 4])
    2.5
    """
    return statistics.fmean(data)
