"""Workflow definitions, their validation, and the plan a backend executes.

A definition is what people write (``examples/workflows/*.yaml``); a
:class:`RunPlan` is the frozen snapshot of one definition for one run, which
is what executors and the node runtime work from. A run keeps its plan even if
the definition changes while it runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends.model import dag
from backends.model.backend_names import BackendName
from backends.model.errors import DefinitionError, DefinitionProblem
from backends.model.ids import PrintableId

__all__ = [
    "DEFAULT_MAX_LEVELS",
    "POOLS",
    "LimitCaps",
    "NodeConfigFacts",
    "NodeKind",
    "NodeLimits",
    "NodeSpec",
    "RunPlan",
    "WorkflowDefinition",
    "non_finite_number_at",
    "parse_definition",
    "shadow_refusal",
]


class NodeConfigFacts(Protocol):
    """What validation asks of a node's parsed config (``backends.nodes.NodeConfig``)."""

    def side_effects(self) -> str: ...

    def inputs_problem(self, upstream: Sequence[str]) -> str | None: ...


class LimitCaps(Protocol):
    """What validation asks of the operator's policy (``backends.nodes.policy.NodePolicy``)."""

    def cap_refusal(self, field_name: str, value: int) -> str | None: ...


class NodeKind(Protocol):
    """What validation asks of a node type (``backends.nodes.NodeType``); the model
    imports no node code, so node types are described here by what they answer."""

    @property
    def unavailable(self) -> Callable[[], str | None]: ...

    @property
    def policy(self) -> LimitCaps: ...

    def parse_config(self, raw: Mapping[str, Any], *, workspace_id: str) -> NodeConfigFacts: ...


DEFAULT_MAX_LEVELS = 20
#: Work pools (Prefect) and queues (RQ) a workflow can run on, most urgent first.
POOLS = ("priority", "postgres", "default")

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
_NODE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$"


class NodeLimits(BaseModel):
    """What one attempt of a node may use; the worker ends an attempt that goes over.

    Unset fields fall back to the worker's defaults (``FIGWAY_NODE_DEFAULT_MEMORY_MB``,
    ``FIGWAY_NODE_DEFAULT_CPU_SECONDS``); the operator's caps (``FIGWAY_NODE_MAX_*``)
    bound both. See docs/operations.md, "Resource limits per node attempt".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Strict: JSON's true is not 1 MiB.
    memory_mb: int | None = Field(
        default=None,
        ge=16,
        le=1_048_576,
        strict=True,
        description="Memory (MiB) the attempt may allocate beyond what its worker process "
        "holds when the attempt starts.",
    )
    cpu_seconds: int | None = Field(
        default=None,
        ge=1,
        le=604_800,
        strict=True,
        description="CPU time (seconds, user and system) the attempt may use.",
    )


class NodeSpec(BaseModel):
    """One node of a definition: its type, config, retry policy and resource limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=64)
    config: dict[str, Any] = Field(default_factory=dict)
    # Strict: JSON's true is not 1 retry, nor false a delay of 0 s.
    retries: int = Field(
        default=0, ge=0, le=20, strict=True, description="Attempts after the first."
    )
    retry_delay_seconds: float = Field(default=0, ge=0, le=86_400, strict=True)
    limits: NodeLimits | None = Field(
        default=None, description="Memory and CPU time one attempt may use."
    )


