"""A node that waits for the test: a ``python`` node holds its run until a file appears,
so that a test can be sure of something (a watcher connected, say) before the run goes on."""

from __future__ import annotations

import time
from pathlib import Path

from backends.nodes.base import NodeContext

__all__ = ["wait_for_file"]


def wait_for_file(path: str, context: NodeContext, timeout: float = 120) -> dict[str, str]:
    """Return once ``path`` exists; fail the node after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)
    context.logger.info("gate %s opened", path)
    return {"opened": path}
