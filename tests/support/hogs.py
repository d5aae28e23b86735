"""Nodes that use what their limits forbid: memory, CPU time, and room for their error and
log lines (``python`` node callables)."""

from __future__ import annotations

import time
from typing import Any

from backends.nodes.base import NodeContext

__all__ = ["allocate", "burn", "shout"]


def allocate(megabytes: int, context: NodeContext) -> dict[str, int]:
    """Hold ``megabytes`` MiB, one MiB at a time, and say how much was held."""
    context.logger.info("allocating %d MiB", megabytes)
    held = [bytearray(2**20) for _ in range(megabytes)]
    return {"held_mb": len(held)}


def burn(seconds: float, context: NodeContext) -> dict[str, float]:
    """Use ``seconds`` of CPU time (not wall time: a loaded machine takes longer)."""
    context.logger.info("burning %s s of CPU", seconds)
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return {"burned_seconds": seconds}


def shout(size: int) -> None:
    """Print a line of ``size`` characters, then fail with an error as long."""
    print("y" * size)
    raise ValueError("cannot cast " + "z" * size)


def hog(function: str, limits: dict[str, int] | None, **kwargs: Any) -> dict[str, Any]:
    """The spec of a python node calling one of the hogs above, with ``limits`` if given."""
    spec: dict[str, Any] = {
        "type": "python",
        "config": {"callable": f"tests.support.hogs:{function}", "kwargs": kwargs},
    }
    if limits is not None:
        spec["limits"] = limits
    return spec