class WorkflowDefinition(BaseModel):
    """A workflow as clients define it: nodes and the dependencies between them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow_id: str = Field(pattern=_ID_PATTERN)
    workspace_id: PrintableId
    folder_id: PrintableId
    description: str = Field(default="", max_length=2_000)
    tags: list[PrintableId] = Field(default_factory=list, max_length=32)
    pool: str | None = Field(default=None, description="Override the pool chosen from the nodes.")
    backend: BackendName | None = Field(
        default=None, description="Run on this backend whatever the routing default says."
    )
    nodes: dict[str, NodeSpec] = Field(min_length=1, max_length=1_000)
    dependencies: dict[str, list[Annotated[str, Field(max_length=128)]]] = Field(
        default_factory=dict, max_length=1_000
    )

    def upstream(self) -> dict[str, list[str]]:
        """Every node mapped to its upstream nodes (empty when it has none)."""
        return {node_id: list(self.dependencies.get(node_id, [])) for node_id in self.nodes}

    def chosen_pool(self) -> str:
        """The pool this workflow runs on: its override, a ``priority`` tag, else default."""
        if self.pool:
            return self.pool
        if "priority" in self.tags:
            return "priority"
        if any(spec.type.startswith("postgres_") for spec in self.nodes.values()):
            return "postgres"
        return "default"


def parse_definition(
    raw: Mapping[str, Any],
    *,
    node_types: Mapping[str, NodeKind],
    max_levels: int = DEFAULT_MAX_LEVELS,
    max_nodes: int | None = None,
    max_query_chars: int | None = None,
) -> WorkflowDefinition:
    """Validate a definition, raising :class:`DefinitionError` with every problem found.

    ``max_nodes`` and ``max_query_chars`` (the query text of all nodes together) are
    checked first, so an oversized definition is refused before its queries are parsed.

    >>> from backends.nodes import default_registry
    >>> parse_definition({"workflow_id": "w", "workspace_id": "ws", "folder_id": "f",
    ...     "nodes": {"a": {"type": "noop"}}}, node_types=default_registry()).chosen_pool()
    'default'
    """
    oversized = _size_problems(raw, max_nodes=max_nodes, max_query_chars=max_query_chars)
    if oversized:
        raise DefinitionError(oversized)
    non_finite = non_finite_number_at(raw)
    if non_finite is not None:
        raise DefinitionError(
            [DefinitionProblem(non_finite, "numbers must be finite (JSON has no NaN or Infinity)")]
        )
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        raise DefinitionError([_problem_from(error) for error in exc.errors()]) from None
    problems = [
        *_node_problems(definition, node_types),
        *_dependency_problems(definition),
    ]
    if definition.pool is not None and definition.pool not in POOLS:
        problems.append(
            DefinitionProblem(
                "pool", f"unknown pool {definition.pool!r}; use one of {', '.join(POOLS)}"
            )
        )
    if problems:
        raise DefinitionError(problems)
    upstream = definition.upstream()
    cycle = dag.find_cycle(upstream)
    if cycle is not None:
        raise DefinitionError([DefinitionProblem("dependencies", "cycle: " + " -> ".join(cycle))])
    depth = len(dag.levels(upstream))
    if depth > max_levels:
        raise DefinitionError(
            [
                DefinitionProblem(
                    "dependencies",
                    f"the workflow has {depth} levels; at most {max_levels} are allowed",
                )
            ]
        )
    return definition


def shadow_refusal(
    definition: WorkflowDefinition, node_types: Mapping[str, NodeKind]
) -> str | None:
    """Why this workflow may not run as a shadow, or None when it may.

    A shadow run executes every node a second time, so a node that writes
    outside figway must be able to hold its writes back (``sandboxed``).

    >>> from backends.nodes import default_registry
    >>> raw = {"workflow_id": "w", "workspace_id": "ws", "folder_id": "f",
    ...     "nodes": {"load": {"type": "python", "config": {"callable": "backends.nodes.demo:mean"}}}}
    >>> print(shadow_refusal(parse_definition(raw, node_types=default_registry()),
    ...     default_registry()))
    node 'load' (python) declares side effects `unsafe` without a safe shadow mode; a shadow run would write twice (declare `side_effects: none` or `sandboxed` if it may shadow)
    """
    for node_id, spec in definition.nodes.items():
        config = node_types[spec.type].parse_config(
            spec.config, workspace_id=definition.workspace_id
        )
        effects = config.side_effects()
        if effects == "unsafe":
            return (
                f"node {node_id!r} ({spec.type}) declares side effects `{effects}` without a "
                "safe shadow mode; a shadow run would write twice (declare `side_effects: "
                "none` or `sandboxed` if it may shadow)"
            )
    return None


def non_finite_number_at(value: Any, path: str = "") -> str | None:
    """Where ``value`` holds NaN or an infinity (JSON has neither), or None.

    >>> non_finite_number_at({"kwargs": {"x": [1, float("nan")]}})
    'kwargs.x.1'
    """
    if isinstance(value, float) and not math.isfinite(value):
        return path or "."
    children: Iterable[tuple[Any, Any]] = ()
    if isinstance(value, Mapping):
        children = value.items()
    elif isinstance(value, list | tuple):
        children = enumerate(value)
    for key, child in children:
        found = non_finite_number_at(child, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _size_problems(
    raw: Mapping[str, Any], *, max_nodes: int | None, max_query_chars: int | None
) -> list[DefinitionProblem]:
    nodes = raw.get("nodes")
    if not isinstance(nodes, Mapping):
        return []  # the model names what is wrong with it
    problems = []
    if max_nodes is not None and len(nodes) > max_nodes:
        problems.append(
            DefinitionProblem("nodes", f"{len(nodes)} nodes; a workflow may have {max_nodes}")
        )
    if max_query_chars is not None:
        queries = {
            node_id: len(spec["config"]["query"])
            for node_id, spec in nodes.items()
            if isinstance(spec, Mapping)
            and isinstance(spec.get("config"), Mapping)
            and isinstance(spec["config"].get("query"), str)
        }
        total = sum(queries.values())
        if total > max_query_chars:
            largest = sorted(queries, key=queries.__getitem__, reverse=True)[:3]
            problems.append(
                DefinitionProblem(
                    "nodes",
                    f"the queries hold {total} characters together; a workflow may hold "
                    f"{max_query_chars} (largest: {', '.join(map(str, largest))})",
                )
            )
    return problems


def _problem_from(error: Mapping[str, Any]) -> DefinitionProblem:
    location = ".".join(str(part) for part in error["loc"])
    return DefinitionProblem(location, str(error["msg"]))


def _node_problems(
    definition: WorkflowDefinition, node_types: Mapping[str, NodeKind]
) -> list[DefinitionProblem]:
    problems: list[DefinitionProblem] = []
    for node_id, spec in definition.nodes.items():
        where = f"nodes.{node_id}"
        if not _valid_node_id(node_id):
            problems.append(
                DefinitionProblem(where, "node ids use letters, digits, _ . - (at most 128)")
            )
        node_type = node_types.get(spec.type)
        if node_type is None:
            known = ", ".join(sorted(node_types))
            problems.append(
                DefinitionProblem(
                    f"{where}.type", f"unknown node type {spec.type!r}; known types: {known}"
                )
            )
            continue
        missing = node_type.unavailable()
        if missing is not None:
            problems.append(DefinitionProblem(f"{where}.type", missing))
            continue
        problems.extend(_limit_problems(where, spec, node_type.policy))
        try:
            config = node_type.parse_config(spec.config, workspace_id=definition.workspace_id)
        except ValidationError as exc:
            problems.extend(
                DefinitionProblem(
                    f"{where}.config.{'.'.join(str(p) for p in e['loc'])}".rstrip("."), e["msg"]
                )
                for e in exc.errors()
            )
            continue
        inputs_problem = config.inputs_problem(definition.dependencies.get(node_id, []))
        if inputs_problem is not None:
            problems.append(DefinitionProblem(f"{where}.config", inputs_problem))
    return problems


def _limit_problems(where: str, spec: NodeSpec, caps: LimitCaps) -> list[DefinitionProblem]:
    """The node's limits that go over the operator's caps (``FIGWAY_NODE_MAX_*``)."""
    if spec.limits is None:
        return []
    problems = []
    for name, value in spec.limits.model_dump(exclude_none=True).items():
        refusal = caps.cap_refusal(f"max_{name}", value)
        if refusal is not None:
            problems.append(DefinitionProblem(f"{where}.limits.{name}", refusal))
    return problems


def _dependency_problems(definition: WorkflowDefinition) -> list[DefinitionProblem]:
    problems: list[DefinitionProblem] = []
    for node_id, upstream in definition.dependencies.items():
        if node_id not in definition.nodes:
            problems.append(
                DefinitionProblem(f"dependencies.{node_id}", f"unknown node {node_id!r}")
            )
        for parent in upstream:
            if parent not in definition.nodes:
                problems.append(
                    DefinitionProblem(f"dependencies.{node_id}", f"unknown dependency {parent!r}")
                )
    return problems


def _valid_node_id(node_id: str) -> bool:
    return re.fullmatch(_NODE_ID_PATTERN, node_id) is not None


@dataclass(frozen=True)
class RunPlan:
    """One run of one definition: everything a backend needs to execute it."""

    job_run_id: str
    workflow_id: str
    workspace_id: str
    folder_id: str
    job_id: str
    pool: str
    nodes: Mapping[str, NodeSpec]
    upstream: Mapping[str, tuple[str, ...]]
    parameters: Mapping[str, Any]
    #: A shadow run, executed only for comparison: its nodes must write nothing outside figway.
    sandboxed: bool = False

    @classmethod
    def from_definition(
        cls,
        definition: WorkflowDefinition,
        *,
        job_run_id: str,
        job_id: str,
        parameters: Mapping[str, Any] | None = None,
        sandboxed: bool = False,
    ) -> RunPlan:
        upstream = definition.upstream()
        return cls(
            job_run_id=job_run_id,
            workflow_id=definition.workflow_id,
            workspace_id=definition.workspace_id,
            folder_id=definition.folder_id,
            job_id=job_id,
            pool=definition.chosen_pool(),
            nodes=dict(definition.nodes),
            upstream={node: tuple(parents) for node, parents in upstream.items()},
            parameters=dict(parameters or {}),
            sandboxed=sandboxed,
        )

    def levels(self) -> list[list[str]]:
        """Node ids by level; nodes of one level may run in parallel."""
        return dag.levels(self.upstream)

    def downstream_of(self, node_id: str) -> set[str]:
        return dag.downstream_of(node_id, self.upstream)
