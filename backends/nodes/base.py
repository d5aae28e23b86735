"""What a node type is, and what a node sees while it runs.

A node type is a plain function plus a pydantic model of its ``config``. Both
backends call the same function through the node runtime, so the same workflow
produces the same outputs on RQ and on Prefect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["NodeConfig", "NodeContext", "NodeType", "SideEffects"]

#: What a node does outside figway, which decides whether a shadow run may execute it:
#: ``none`` touches nothing; ``sandboxed`` writes, but writes nothing when
#: ``context.sandboxed`` is set; ``unsafe`` writes and cannot be held back.
SideEffects = Literal["none", "sandboxed", "unsafe"]


class NodeConfig(BaseModel):
    """Base of every node type's config: unknown keys are errors, so a typo is named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def side_effects(self) -> SideEffects:
        """What this node does outside figway; node types that write override this."""
        return "none"


@dataclass
class NodeContext:
    """What a running node may use: who it is, its inputs, a logger and the kill switch."""

    job_run_id: str
    node_id: str
    attempt: int
    parameters: Mapping[str, Any]
    upstream_outputs: Mapping[str, Any]
    logger: logging.Logger
    cancel_event: threading.Event = field(default_factory=threading.Event)
    #: A shadow run (executed only for comparison): write nothing outside figway.
    sandboxed: bool = False

    def cancelled(self) -> bool:
        """True once the run has been killed; long nodes should check it and return."""
        return self.cancel_event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True early when the run is killed meanwhile."""
        return self.cancel_event.wait(seconds)


@dataclass(frozen=True)
class NodeType:
    """A kind of node: its name in definitions, its config model and its function.

    ``run(config, context)`` returns the node's output (JSON-serialisable) or
    raises to fail the attempt.
    """

    name: str
    config_model: type[NodeConfig]
    run: Callable[[Any, NodeContext], object]
    description: str = ""
