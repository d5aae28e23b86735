"""Secrets: names, where they are looked up, and masking, down to what the database holds.

The runtime tests run a python node that reveals a secret and then prints,
logs, returns and raises it; the value must be nowhere in any row of any
table figway keeps (on SQLite, and on PostgreSQL as a service test).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from backends.model.errors import DefinitionError, SecretMissingError, SecretRefusedError
from backends.model.status import NodeStatus
from backends.model.workflow import RunPlan, parse_definition
from backends.nodes import NodePolicy, default_registry
from backends.runtime.attempts import NodeRuntime, Outcome
from backends.runtime.secrets import (
    MIN_MASKED_LENGTH,
    ChainedSecrets,
    EnvironmentSecrets,
    Redactor,
    SecretResolver,
    SecretsPolicy,
    block_name,
    environment_variable,
    names_in_environment,
    secret_name,
    valid_secret_name,
)
from backends.store import Store
from backends.store.models import Base
from tests.nodes.secret_nodes import SECRET, here
from tests.support.plans import start_run

ENV_VARIABLE = "FIGWAY_SECRET_LEAK_TEST"


class DictSecrets:
    """A secret source holding a few values, as a Prefect Secret block store would."""

    def __init__(self, values: dict[str, str], place: str = "a test dict") -> None:
        self.values = values
        self.place = place

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def describe(self, name: str) -> str:
        return f"{self.place} (key {name})"


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("secret:pg-sales", "pg-sales"),
        ("secret:PG_sales", "pg-sales"),
        ("secret: Etl_Target_PG ", "etl-target-pg"),
        ("postgresql://etl@db/sales", None),
        ("pg-sales", None),
        ("", None),
        ("my secret:pg", None),  # the prefix counts only at the start
    ],
)
def test_secret_name_normalises_a_reference(value: str, name: str | None) -> None:
    assert secret_name(value) == name


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("pg-sales", True),
        ("a", True),
        ("0day", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("-pg", False),
        ("pg_sales", False),
        ("pg sales", False),
        ("PG", False),
        ("pg/sales", False),
    ],
)
def test_valid_secret_names_are_what_a_prefect_block_may_be_called(name: str, valid: bool) -> None:
    assert valid_secret_name(name) is valid


def test_a_secret_lives_in_an_environment_variable_and_a_block() -> None:
    assert environment_variable("etl-target-pg") == "FIGWAY_SECRET_ETL_TARGET_PG"
    assert block_name("etl-target-pg") == "figway-etl-target-pg"


def test_names_in_environment_finds_every_secret_by_its_name() -> None:
    environ = {
        "FIGWAY_SECRET_ETL_TARGET_PG": "postgresql://etl:pw@db/target",
        "FIGWAY_SECRET_API": "tok",
        "FIGWAY_SECRET_": "no name",
        "FIGWAY_DATA_DIR": "/data",
        "figway_secret_lower": "not ours",
        "PATH": "/bin",
    }
    found = names_in_environment(environ)
    assert found == {"etl-target-pg": "postgresql://etl:pw@db/target", "api": "tok"}
    for name, value in found.items():  # and each is where reveal looks for it
        assert environ[environment_variable(name)] == value


def test_names_in_environment_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = f"v-{uuid.uuid4().hex}"
    monkeypatch.setenv("FIGWAY_SECRET_FROM_PROCESS_ENV", value)
    assert names_in_environment()["from-process-env"] == value


# -- sources ---------------------------------------------------------------------------


def test_the_environment_holds_secrets_under_their_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIGWAY_SECRET_PG_SALES", "postgresql://etl:pw@db/sales")
    monkeypatch.delenv("FIGWAY_SECRET_ABSENT", raising=False)
    source = EnvironmentSecrets()
    assert source.get("pg-sales") == "postgresql://etl:pw@db/sales"
    assert source.get("absent") is None
    assert source.describe("pg-sales") == "the environment variable FIGWAY_SECRET_PG_SALES"


def test_the_first_source_holding_a_secret_wins() -> None:
    chained = ChainedSecrets(
        [
            DictSecrets({"pg": "from-first"}, "first"),
            DictSecrets({"pg": "from-second", "api": "only-second"}, "second"),
        ]
    )
    assert chained.get("pg") == "from-first"
    assert chained.get("api") == "only-second"
    assert chained.get("absent") is None


def test_a_chain_describes_every_place_it_looks() -> None:
    chained = ChainedSecrets(
        [EnvironmentSecrets(), DictSecrets({}, "Prefect block figway-pg"), DictSecrets({}, "x")]
    )
    assert chained.describe("pg") == (
        "the environment variable FIGWAY_SECRET_PG and Prefect block figway-pg (key pg) "
        "and x (key pg)"
    )


# -- reveal ----------------------------------------------------------------------------


def test_a_plain_value_passes_through_and_is_not_masked() -> None:
    resolver = SecretResolver(DictSecrets({}))
    plain = "postgresql://etl@db/sales"
    assert resolver.reveal(plain) == plain
    assert resolver.redactor.redact(f"connecting to {plain}") == f"connecting to {plain}"


def test_a_revealed_secret_is_masked_from_then_on() -> None:
    resolver = SecretResolver(DictSecrets({"api-token": "tok-123456"}))
    assert resolver.reveal("secret:API_token") == "tok-123456"
    assert resolver.redactor.redact("Authorization: tok-123456") == "Authorization: ***"


def test_a_missing_secret_names_where_it_was_looked_for_and_no_value() -> None:
    others = {"other": "other-value-5ecret", "pg-sale": "near-miss-5ecret"}
    resolver = SecretResolver(ChainedSecrets([EnvironmentSecrets(), DictSecrets(others)]))
    with pytest.raises(SecretMissingError) as raised:
        resolver.reveal("secret:pg-sales-never-set")
    message = str(raised.value)
    assert "'pg-sales-never-set'" in message
    assert "FIGWAY_SECRET_PG_SALES_NEVER_SET" in message
    assert "a test dict" in message
    assert "5ecret" not in message


# -- the redactor ----------------------------------------------------------------------


def test_a_url_password_is_masked_alone_and_percent_decoded() -> None:
    redactor = Redactor()
    redactor.add("postgresql://etl:p%40ss%2Fw0rd@db:5432/sales")
    assert redactor.redact("url postgresql://etl:p%40ss%2Fw0rd@db:5432/sales") == "url ***"
    assert redactor.redact('password "p@ss/w0rd" rejected') == 'password "***" rejected'
    assert redactor.redact("as written: p%40ss%2Fw0rd") == "as written: ***"
    assert redactor.redact("user etl on db") == "user etl on db"


def test_the_longest_value_is_masked_first() -> None:
    redactor = Redactor()
    redactor.add("abcd1234")
    redactor.add("abcd1234efgh5678")
    assert redactor.redact("[abcd1234efgh5678] [abcd1234]") == "[***] [***]"


def test_values_shorter_than_the_minimum_are_not_masked() -> None:
    redactor = Redactor()
    short = "x" * (MIN_MASKED_LENGTH - 1)
    just_long_enough = "y" * MIN_MASKED_LENGTH
    redactor.add(short)
    redactor.add(just_long_enough)
    redactor.add("postgresql://etl:pw@db/sales")  # a short password: only the URL is masked
    assert redactor.redact(f"{short} {just_long_enough}") == f"{short} ***"
    assert redactor.redact("postgresql://etl:pw@db/sales pw") == "*** pw"


def test_a_value_that_is_not_a_valid_url_is_still_masked() -> None:
    redactor = Redactor()
    redactor.add("http://[::1:bad-token-value")  # urlsplit raises ValueError on it
    assert redactor.redact("got http://[::1:bad-token-value back") == "got *** back"


# -- through the node runtime ----------------------------------------------------------


@pytest.fixture
def runtime(store: Store) -> NodeRuntime:
    return NodeRuntime(store, default_registry(), heartbeat_seconds=0.05)


@pytest.fixture
def secret_value(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"leaked-{uuid.uuid4().hex}"
    monkeypatch.setenv(ENV_VARIABLE, value)
    return value


def run_python_node(
    store: Store, runtime: NodeRuntime, function_name: str
) -> tuple[RunPlan, Any, Any]:
    """Run one python node once; returns its plan, the attempt result and the stored node."""
    plan = start_run(
        store, {"node": {"type": "python", "config": {"callable": here(function_name)}}}
    )
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="node", attempt=1)
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    return plan, result, run.nodes["node"]


def log_text(store: Store, plan: RunPlan) -> str:
    return "\n".join(record.message for _, record in store.logs(job_run_id=plan.job_run_id))


def database_text(store: Store) -> str:
    """Every row of every table figway keeps, as text."""
    with store.engine.connect() as connection:
        return "\n".join(
            f"{table.name}: {tuple(row)!r}"
            for table in Base.metadata.sorted_tables
            for row in connection.execute(table.select())
        )


def test_a_revealed_secret_is_masked_in_logs_and_output(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    plan, result, node = run_python_node(store, runtime, "leak")
    assert result.outcome is Outcome.SUCCEEDED
    assert node.output == {
        "value": "***",
        "***": "as a key",
        "nested": ["postgresql://etl:***@db/sales", {"again": "***"}],
        "count": 3,
    }
    logs = log_text(store, plan)
    for line in (
        "stdout: ***",
        "stdout without a newline: ***",
        "stderr: ***",
        "node logger: ***",
        "driver logger: ***",
    ):
        assert line in logs
    everything = database_text(store)
    assert "node_runs" in everything
    assert "log_lines" in everything
    assert secret_value not in everything


def test_a_secret_in_an_error_is_masked_in_the_error_and_the_traceback(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    plan, result, node = run_python_node(store, runtime, "leak_and_fail")
    assert result.outcome is Outcome.FAILED
    masked = "RuntimeError: connection to postgresql://etl:***@db/sales failed"
    assert result.error == masked
    assert node.status is NodeStatus.FAILED
    assert node.error == masked
    assert node.output is None
    logs = log_text(store, plan)
    assert "connecting with ***" in logs
    assert "Traceback (most recent call last)" in logs
    assert masked in logs
    everything = database_text(store)
    assert masked in everything
    assert secret_value not in everything


def test_a_secret_url_password_is_masked_alone_and_decoded(
    store: Store, runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = f"p@ss/{uuid.uuid4().hex}"
    url = f"postgresql://etl:{quote(password, safe='')}@db/sales"
    monkeypatch.setenv(ENV_VARIABLE, url)
    plan, result, node = run_python_node(store, runtime, "leak_password")
    assert result.outcome is Outcome.SUCCEEDED
    assert node.output == {"password": "***"}
    logs = log_text(store, plan)
    assert "password as written: ***" in logs
    assert "password decoded: ***" in logs
    everything = database_text(store)
    for leaked in (url, password, quote(password, safe=""), password.split("/")[1]):
        assert leaked not in everything


def run_echo(store: Store, runtime: NodeRuntime, extra: Any) -> tuple[RunPlan, Any, Any]:
    plan = start_run(
        store,
        {
            "node": {
                "type": "python",
                "config": {"callable": here("echo"), "kwargs": {"extra": extra}},
            }
        },
    )
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="node", attempt=1)
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    return plan, result, run.nodes["node"]


@pytest.mark.parametrize(
    "shape",
    ['quote"d', "back\\slash", "non-ascii-päss"],
    ids=["quote", "backslash", "non-ascii"],
)
def test_a_secret_json_escapes_is_masked_in_the_output(
    store: Store, runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    value = f"{shape}-{uuid.uuid4().hex}"
    monkeypatch.setenv(ENV_VARIABLE, value)
    plan, result, node = run_echo(store, runtime, extra=None)
    assert result.outcome is Outcome.SUCCEEDED
    assert node.output == {"value": "***", "listed": ["in a list: ***"], "extra": None}
    assert "value: ***" in log_text(store, plan)
    everything = database_text(store)
    assert value not in everything
    assert value.split("-")[-1] not in everything  # not even its unique tail, escaped or not


def test_a_multi_line_secret_printed_on_stdout_is_masked(
    store: Store, runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private key (a BigQuery service-account key holds one) spans several lines.
    body = [uuid.uuid4().hex, uuid.uuid4().hex]
    key = "\n".join(["-----BEGIN PRIVATE KEY-----", *body, "-----END PRIVATE KEY-----"])
    monkeypatch.setenv(ENV_VARIABLE, key)
    plan, result, node = run_echo(store, runtime, extra=None)
    assert result.outcome is Outcome.SUCCEEDED
    assert node.output["value"] == "***"
    logs = log_text(store, plan)
    assert "value: ***" in logs
    for line in body:
        assert line not in logs


def test_a_secret_that_looks_like_json_does_not_break_the_output(
    store: Store, runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A four-digit PIN also occurs in numbers and dates the node returns.
    monkeypatch.setenv(ENV_VARIABLE, "2024")
    extra = {"year": 2024, "day": "2024-11-28", "flag": True, "none": None}
    _, result, node = run_echo(store, runtime, extra=extra)
    assert result.outcome is Outcome.SUCCEEDED
    assert node.status is NodeStatus.SUCCEEDED
    assert node.output == {
        "value": "***",
        "listed": ["in a list: ***"],
        "extra": {"year": 2024, "day": "***-11-28", "flag": True, "none": None},
    }


def test_a_secret_from_the_attempt_source_is_masked_too(store: Store) -> None:
    # The Prefect backend passes its Secret blocks for each attempt.
    value = f"from-a-block-{uuid.uuid4().hex}"
    runtime = NodeRuntime(
        store,
        default_registry(),
        heartbeat_seconds=0.05,
        secrets=DictSecrets({}),  # the runtime's own source holds nothing
    )
    plan = start_run(store, {"node": {"type": "python", "config": {"callable": here("leak")}}})
    result = runtime.execute(
        job_run_id=plan.job_run_id,
        node_id="node",
        attempt=1,
        secrets=DictSecrets({"leak-test": value}),
    )
    assert result.outcome is Outcome.SUCCEEDED
    assert "stdout: ***" in log_text(store, plan)
    assert value not in database_text(store)


def test_a_secret_printed_across_a_heartbeat_is_masked(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    # The heartbeat flushes a line not yet ended; the two halves must not be stored apart.
    plan, result, _ = run_python_node(store, runtime, "leak_across_a_heartbeat")
    assert result.outcome is Outcome.SUCCEEDED
    messages = [record.message for _, record in store.logs(job_run_id=plan.job_run_id)]
    assert "".join(messages).startswith("token ")
    assert secret_value not in "".join(messages), f"the value is split over {messages}"


def test_a_missing_secret_fails_the_node_naming_its_variable(
    store: Store, runtime: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIGWAY_SECRET_NEVER_SET_ANYWHERE", raising=False)
    plan, result, node = run_python_node(store, runtime, "ask_for_a_missing_secret")
    assert result.outcome is Outcome.FAILED
    assert node.status is NodeStatus.FAILED
    assert node.error == result.error
    assert (result.error or "").startswith("secret 'never-set-anywhere' is not set")
    assert "the environment variable FIGWAY_SECRET_NEVER_SET_ANYWHERE" in (result.error or "")
    assert "unreachable" not in log_text(store, plan)


# -- found in review: other handlers, and parts of a secret -------------------------------


class _Collect(logging.Handler):
    """A process-wide handler besides figway's own, as `figway serve`'s console is."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_a_secret_a_node_logs_is_masked_for_every_handler_of_the_process(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    console = _Collect()
    root = logging.getLogger()
    root.addHandler(console)
    try:
        _, result, _ = run_python_node(store, runtime, "leak")
    finally:
        root.removeHandler(console)
    assert result.outcome is Outcome.SUCCEEDED
    seen = "\n".join(console.lines)
    assert "node logger: ***" in seen
    assert "driver logger: ***" in seen
    assert secret_value not in seen


