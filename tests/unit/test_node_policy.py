"""The operator's node policy: which callables python nodes may call, and where."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from backends.model.errors import DefinitionError
from backends.model.workflow import parse_definition
from backends.nodes import NodePolicy, default_registry
from backends.nodes.builtin import PythonConfig


def python_workflow(callable_: str) -> dict[str, object]:
    return {
        "workflow_id": "w",
        "workspace_id": "ws",
        "folder_id": "f",
        "nodes": {"code": {"type": "python", "config": {"callable": callable_}}},
    }


@pytest.mark.parametrize(
    "reference",
    ["os:system", "subprocess:getoutput", "builtins:eval", "importlib:import_module",
     "backends.store.api_keys:ApiKeys", "gateway.cli.main:main", "os.path:join"],
)  # fmt: skip
def test_a_glob_never_opens_a_guarded_module(reference: str) -> None:
    policy = NodePolicy(python_callables=("*:*",))
    refusal = policy.callable_refusal(reference)
    assert refusal is not None
    assert repr(reference) in refusal


def test_a_guarded_callable_named_exactly_is_allowed() -> None:
    policy = NodePolicy(python_callables=("builtins:print",))
    assert policy.callable_refusal("builtins:print") is None
    assert policy.callable_refusal("builtins:eval") is not None


def test_the_default_allows_only_the_demo_callables() -> None:
    policy = NodePolicy()
    assert policy.callable_refusal("backends.nodes.demo:say_hello") is None
    assert policy.callable_refusal("statistics:mean") is not None
    assert policy.callable_refusal("mypkg:run") is not None


def test_a_definition_naming_a_refused_callable_is_refused_at_the_field() -> None:
    registry = default_registry(NodePolicy())
    with pytest.raises(DefinitionError) as refused:
        parse_definition(python_workflow("subprocess:getoutput"), node_types=registry)
    [problem] = refused.value.problems
    assert problem.location == "nodes.code.config.callable"
    assert "'subprocess:getoutput' is not allowed" in problem.message


def test_the_worker_holds_a_stored_config_to_its_own_policy() -> None:
    allowed = default_registry(NodePolicy(python_callables=("mypkg.*:*",)))
    stricter = default_registry(NodePolicy())
    config = {"callable": "mypkg.jobs:run"}
    assert allowed["python"].parse_config(config).callable == "mypkg.jobs:run"
    with pytest.raises(ValidationError, match="not allowed"):
        stricter["python"].parse_config(config)


def test_a_config_validated_without_a_registry_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIGWAY_PYTHON_CALLABLES", "mypkg:*")
    assert PythonConfig.model_validate({"callable": "mypkg:run"}).callable == "mypkg:run"
    monkeypatch.delenv("FIGWAY_PYTHON_CALLABLES")
    with pytest.raises(ValidationError, match="not allowed"):
        PythonConfig.model_validate({"callable": "mypkg:run"})


@pytest.mark.parametrize(
    ("address", "kind"),
    [("127.0.0.1", "a loopback address"), ("::1", "a loopback address"),
     ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
     ("10.0.0.1", "a private address"), ("192.168.1.1", "a private address"),
     ("172.16.0.1", "a private address"), ("100.64.0.1", "a private address"),
     ("fd00::1", "a private address"), ("0.0.0.0", "an unspecified address"),
     ("::ffff:127.0.0.1", "a loopback address"), ("224.0.0.1", "a multicast address")],
)  # fmt: skip
def test_restricted_addresses_are_refused(address: str, kind: str) -> None:
    assert NodePolicy().http_address_refusal("h", ipaddress.ip_address(address)) == kind


def test_the_operator_opens_hosts_and_networks() -> None:
    policy = NodePolicy(http_allow=("api.internal", "*.corp.example", "10.1.0.0/16"))
    assert policy.http_address_refusal("api.internal", ipaddress.ip_address("10.9.9.9")) is None
    assert policy.http_address_refusal("x.corp.example", ipaddress.ip_address("10.9.9.9")) is None
    assert policy.http_address_refusal("other", ipaddress.ip_address("10.1.2.3")) is None
    assert policy.http_address_refusal("other", ipaddress.ip_address("10.2.0.1")) is not None
    assert policy.http_address_refusal("pub", ipaddress.ip_address("8.8.8.8")) is None


def test_plain_database_hosts_follow_the_mode() -> None:
    assert NodePolicy(db_allow=None).db_host_allowed("anything")
    assert not NodePolicy(db_allow=()).db_host_allowed("db.internal")
    assert NodePolicy(db_allow=("*.internal",)).db_host_allowed("DB.internal")


# -- database connections ----------------------------------------------------------------


def extract_config(connection: str, policy: NodePolicy) -> object:
    registry = default_registry(policy)
    return registry["postgres_extract"].parse_config(
        {"connection": connection, "query": "select 1"}, workspace_id="ws"
    )


PRODUCTION = NodePolicy(db_allow=())


def test_in_production_a_plain_connection_url_is_refused_naming_the_way_out() -> None:
    with pytest.raises(ValidationError) as refused:
        extract_config("postgresql://postgres@127.0.0.1/postgres", PRODUCTION)
    message = str(refused.value)
    assert "host '127.0.0.1' may not be named in a definition here" in message
    assert "FIGWAY_DB_ALLOW" in message


def test_a_secret_connection_and_an_allowed_host_pass_in_production() -> None:
    assert extract_config("secret:pg-sales", PRODUCTION)
    assert extract_config(
        "postgresql://etl@db.internal/sales", NodePolicy(db_allow=("*.internal",))
    )


@pytest.mark.parametrize("option", ["host=evil", "hostaddr=10.0.0.1", "passfile=/root/.pgpass",
                                    "service=prod", "options=-c%20role%3Dpostgres",
                                    "sslkey=/etc/key"])  # fmt: skip
def test_connection_options_outside_the_safe_list_are_refused(option: str) -> None:
    name = option.split("=")[0]
    with pytest.raises(ValidationError, match=f"option\\(s\\) {name} are not allowed"):
        extract_config(
            f"postgresql://etl@db/sales?sslmode=require&{option}", NodePolicy(db_allow=None)
        )


# -- the operator's caps on what one node may ask for --------------------------------------


def test_a_node_asking_over_the_operators_caps_is_refused_naming_the_setting() -> None:
    capped = default_registry(NodePolicy(threads=2, memory_limit_mb=128, max_response_bytes=1_000))
    query = {"query": "select 1 as x"}
    assert capped["sql_transform"].parse_config({**query, "threads": 2}) is not None
    with pytest.raises(ValidationError, match=r"threads[\s\S]*at most 2 \(FIGWAY_NODE_THREADS\)"):
        capped["sql_transform"].parse_config({**query, "threads": 4})
    with pytest.raises(ValidationError, match="FIGWAY_NODE_MEMORY_LIMIT_MB"):
        capped["sql_transform"].parse_config({**query, "memory_limit_mb": 1_024})
    with pytest.raises(ValidationError, match="FIGWAY_NODE_MAX_RESPONSE_BYTES"):
        capped["http_request"].parse_config(
            {"url": "https://api.example.com/x", "max_response_bytes": 5_000}
        )
    # A node type's default above the cap is lowered to it when the node runs.
    default = capped["sql_transform"].parse_config(query)
    assert capped["sql_transform"].policy.capped("memory_limit_mb", default.memory_limit_mb) == 128


def test_the_caps_come_from_the_settings() -> None:
    policy = NodePolicy.from_environment(
        {"FIGWAY_NODE_THREADS": "3", "FIGWAY_NODE_MEMORY_LIMIT_MB": "512"}
    )
    assert (policy.threads, policy.memory_limit_mb, policy.max_response_bytes) == (3, 512, None)
    assert "node caps: memory_limit_mb 512, threads 3" in list(policy.describe())


def test_the_limits_per_node_attempt_come_from_the_settings() -> None:
    policy = NodePolicy.from_environment(
        {
            "FIGWAY_NODE_MAX_MEMORY_MB": "4096",
            "FIGWAY_NODE_MAX_CPU_SECONDS": "600",
            "FIGWAY_NODE_DEFAULT_MEMORY_MB": "1024",
            "FIGWAY_NODE_DEFAULT_CPU_SECONDS": "60",
        }
    )
    assert (policy.max_memory_mb, policy.max_cpu_seconds) == (4096, 600)
    assert (policy.default_memory_mb, policy.default_cpu_seconds) == (1024, 60)
    assert "node attempt limits by default: memory_mb 1024, cpu_seconds 60" in list(
        policy.describe()
    )
