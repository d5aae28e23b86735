"""What a node type is, and what a node sees while it runs.

A node type is a plain function plus a pydantic model of its ``config``. Both
backends call the same function through the node runtime, so the same workflow
produces the same outputs on RQ and on Prefect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo

from backends.artifacts import ArtifactRef, RunArtifacts
from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.policy import NodePolicy
from backends.runtime.secrets import EnvironmentSecrets, SecretResolver, SecretUse, secret_name

__all__ = [
    "Admission",
    "NodeCancelledError",
    "NodeConfig",
    "NodeContext",
    "NodeFailedError",
    "NodeType",
    "SideEffects",
]

#: What a node does outside figway, which decides whether a shadow run may execute it:
#: ``none`` touches nothing; ``sandboxed`` writes, but writes nothing when
#: ``context.sandboxed`` is set; ``unsafe`` writes and cannot be held back.
SideEffects = Literal["none", "sandboxed", "unsafe"]


@dataclass(frozen=True)
class Admission:
    """What a config is checked against besides its own shape: the operator's policy and
    the workspace of the workflow it belongs to (secrets are owned by workspaces)."""

    policy: NodePolicy
    workspace_id: str = ""

    def check_secret(self, value: str, *, use: SecretUse, host: str | None = None) -> None:
        """Raise ValueError when ``value`` names a secret its policy keeps from this use."""
        name = secret_name(value)
        if name is None:
            return
        refusal = self.policy.secrets.refusal(
            name, workspace_id=self.workspace_id, use=use, host=host
        )
        if refusal is not None:
            raise ValueError(refusal)

    @classmethod
    def of(cls, info: ValidationInfo) -> Admission:
        """The admission a validator runs under. A config validated without one (straight
        ``model_validate``) is held to the policy this process's settings describe."""
        context = info.context
        if isinstance(context, Admission):
            return context
        return cls(NodePolicy.from_environment())


def within_operator_cap(value: int, info: ValidationInfo) -> int:
    """A field validator: ``value``, unless it is over the operator's cap on the field
    (``FIGWAY_NODE_*``), checked where the workflow is defined and again on the worker."""
    assert info.field_name is not None
    refusal = Admission.of(info).policy.cap_refusal(info.field_name, value)
    if refusal is not None:
        raise ValueError(refusal)
    return value


class NodeConfig(BaseModel):
    """Base of every node type's config: unknown keys are errors, so a typo is named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def side_effects(self) -> SideEffects:
        """What this node does outside figway; node types that write override this."""
        return "none"

    def inputs_problem(self, upstream: Sequence[str]) -> str | None:
        """What is wrong with this node's inputs given its upstream nodes, or None.

        Checked when the workflow is defined, so a load that names a node it does
        not depend on is refused then, not when it runs.
        """
        return None


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
    #: Where this attempt writes its table outputs (None: nowhere, tables are refused).
    artifacts: RunArtifacts | None = None
    #: Turns ``secret:NAME`` into its value, and masks that value in logs and errors.
    secrets: SecretResolver = field(default_factory=lambda: SecretResolver(EnvironmentSecrets()))
    #: The operator's limits on where this node may connect (outbound HTTP, databases).
    policy: NodePolicy = field(default_factory=NodePolicy)

    def reveal(self, value: str, *, use: SecretUse = "code", host: str | None = None) -> str:
        """``value`` itself, or the secret it names (``secret:NAME``), as the secret's
        policy allows for ``use`` (and, sent over HTTP, ``host``). A python node's own
        code asks with the default use, ``code``."""
        return self.secrets.reveal(value, use=use, host=host)

    def table_store(self) -> RunArtifacts:
        if self.artifacts is None:
            raise NodeFailedError("this node runtime has no artifact store; table outputs need one")
        return self.artifacts

    def upstream_table(self, node_id: str) -> ArtifactRef:
        """The table an upstream node produced; fails the node clearly when it made none."""
        reference = ArtifactRef.from_output(self.upstream_outputs.get(node_id))
        if reference is None:
            raise NodeFailedError(f"upstream node {node_id!r} produced no table")
        return reference

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
    #: Why this type cannot run on this install (an optional extra is missing), or None.
    #: Checked when a workflow is defined, so the workflow is refused with the fix.
    unavailable: Callable[[], str | None] = lambda: None
    #: Its nodes run code the definition names (``python``): defining one is a privilege
    #: of its own (the ``code`` scope), beyond defining workflows.
    runs_code: bool = False
    #: The operator's limits its configs are held to (bound by the registry).
    policy: NodePolicy = field(default_factory=NodePolicy)

    def parse_config(self, raw: Mapping[str, Any], *, workspace_id: str = "") -> NodeConfig:
        """The node's config, validated against its shape and the policy; raises
        pydantic's ``ValidationError`` naming the field."""
        return self.config_model.model_validate(raw, context=Admission(self.policy, workspace_id))
