"""The ETL node types' configs, checked when a workflow is defined.

Every bad config is refused by ``parse_definition`` with a problem at the exact
field (``nodes.load.config.table``), so a client can point at what to fix;
good configs, secret references and ``param:`` parameters included, pass.
"""

from __future__ import annotations

from typing import Any

import pytest

from backends.model.errors import DefinitionError, DefinitionProblem
from backends.model.workflow import WorkflowDefinition, parse_definition, shadow_refusal
from backends.nodes import NodeRegistry, NodeType, default_registry
from backends.nodes.builtin import BUILTIN_NODE_TYPES, NoopConfig, run_noop

PG_EXTRACT = {"connection": "secret:pg-sales", "query": "select id, amount from orders"}
MYSQL_EXTRACT = {"connection": "secret:mysql-crm", "query": "select id, region from customers"}
TRANSFORM = {"query": "select region, sum(amount) as revenue from orders group by region"}
PG_LOAD = {"connection": "secret:pg-target", "table": "revenue"}


def definition(
    nodes: dict[str, Any], dependencies: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {
        "workflow_id": "etl",
        "workspace_id": "ws",
        "folder_id": "f",
        "nodes": nodes,
        "dependencies": dependencies or {},
    }


def parse(raw: dict[str, Any], node_types: NodeRegistry | None = None) -> WorkflowDefinition:
    return parse_definition(raw, node_types=node_types or default_registry())


def problems_of(
    raw: dict[str, Any], node_types: NodeRegistry | None = None
) -> list[DefinitionProblem]:
    with pytest.raises(DefinitionError) as refused:
        parse(raw, node_types)
    return refused.value.problems


def one_node(node_type: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The node (as ``load`` for a load, ``x`` otherwise) fed by one upstream transform."""
    node_id = "load" if node_type == "postgres_load" else "x"
    raw = definition(
        {
            "source": {"type": "sql_transform", "config": TRANSFORM},
            node_id: {"type": node_type, "config": config},
        },
        {node_id: ["source"]},
    )
    return node_id, raw


# -- refused ---------------------------------------------------------------------------

REFUSED = [
    # (node type, config, field with the problem, words its message must hold)
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "connection": "postgresql://etl:hunter22@db:5432/sales"},
        "connection",
        "secret",
        id="pg url with a password",
    ),
    pytest.param(
        "postgres_load",
        {**PG_LOAD, "connection": "postgres://etl:hunter22@db/target"},
        "connection",
        "secret",
        id="load url with a password",
    ),
    pytest.param(
        "mysql_extract",
        {**MYSQL_EXTRACT, "connection": "mysql://etl:hunter22@db/crm"},
        "connection",
        "secret",
        id="mysql url with a password",
    ),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "connection": "postgresql://etl@db/sales?password=hunter22"},
        "connection",
        "secret",
        id="pg password in the query string",
    ),
    pytest.param(
        "postgres_load",
        {**PG_LOAD, "connection": "postgresql://db/target?user=etl&password=hunter22"},
        "connection",
        "secret",
        id="load password in the query string",
    ),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "connection": "mysql://etl@db/sales"},
        "connection",
        "postgresql://",
        id="mysql scheme for postgres",
    ),
    pytest.param(
        "mysql_extract",
        {**MYSQL_EXTRACT, "connection": "postgresql://etl@db/crm"},
        "connection",
        "mysql://",
        id="postgres scheme for mysql",
    ),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "connection": "db.internal:5432/sales"},
        "connection",
        "scheme",
        id="no scheme",
    ),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "connection": "postgresql:///sales"},
        "connection",
        "host",
        id="no host",
    ),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "connection": "secret:pg sales!"},
        "connection",
        "secret name",
        id="bad secret name",
    ),
    pytest.param(
        "mysql_extract",
        {**MYSQL_EXTRACT, "connection": "secret:"},
        "connection",
        "secret name",
        id="empty secret name",
    ),
    pytest.param(
        "postgres_load",
        {**PG_LOAD, "connection": "secret:" + "a" * 64},
        "connection",
        "at most 63",
        id="secret name too long",
    ),
    pytest.param(
        "postgres_extract", {"connection": "secret:pg-sales"}, "query", "required", id="no query"
    ),
    pytest.param(
        "mysql_extract", {**MYSQL_EXTRACT, "query": ""}, "query", "at least 1", id="empty query"
    ),
    pytest.param("sql_transform", {}, "query", "required", id="transform without query"),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "querry": "select 1"},
        "querry",
        "not permitted",
        id="typo in a key",
    ),
    pytest.param(
        "postgres_load", {**PG_LOAD, "tabel": "x"}, "tabel", "not permitted", id="load typo"
    ),
    pytest.param(
        "sql_transform",
        {**TRANSFORM, "memory_limit": 512},
        "memory_limit",
        "not permitted",
        id="transform typo",
    ),
    pytest.param(
        "postgres_extract", {**PG_EXTRACT, "batch_size": 0}, "batch_size", "1", id="batch 0"
    ),
    pytest.param(
        "mysql_extract", {**MYSQL_EXTRACT, "batch_size": 0}, "batch_size", "1", id="mysql batch 0"
    ),
    pytest.param(
        "postgres_load", {**PG_LOAD, "batch_size": 0}, "batch_size", "1", id="load batch 0"
    ),
    pytest.param(
        "postgres_extract",
        {**PG_EXTRACT, "statement_timeout_seconds": 0},
        "statement_timeout_seconds",
        "greater than 0",
        id="timeout 0",
    ),
    pytest.param(
        "postgres_load",
        {**PG_LOAD, "table": "x; drop table y"},
        "table",
        "pattern",
        id="table injection",
    ),
    pytest.param(
        "postgres_load",
        {**PG_LOAD, "table": 'revenue" cascade; --'},
        "table",
        "pattern",
        id="table quote injection",
    ),
    pytest.param(
        "postgres_load", {**PG_LOAD, "table": "a.b.c"}, "table", "pattern", id="three part name"
    ),
    pytest.param(
        "postgres_load", {**PG_LOAD, "table": "revenue\n"}, "table", "pattern", id="table newline"
    ),
    pytest.param(
        "postgres_load", {**PG_LOAD, "mode": "upsert"}, "mode", "'replace'", id="bad mode"
    ),
    pytest.param(
        "postgres_load", {**PG_LOAD, "mode": "Replace"}, "mode", "'replace'", id="mode case"
    ),
    pytest.param(
        "sql_transform",
        {"query": "select * from source; drop table orders"},
        "query",
        "one SELECT only",
        id="two statements",
    ),
    pytest.param(
        "sql_transform",
        {"query": "select 1; select 2;"},
        "query",
        "several statements",
        id="two selects",
    ),
    pytest.param(
        "sql_transform",
        {**TRANSFORM, "memory_limit_mb": 8},
        "memory_limit_mb",
        "16",
        id="memory below 16 MB",
    ),
]


@pytest.mark.parametrize(("node_type", "config", "field", "words"), REFUSED)
def test_a_bad_config_is_refused_at_its_field(
    node_type: str, config: dict[str, Any], field: str, words: str
) -> None:
    node_id, raw = one_node(node_type, config)
    problems = problems_of(raw)
    assert [p.location for p in problems] == [f"nodes.{node_id}.config.{field}"], problems
    assert words in problems[0].message
    assert "hunter22" not in "; ".join(str(p) for p in problems)  # never echo a password


def test_a_parameter_must_be_a_scalar() -> None:
    _, raw = one_node("postgres_extract", {**PG_EXTRACT, "parameters": {"ids": [1, 2]}})
    problems = problems_of(raw)
    assert problems
    assert all(p.location.startswith("nodes.x.config.parameters.ids") for p in problems)


def test_every_bad_node_is_named_at_once() -> None:
    raw = definition(
        {
            "extract": {"type": "postgres_extract", "config": {"connection": "mysql://db/x"}},
            "load": {"type": "postgres_load", "config": {**PG_LOAD, "mode": "merge"}},
        },
        {"load": ["extract"]},
    )
    assert sorted(p.location for p in problems_of(raw)) == [
        "nodes.extract.config.connection",
        "nodes.extract.config.query",
        "nodes.load.config.mode",
    ]


# -- a load's input --------------------------------------------------------------------


def two_sources_and_a_load(load_config: dict[str, Any]) -> dict[str, Any]:
    return definition(
        {
            "orders": {"type": "postgres_extract", "config": PG_EXTRACT},
            "customers": {"type": "mysql_extract", "config": MYSQL_EXTRACT},
            "load": {"type": "postgres_load", "config": load_config},
        },
        {"load": ["orders", "customers"]},
    )


def test_a_load_input_must_be_one_of_its_dependencies() -> None:
    problems = problems_of(two_sources_and_a_load({**PG_LOAD, "input": "revenue"}))
    assert [p.location for p in problems] == ["nodes.load.config"]
    assert "'revenue'" in problems[0].message
    assert "(orders, customers)" in problems[0].message


def test_a_load_with_two_dependencies_must_name_its_input() -> None:
    problems = problems_of(two_sources_and_a_load(PG_LOAD))
    assert [p.location for p in problems] == ["nodes.load.config"]
    assert "2 nodes" in problems[0].message
    assert "`input`" in problems[0].message


def test_a_load_without_dependencies_is_refused() -> None:
    raw = definition({"load": {"type": "postgres_load", "config": PG_LOAD}})
    assert [p.location for p in problems_of(raw)] == ["nodes.load.config"]


def test_a_load_naming_one_of_its_dependencies_is_accepted() -> None:
    parsed = parse(two_sources_and_a_load({**PG_LOAD, "input": "customers"}))
    assert parsed.nodes["load"].config["input"] == "customers"


# -- accepted --------------------------------------------------------------------------

ACCEPTED = [
    pytest.param(
        "postgres_extract",
        {
            "connection": "secret:PG_Sales",
            "query": "select * from orders where day = %(day)s and shop = %(shop)s",
            "parameters": {"day": "param:day", "shop": 7, "active": True, "note": None},
            "batch_size": 1,
            "statement_timeout_seconds": 30,
        },
        id="pg with secret and params",
    ),
    pytest.param(
        "postgres_extract",
        {"connection": "postgresql+psycopg://etl@db.internal:5433/sales", "query": "select 1"},
        id="pg url without password",
    ),
    pytest.param(
        "postgres_extract",
        {"connection": "postgres://db/sales?sslmode=require", "query": "select 1"},
        id="postgres scheme with options",
    ),
    pytest.param(
        "mysql_extract",
        {**MYSQL_EXTRACT, "parameters": {"region": "param:region"}, "batch_size": 1_000_000},
        id="mysql with params",
    ),
    pytest.param(
        "mysql_extract",
        {"connection": "mariadb://etl@db:3306/crm", "query": "select 1"},
        id="mariadb url",
    ),
    pytest.param(
        "sql_transform", {"query": "select ';' as semicolon from source;"}, id="quoted semicolon"
    ),
    pytest.param(
        "sql_transform",
        {"query": "select 1 -- no; second statement\n", "memory_limit_mb": 16, "threads": 1},
        id="comment",
    ),
    pytest.param(
        "postgres_load",
        {**PG_LOAD, "table": "analytics.revenue_2026", "mode": "replace", "batch_size": 10},
        id="schema-qualified replace",
    ),
    pytest.param("postgres_load", {**PG_LOAD, "mode": "create", "input": "source"}, id="input"),
]


@pytest.mark.parametrize(("node_type", "config"), ACCEPTED)
def test_a_good_config_is_accepted(node_type: str, config: dict[str, Any]) -> None:
    node_id, raw = one_node(node_type, config)
    parsed = parse(raw)
    assert parsed.nodes[node_id].config == config  # stored as written, secrets by name
    model = default_registry()[node_type].config_model.model_validate(config)
    assert model.inputs_problem(["source"]) is None


def test_defaults_are_filled_in_when_the_node_runs() -> None:
    registry = default_registry()
    extract = registry["postgres_extract"].config_model.model_validate(PG_EXTRACT)
    load = registry["postgres_load"].config_model.model_validate(PG_LOAD)
    assert (extract.batch_size, extract.parameters, extract.statement_timeout_seconds) == (
        10_000,
        {},
        None,
    )
    assert (load.mode, load.input, load.batch_size) == ("append", None, 10_000)


def test_a_definition_never_holds_a_revealed_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_PG_SALES", "postgresql://etl:hunter22@db/sales")
    _, raw = one_node("postgres_extract", PG_EXTRACT)
    assert "hunter22" not in parse(raw).model_dump_json()


# -- availability and side effects -----------------------------------------------------


def test_a_node_type_missing_its_extra_is_refused_with_the_fix() -> None:
    needs_extra = NodeType(
        "needs_extra",
        NoopConfig,
        run_noop,
        unavailable=lambda: "install figway[extra] to use needs_extra",
    )
    registry = NodeRegistry([*BUILTIN_NODE_TYPES, needs_extra])
    raw = definition({"x": {"type": "needs_extra", "config": {"typo": 1}}})
    problems = problems_of(raw, registry)
    # Only the missing extra: its config is not checked against a type that cannot run.
    assert [(p.location, p.message) for p in problems] == [
        ("nodes.x.type", "install figway[extra] to use needs_extra")
    ]


def sales_etl(*extra_nodes: tuple[str, dict[str, Any]]) -> WorkflowDefinition:
    nodes: dict[str, Any] = {
        "orders": {"type": "postgres_extract", "config": PG_EXTRACT},
        "customers": {"type": "mysql_extract", "config": MYSQL_EXTRACT},
        "revenue": {"type": "sql_transform", "config": TRANSFORM},
        "load": {"type": "postgres_load", "config": PG_LOAD},
        **dict(extra_nodes),
    }
    return parse(definition(nodes, {"revenue": ["orders", "customers"], "load": ["revenue"]}))


@pytest.mark.parametrize(
    ("node_id", "effects"),
    [("orders", "none"), ("customers", "none"), ("revenue", "none"), ("load", "sandboxed")],
)
def test_only_the_load_writes_and_it_can_hold_back(node_id: str, effects: str) -> None:
    workflow = sales_etl()
    spec = workflow.nodes[node_id]
    config = default_registry()[spec.type].config_model.model_validate(spec.config)
    assert config.side_effects() == effects


def test_an_etl_workflow_may_run_as_a_shadow() -> None:
    assert shadow_refusal(sales_etl(), default_registry()) is None


def test_an_etl_workflow_with_custom_code_may_not() -> None:
    notify = ("notify", {"type": "python", "config": {"callable": "hooks:notify"}})
    refusal = shadow_refusal(sales_etl(notify), default_registry())
    assert refusal is not None
    assert "'notify'" in refusal