def test_logging_outside_a_node_is_left_alone(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    run_python_node(store, runtime, "leak")  # installs the masking, reveals the value
    console = _Collect()
    logger = logging.getLogger("figway.test.outside")
    logger.addHandler(console)
    try:
        logger.warning("the operator's own line: %s", secret_value)
    finally:
        logger.removeHandler(console)
    assert console.lines == [f"the operator's own line: {secret_value}"]


@pytest.mark.parametrize(
    ("secret", "echoed"),
    [
        ("https://api.example.com/v1/orders?api_key=K3yFromTheQuery", "K3yFromTheQuery"),
        ("Bearer t0ken-in-a-header", "t0ken-in-a-header"),
        ("basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ],
)
def test_the_part_of_a_secret_a_server_echoes_is_masked_too(secret: str, echoed: str) -> None:
    redactor = Redactor()
    redactor.add(secret)
    assert redactor.redact(f"401: invalid credentials {echoed}") == "401: invalid credentials ***"


# -- masking covers the whole run, and what an echo encodes ----------------------------


def test_a_value_another_node_of_the_run_resolves_is_masked_here_too(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    # `fetch` would send the token; `convert` only quotes what reached it (here given
    # literally, standing for an upstream answer that echoed the token back).
    plan = start_run(
        store,
        {
            "fetch": {"type": "noop"},
            "convert": {
                "type": "python",
                "config": {"callable": here("quote_back"), "kwargs": {"text": secret_value}},
            },
            "uses_it": {
                "type": "http_request",
                "config": {"url": "https://api.example.com/", "headers": {"X-Token": SECRET}},
            },
        },
    )
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="convert", attempt=1)
    assert result.outcome is Outcome.FAILED
    assert result.error == "ValueError: could not convert string to float: '***'"
    assert "converting '***'" in log_text(store, plan)
    # The definition itself holds the literal here; the records of the attempt must not.
    run = store.get_run(job_run_id=plan.job_run_id)
    assert run is not None
    assert secret_value not in (run.nodes["convert"].error or "")
    assert secret_value not in log_text(store, plan)


def test_encoded_forms_of_a_secret_are_masked(
    store: Store, runtime: NodeRuntime, secret_value: str
) -> None:
    plan, result, node = run_python_node(store, runtime, "print_encoded")
    assert result.outcome is Outcome.SUCCEEDED
    logs = log_text(store, plan)
    for text in (
        base64.b64encode(f"user:{secret_value}".encode()).decode(),
        quote(secret_value, safe=""),
        secret_value.encode().hex(),
    ):
        assert text not in logs
        assert text not in json.dumps(node.output)
    assert "hex: ***" in logs


# -- each secret is used only as its policy allows --------------------------------------

POLICY = SecretsPolicy.model_validate(
    {
        "secrets": {
            "leak-test": {"workspaces": ["ws1"], "uses": ["code"]},
            "api-token": {
                "workspaces": ["ws*"],
                "uses": ["http_header"],
                "hosts": ["api.example.com"],
            },
            "pg-prod": {"workspaces": ["finance"], "uses": ["connection"]},
        }
    }
)


def registry_with(policy: SecretsPolicy) -> Any:
    return default_registry(NodePolicy(python_callables=(f"{here('')[:-1]}*",), secrets=policy))


def definition(workspace: str, nodes: dict[str, Any]) -> dict[str, Any]:
    return {"workflow_id": "w", "workspace_id": workspace, "folder_id": "f", "nodes": nodes}


@pytest.mark.parametrize(
    ("workspace", "node", "refusal"),
    [
        (
            "ws1",
            {"type": "postgres_extract",
             "config": {"connection": "secret:pg-prod", "query": "select 1"}},
            "secret 'pg-prod' may not be used by workspace 'ws1' (its policy allows: finance)",
        ),
        (
            "ws2",
            {"type": "http_request",
             "config": {"url": "https://evil.example.net/", "headers": {"X-Token": "secret:api-token"}}},
            "secret 'api-token' may not be sent to 'evil.example.net' (its policy allows: api.example.com)",
        ),
        (
            "ws2",
            {"type": "http_request",
             "config": {"url": "https://api.example.com/", "headers": {"X-Db": "secret:pg-prod"}}},
            "secret 'pg-prod' may not be used by workspace 'ws2' (its policy allows: finance)",
        ),
        (
            "finance",
            {"type": "http_request",
             "config": {"url": "https://api.example.com/", "headers": {"X-Db": "secret:pg-prod"}}},
            "secret 'pg-prod' may not fill an HTTP header (its policy allows: connection)",
        ),
        (
            "ws1",
            {"type": "http_request", "config": {"url": "secret:undeclared"}},
            "secret 'undeclared' is not declared in the secrets policy, so it may not be used",
        ),
    ],
)  # fmt: skip
def test_a_definition_using_a_secret_outside_its_policy_is_refused(
    workspace: str, node: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(DefinitionError) as refused:
        parse_definition(definition(workspace, {"n": node}), node_types=registry_with(POLICY))
    assert [problem.message for problem in refused.value.problems] == [f"Value error, {refusal}"]


def test_a_definition_within_the_policy_is_accepted() -> None:
    parse_definition(
        definition(
            "ws3",
            {
                "n": {
                    "type": "http_request",
                    "config": {
                        "url": "https://api.example.com/",
                        "headers": {"X-Token": "secret:api-token"},
                    },
                }
            },
        ),
        node_types=registry_with(POLICY),
    )


def test_the_worker_refuses_a_stored_definition_its_policy_does_not_allow(
    store: Store, secret_value: str
) -> None:
    # Stored while no policy existed; the worker now holds `leak-test` to workspace ws1.
    plan = start_run(store, {"node": {"type": "python", "config": {"callable": here("echo")}}})
    assert plan.workspace_id == "ws1"
    stricter = SecretsPolicy.model_validate(
        {"secrets": {"leak-test": {"workspaces": ["other"], "uses": ["code"]}}}
    )
    runtime = NodeRuntime(store, registry_with(stricter), heartbeat_seconds=0.05)
    result = runtime.execute(job_run_id=plan.job_run_id, node_id="node", attempt=1)
    assert result.outcome is Outcome.FAILED
    assert result.error == (
        "secret 'leak-test' may not be used by workspace 'ws1' (its policy allows: other)"
    )
    assert "value:" not in log_text(store, plan), "the node never saw the value"
    assert secret_value not in database_text(store)


def test_a_secret_url_is_held_to_its_hosts_on_the_worker() -> None:
    policy = SecretsPolicy.model_validate(
        {"secrets": {"api": {"workspaces": ["*"], "uses": ["http_url"], "hosts": ["good.test"]}}}
    )
    resolver = SecretResolver(
        DictSecrets({"api": "https://evil.test/x"}), policy=policy, workspace_id="ws"
    )
    resolver.reveal("secret:api", use="http_url")  # the host is not known before resolving
    with pytest.raises(SecretRefusedError, match=r"may not be sent to 'evil\.test'"):
        resolver.reveal("secret:api", use="http_url", host="evil.test")


def test_a_policy_file_is_checked_when_it_is_loaded(tmp_path: Path) -> None:
    bad = tmp_path / "secrets.yaml"
    bad.write_text(
        "secrets:\n  Bad_Name: {workspaces: [ws1], uses: [connection]}\n"
        "  api: {workspaces: [ws1], uses: [http_header]}\n"
    )
    with pytest.raises(ValueError, match=r"secrets\.Bad_Name: not a secret name") as refused:
        SecretsPolicy.load(bad)
    assert "secrets.api: sent over HTTP, it needs `hosts`" in str(refused.value)
    bad.write_text("secrets:\n  api: {workspaces: [ws1], uses: [telepathy]}\n")
    with pytest.raises(ValueError, match=r"secrets\.api\.uses\.0"):
        SecretsPolicy.load(bad)
