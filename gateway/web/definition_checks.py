"""Checking workflow definitions in processes of their own, off the gateway's event loop.

Validating a definition parses every query with DuckDB, which holds Python's GIL while
it parses: in a thread of the gateway's process, ten large definitions at once kept the
event loop (and /healthz) waiting for seconds. So the check runs in a small pool of
worker processes (spawned, not forked: the gateway has threads), each with its own
GIL; the gateway only waits for the answer. ``figway serve`` starts a process at once,
so the first definition does not pay for the imports; an app in a test starts its pool
with its first definition.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from backends.model.errors import DefinitionError, DefinitionProblem
from backends.model.workflow import WorkflowDefinition, parse_definition
from backends.nodes import NodePolicy, NodeRegistry, default_registry

__all__ = ["DefinitionChecker", "DefinitionLimits"]

#: Processes checking definitions at once, per gateway.
PROCESSES = 2


@dataclass(frozen=True)
class DefinitionLimits:
    max_levels: int
    max_nodes: int
    max_query_chars: int


_registry: tuple[NodePolicy, NodeRegistry] | None = None


def _check(
    raw: Mapping[str, Any], policy: NodePolicy, limits: DefinitionLimits
) -> tuple[WorkflowDefinition | None, list[tuple[str, str]]]:
    """In a pool process: the parsed definition, or its problems (as plain pairs, which
    cross the process boundary whole; an exception's own arguments would not)."""
    global _registry
    if _registry is None or _registry[0] != policy:
        _registry = (policy, default_registry(policy))
    try:
        parsed = parse_definition(
            raw,
            node_types=_registry[1],
            max_levels=limits.max_levels,
            max_nodes=limits.max_nodes,
            max_query_chars=limits.max_query_chars,
        )
    except DefinitionError as refused:
        return None, [(problem.location, problem.message) for problem in refused.problems]
    return parsed, []


def _ready() -> bool:
    return True


class DefinitionChecker:
    """Validates definitions in a process pool; one per app, closed with it."""

    def __init__(self, policy: NodePolicy, limits: DefinitionLimits, *, warm: bool) -> None:
        """``warm``: start a process now (``figway serve``), so the first definition does
        not wait for its imports; otherwise the pool starts with the first definition."""
        self.policy = policy
        self.limits = limits
        self._pool: ProcessPoolExecutor | None = None
        if warm:
            self._processes().submit(_ready)

    def _processes(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=PROCESSES, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    async def parse(self, raw: Mapping[str, Any]) -> WorkflowDefinition:
        """The definition, validated; raises :class:`DefinitionError` with every problem."""
        loop = asyncio.get_running_loop()
        parsed, problems = await loop.run_in_executor(
            self._processes(), _check, dict(raw), self.policy, self.limits
        )
        if parsed is None:
            raise DefinitionError([DefinitionProblem(where, what) for where, what in problems])
        return parsed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
