"""Workflow definitions: what parse_definition accepts, what it refuses and where it says."""

from __future__ import annotations

from typing import Any

import pytest

from backends.model.errors import DefinitionError, DefinitionProblem
from backends.model.workflow import DEFAULT_MAX_LEVELS, WorkflowDefinition, parse_definition
from backends.nodes import default_registry
from backends.nodes.policy import NodePolicy


def definition(
    nodes: dict[str, Any],
    dependencies: dict[str, list[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "workflow_id": "wf",
        "workspace_id": "ws1",
        "folder_id": "folder1",
        "nodes": nodes,
        **extra,
    }
    if dependencies is not None:
        raw["dependencies"] = dependencies
    return raw


def chain(length: int) -> dict[str, Any]:
    """A definition whose nodes n0 <- n1 <- ... form ``length`` levels."""
    nodes = {f"n{i}": {"type": "noop"} for i in range(length)}
    dependencies = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(length)}
    return definition(nodes, dependencies)


def parse(raw: dict[str, Any], **kwargs: Any) -> WorkflowDefinition:
    return parse_definition(raw, node_types=default_registry(), **kwargs)


def problems_of(raw: dict[str, Any], **kwargs: Any) -> list[DefinitionProblem]:
    with pytest.raises(DefinitionError) as caught:
        parse(raw, **kwargs)
    assert caught.value.problems, "a DefinitionError must carry at least one problem"
    return caught.value.problems


def only_problem(raw: dict[str, Any], **kwargs: Any) -> DefinitionProblem:
    problems = problems_of(raw, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def test_a_valid_definition_is_parsed_with_its_graph() -> None:
    raw = definition(
        {
            "extract": {"type": "sleep", "config": {"seconds": 0.5}, "retries": 2},
            "check": {"type": "fail", "config": {"times": 1}},
            "load": {"type": "python", "config": {"callable": "statistics:mean"}},
        },
        {"extract": [], "load": ["extract", "check"]},
        tags=["non-critical"],
    )
    parsed = parse(raw)
    assert parsed.workflow_id == "wf"
    assert parsed.nodes["extract"].retries == 2
    assert parsed.nodes["extract"].config == {"seconds": 0.5}
    assert parsed.upstream() == {"extract": [], "check": [], "load": ["extract", "check"]}


def test_a_cycle_is_refused_naming_its_nodes() -> None:
    raw = definition(
        {name: {"type": "noop"} for name in ("a", "b", "c", "x")},
        {"a": ["c"], "b": ["a"], "c": ["b", "x"]},
    )
    problem = only_problem(raw)
    assert problem.location == "dependencies"
    assert problem.message == "cycle: a -> c -> b -> a"


def test_a_node_depending_on_itself_is_a_cycle() -> None:
    problem = only_problem(definition({"a": {"type": "noop"}}, {"a": ["a"]}))
    assert problem.message == "cycle: a -> a"


def test_an_unknown_dependency_is_named() -> None:
    problem = only_problem(definition({"a": {"type": "noop"}}, {"a": ["missing_parent"]}))
    assert problem.location == "dependencies.a"
    assert "missing_parent" in problem.message


def test_dependencies_of_an_unknown_node_are_refused() -> None:
    problem = only_problem(definition({"a": {"type": "noop"}}, {"ghost": ["a"]}))
    assert problem.location == "dependencies.ghost"
    assert "ghost" in problem.message


def test_an_unknown_node_type_is_named_with_the_known_ones() -> None:
    problem = only_problem(definition({"a": {"type": "teleport"}}))
    assert problem.location == "nodes.a.type"
    assert "teleport" in problem.message
    assert "noop" in problem.message  # the known types are listed


def test_the_default_depth_limit_accepts_20_levels() -> None:
    assert DEFAULT_MAX_LEVELS == 20
    assert len(parse(chain(20)).nodes) == 20


def test_the_default_depth_limit_refuses_21_levels_saying_the_limit() -> None:
    problem = only_problem(chain(21))
    assert problem.location == "dependencies"
    assert "21 levels" in problem.message
    assert "at most 20" in problem.message


def test_a_custom_depth_limit_applies() -> None:
    assert len(parse(chain(3), max_levels=3).nodes) == 3
    problem = only_problem(chain(4), max_levels=3)
    assert "at most 3" in problem.message
    # A wider limit lets through what the default refuses.
    assert len(parse(chain(21), max_levels=25).nodes) == 21


@pytest.mark.parametrize(
    ("node", "location"),
    [
        ({"type": "sleep", "config": {"seconds": -1}}, "nodes.a.config.seconds"),
        ({"type": "sleep", "config": {}}, "nodes.a.config.seconds"),
        ({"type": "fail", "config": {"bogus": 1}}, "nodes.a.config.bogus"),
        ({"type": "fail", "config": {"times": 0}}, "nodes.a.config.times"),
        ({"type": "python", "config": {"callable": "no_colon_here"}}, "nodes.a.config.callable"),
        ({"type": "noop", "config": {"anything": True}}, "nodes.a.config.anything"),
    ],
    ids=[
        "sleep-negative",
        "sleep-missing-seconds",
        "fail-unknown-key",
        "fail-times-zero",
        "python-no-colon",
        "noop-extra-key",
    ],
)
def test_an_invalid_node_config_names_the_field(node: dict[str, Any], location: str) -> None:
    assert only_problem(definition({"a": node})).location == location


def test_every_invalid_node_is_reported_at_once() -> None:
    raw = definition(
        {
            "a": {"type": "sleep", "config": {"seconds": -1}},
            "b": {"type": "teleport"},
            "c": {"type": "noop"},
        },
        {"c": ["nowhere"]},
    )
    locations = {problem.location for problem in problems_of(raw)}
    assert locations == {"nodes.a.config.seconds", "nodes.b.type", "dependencies.c"}


def test_negative_retries_are_refused() -> None:
    problem = only_problem(definition({"a": {"type": "noop", "retries": -1}}))
    assert problem.location == "nodes.a.retries"


def test_a_nodes_limits_are_kept_and_bad_ones_refused_naming_the_field() -> None:
    limits = {"memory_mb": 512, "cpu_seconds": 30}
    parsed = parse(definition({"a": {"type": "noop", "limits": limits}}))
    assert parsed.nodes["a"].limits is not None
    assert parsed.nodes["a"].limits.model_dump() == limits
    for bad, location in [
        ({"memory_mb": 0}, "nodes.a.limits.memory_mb"),
        ({"cpu_seconds": True}, "nodes.a.limits.cpu_seconds"),  # JSON's true is no number
        ({"cpu_seconds": 1.5}, "nodes.a.limits.cpu_seconds"),
        ({"threads": 2}, "nodes.a.limits.threads"),
    ]:
        assert only_problem(definition({"a": {"type": "noop", "limits": bad}})).location == (
            location
        )


def test_limits_over_the_operators_caps_are_refused_naming_node_field_and_setting() -> None:
    capped = default_registry(NodePolicy(max_memory_mb=512, max_cpu_seconds=60))
    within = definition({"a": {"type": "noop", "limits": {"memory_mb": 512, "cpu_seconds": 60}}})
    assert parse_definition(within, node_types=capped).nodes["a"].limits is not None
    over = definition(
        {
            "a": {"type": "noop", "limits": {"memory_mb": 2048}},
            "b": {"type": "noop", "limits": {"cpu_seconds": 61}},
        }
    )
    with pytest.raises(DefinitionError) as caught:
        parse_definition(over, node_types=capped)
    assert {(p.location, p.message) for p in caught.value.problems} == {
        ("nodes.a.limits.memory_mb", "at most 512 (FIGWAY_NODE_MAX_MEMORY_MB)"),
        ("nodes.b.limits.cpu_seconds", "at most 60 (FIGWAY_NODE_MAX_CPU_SECONDS)"),
    }


def test_an_unknown_pool_is_refused_listing_the_pools() -> None:
    problem = only_problem(definition({"a": {"type": "noop"}}, pool="gpu"))
    assert problem.location == "pool"
    assert "gpu" in problem.message
    assert "priority" in problem.message


@pytest.mark.parametrize(
    ("field", "value"),
    [("workflow_id", "has space"), ("workflow_id", "x" * 129), ("workspace_id", "")],
)
def test_invalid_ids_are_refused_naming_the_field(field: str, value: str) -> None:
    raw = definition({"a": {"type": "noop"}})
    raw[field] = value
    assert only_problem(raw).location == field


def test_an_invalid_node_id_is_named() -> None:
    problem = only_problem(definition({"bad id!": {"type": "noop"}}))
    assert problem.location == "nodes.bad id!"


def test_unknown_top_level_keys_are_refused() -> None:
    assert only_problem(definition({"a": {"type": "noop"}}, schedule="daily")).location == (
        "schedule"
    )


def test_a_definition_without_nodes_is_refused() -> None:
    assert only_problem(definition({})).location == "nodes"


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(definition({"a": {"type": "teleport"}, "b": {"type": "sleep"}}))
    assert "nodes.a.type" in str(caught.value)
    assert "nodes.b.config.seconds" in str(caught.value)


@pytest.mark.parametrize(
    ("extra", "nodes", "pool"),
    [
        ({"pool": "postgres", "tags": ["priority"]}, {"a": {"type": "noop"}}, "postgres"),
        ({"tags": ["priority"]}, {"a": {"type": "noop"}}, "priority"),
        ({"tags": ["non-critical"]}, {"a": {"type": "noop"}}, "default"),
        ({}, {"a": {"type": "noop"}}, "default"),
        ({"pool": "default", "tags": ["priority"]}, {"a": {"type": "noop"}}, "default"),
    ],
    ids=["override-wins", "priority-tag", "other-tag", "default", "override-beats-tag"],
)
def test_chosen_pool(extra: dict[str, Any], nodes: dict[str, Any], pool: str) -> None:
    assert parse(definition(nodes, **extra)).chosen_pool() == pool


def test_chosen_pool_puts_postgres_nodes_on_the_postgres_pool() -> None:
    # No postgres_* node type ships yet, so build the definition without the registry check.
    postgres = WorkflowDefinition.model_validate(
        definition({"extract": {"type": "postgres_extract"}, "b": {"type": "noop"}})
    )
    assert postgres.chosen_pool() == "postgres"
    tagged = WorkflowDefinition.model_validate(
        definition({"extract": {"type": "postgres_extract"}}, tags=["priority"])
    )
    assert tagged.chosen_pool() == "priority"
