"""bigquery_extract: its config, its job, and its paging, driven through the real client.

The real google-cloud-bigquery client talks to a fake BigQuery REST API on
127.0.0.1 (:mod:`tests.support.fake_bigquery`), with anonymous credentials: what
the client sent is read from the fake server, and what the node wrote is read
back from the Parquet output. Nothing leaves the machine.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_auth_exceptions
from google.cloud import bigquery
from google.oauth2 import service_account

from backends.artifacts import ArtifactRef, ArtifactStore
from backends.model.errors import DefinitionError, NodeCancelledError, NodeFailedError
from backends.model.workflow import parse_definition
from backends.nodes import NodeRegistry
from backends.nodes import bigquery as bigquery_node
from backends.nodes.base import NodeContext
from backends.nodes.bigquery import (
    BIGQUERY_EXTRACT,
    BigQueryExtractConfig,
    bigquery_unavailable,
    job_config,
    run_bigquery_extract,
    write_pages,
)
from backends.nodes.builtin import BUILTIN_NODE_TYPES
from backends.runtime.secrets import SecretResolver
from tests.support.fake_bigquery import FakeBigQuery

ROOT = Path(__file__).resolve().parents[2]

SCHEMA = [
    {"name": "id", "type": "INTEGER", "mode": "NULLABLE"},
    {"name": "name", "type": "STRING", "mode": "NULLABLE"},
    {"name": "score", "type": "FLOAT", "mode": "NULLABLE"},
    {"name": "active", "type": "BOOLEAN", "mode": "NULLABLE"},
]
#: Seven rows: with page_size 3 the result comes in three pages (3, 3, 1).
ROWS: list[list[Any]] = [
    [1, "ada", 1.5, True],
    [2, "grace", 2.25, False],
    [3, None, None, None],
    [4, "linus", -4.0, True],
    [5, "guido", 0.5, False],
    [6, "barbara", 6.75, True],
    [7, "ken", 7.0, False],
]


class DictSecrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def describe(self, name: str) -> str:
        return f"the test's secrets ({name})"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBigQuery]:
    """The fake server, and bigquery_extract's client factory pointed at it."""
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth never probes a metadata server
    with FakeBigQuery(schema=SCHEMA, rows=ROWS) as server:
        monkeypatch.setattr(bigquery_node, "_client", server.client)
        yield server


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def make_context(
    store: ArtifactStore | None,
    *,
    parameters: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
) -> NodeContext:
    return NodeContext(
        job_run_id="run-1",
        node_id="extract",
        attempt=1,
        parameters=parameters or {},
        upstream_outputs={},
        logger=logging.getLogger("test.bigquery_extract"),
        artifacts=None
        if store is None
        else store.for_attempt(job_run_id="run-1", node_id="extract", attempt=1, sandboxed=False),
        secrets=SecretResolver(DictSecrets(secrets or {})),
    )


def config(**overrides: Any) -> BigQueryExtractConfig:
    values: dict[str, Any] = {"project": "my-project", "query": "SELECT * FROM t"}
    return BigQueryExtractConfig.model_validate({**values, **overrides})


def files_in(store: ArtifactStore) -> list[Path]:
    return [path for path in Path(store.root).rglob("*") if path.is_file()]


def read_back(store: ArtifactStore, output: object) -> tuple[ArtifactRef, pa.Table]:
    reference = ArtifactRef.from_output(output)
    assert reference is not None, output
    parquet = store.open_table(reference)
    try:
        return reference, parquet.read()
    finally:
        parquet.close()


def registry() -> NodeRegistry:
    return NodeRegistry([*BUILTIN_NODE_TYPES, BIGQUERY_EXTRACT])


def workflow(node_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "workflow_id": "wf",
        "workspace_id": "ws",
        "folder_id": "f",
        "nodes": {"extract": {"type": "bigquery_extract", "config": node_config}},
    }


def problems(node_config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(DefinitionError) as refused:
        parse_definition(workflow(node_config), node_types=registry())
    return {problem.location: problem.message for problem in refused.value.problems}


def service_account_key(email: str = "reader@my-project.iam.gserviceaccount.com") -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": "0123456789abcdef",
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


# -- the optional extra ---------------------------------------------------------------------


def test_the_node_type_is_exported_with_its_hook() -> None:
    assert BIGQUERY_EXTRACT.name == "bigquery_extract"
    assert BIGQUERY_EXTRACT.config_model is BigQueryExtractConfig
    assert BIGQUERY_EXTRACT.run is run_bigquery_extract
    assert BIGQUERY_EXTRACT.unavailable is bigquery_unavailable
    assert BIGQUERY_EXTRACT.description
    assert config().side_effects() == "none"  # it only reads: a shadow run may run it


def test_available_when_the_extra_is_installed() -> None:
    assert bigquery_unavailable() is None
    assert parse_definition(
        workflow({"project": "my-project", "query": "SELECT 1"}), node_types=registry()
    )


def hide_bigquery(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "google.cloud.bigquery" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_unavailable_without_the_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_bigquery(monkeypatch)
    assert bigquery_unavailable() == (
        "bigquery_extract needs the optional extra: pip install 'figway[bigquery]'"
    )


def test_a_workflow_using_it_is_refused_without_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_bigquery(monkeypatch)
    found = problems({"project": "my-project", "query": "SELECT 1"})
    assert found == {
        "nodes.extract.type": "bigquery_extract needs the optional extra: "
        "pip install 'figway[bigquery]'"
    }


def test_the_module_imports_without_google_cloud_bigquery() -> None:
    # A fresh interpreter where `import google.cloud.bigquery` fails, as without the extra.
    script = (
        "import sys\n"
        "sys.modules['google.cloud.bigquery'] = None\n"
        "import backends.nodes.bigquery as node\n"
        "print(node.bigquery_unavailable())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'figway[bigquery]'" in done.stdout


def test_importing_the_module_does_not_import_the_client() -> None:
    script = (
        "import sys\n"
        "import backends.nodes.bigquery\n"
        "print(sorted(m for m in sys.modules if m.startswith('google.cloud.bigquery')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the config, checked when the workflow is defined -----------------------------------------


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"project": "My_Project"}, "project"),
        ({"project": "ab"}, "project"),
        ({"query": ""}, "query"),
        ({"query": "x" * 1_000_001}, "query"),
        ({"parameters": {"not-a-name": 1}}, "parameters.not-a-name.[key]"),
        ({"parameters": {"day": [1, 2]}}, "parameters.day"),
        ({"location": "us west"}, "location"),
        ({"maximum_bytes_billed": 0}, "maximum_bytes_billed"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 100_001}, "page_size"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"labels": {"Team": "data"}}, "labels.Team.[key]"),
        ({"labels": {"team": "Data Eng"}}, "labels.team"),
        ({"labels": {"figway": "mine"}}, "labels"),
        ({"labels": {f"l{i}": "x" for i in range(64)}}, "labels"),
        ({"qurey": "SELECT 1"}, "qurey"),
    ],
)
def test_a_bad_config_is_refused_naming_the_field(overrides: dict[str, Any], location: str) -> None:
    raw = {"project": "my-project", "query": "SELECT 1", **overrides}
    found = problems(raw)
    assert any(where.startswith(f"nodes.extract.config.{location}") for where in found), found


def test_a_good_config_is_accepted_with_its_defaults() -> None:
    parsed = config(
        project="example.com:my-project",
        parameters={"day": "param:day", "limit": 10, "ratio": 0.5, "strict": True},
        location="europe-west1",
        credentials="secret:bq-reader",
        labels={"team": "data", "cost_center": ""},
    )
    assert parsed.page_size == 50_000
    assert parsed.timeout_seconds == 600
    assert parsed.maximum_bytes_billed is None
    # Each value keeps its Python type: it decides the BigQuery type.
    assert [type(v) for v in parsed.parameters.values()] == [str, int, float, bool]


def test_a_literal_credential_is_refused_without_being_repeated() -> None:
    key = service_account_key()
    found = problems({"project": "my-project", "query": "SELECT 1", "credentials": key})
    message = found["nodes.extract.config.credentials"]
    assert "secret:NAME" in message
    assert "BEGIN PRIVATE KEY" not in json.dumps(found)


def test_a_badly_named_secret_is_refused() -> None:
    found = problems({"project": "my-project", "query": "SELECT 1", "credentials": "secret:a b"})
    assert "secret name" in found["nodes.extract.config.credentials"]


def test_every_field_is_described() -> None:
    for name, field in BigQueryExtractConfig.model_fields.items():
        assert field.description, name


# -- the job configuration --------------------------------------------------------------------


def test_job_config_types_each_parameter_from_its_value() -> None:
    built = job_config(
        config(
            parameters={"day": "param:day", "limit": 10, "ratio": 0.5, "strict": True},
            maximum_bytes_billed=10_000_000_000,
            labels={"team": "data"},
            timeout_seconds=90,
        ),
        {"day": "2026-11-28"},
    )
    assert isinstance(built, bigquery.QueryJobConfig)
    assert built.use_legacy_sql is False
    assert [(p.name, p.type_, p.value) for p in built.query_parameters] == [
        ("day", "STRING", "2026-11-28"),
        ("limit", "INT64", 10),
        ("ratio", "FLOAT64", 0.5),
        ("strict", "BOOL", True),
    ]
    assert built.maximum_bytes_billed == 10_000_000_000
    assert built.labels == {"team": "data", "figway": "bigquery_extract"}
    assert built.to_api_repr()["jobTimeoutMs"] == "90000"


def test_job_config_types_run_parameters_by_their_value() -> None:
    built = job_config(config(parameters={"n": "param:n", "on": "param:on"}), {"n": 3, "on": False})
    assert [(p.name, p.type_) for p in built.query_parameters] == [("n", "INT64"), ("on", "BOOL")]


def test_job_config_without_a_byte_limit_sends_none() -> None:
    built = job_config(config(), {})
    assert built.maximum_bytes_billed is None
    assert "maximumBytesBilled" not in built.to_api_repr()["query"]
    assert built.query_parameters == []


def test_a_missing_run_parameter_fails_naming_it() -> None:
    with pytest.raises(NodeFailedError, match=r"'day' takes the run parameter 'day'.*not given"):
        job_config(config(parameters={"day": "param:day"}), {"other": 1})


@pytest.mark.parametrize(
    ("value", "problem"),
    [(None, "is null"), ({"a": 1}, "is dict"), (2**63, "beyond BigQuery's INT64")],
)
def test_a_run_parameter_bigquery_cannot_type_fails(value: Any, problem: str) -> None:
    with pytest.raises(NodeFailedError, match=problem):
        job_config(config(parameters={"x": "param:x"}), {"x": value})


# -- running against the fake BigQuery ----------------------------------------------------------


def test_every_page_arrives_in_the_table(
    fake: FakeBigQuery, store: ArtifactStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.bigquery_extract")
    node_config = config(
        query="SELECT id, name, score, active FROM `my-project.d.t` WHERE day = @day",
        parameters={"day": "param:day", "limit": 10, "ratio": 0.5, "strict": True},
        maximum_bytes_billed=10_000_000_000,
        labels={"team": "data"},
        page_size=3,
    )
    output = run_bigquery_extract(
        node_config, make_context(store, parameters={"day": "2026-11-28"})
    )

    inserted = fake.inserted()
    query = inserted["configuration"]["query"]
    assert query["query"] == node_config.query
    assert query["useLegacySql"] is False
    assert query["parameterMode"] == "NAMED"
    assert query["maximumBytesBilled"] == "10000000000"
    assert {
        p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"])
        for p in query["queryParameters"]
    } == {
        "day": ("STRING", "2026-11-28"),
        "limit": ("INT64", "10"),
        "ratio": ("FLOAT64", 0.5),
        "strict": ("BOOL", "true"),
    }
    assert inserted["configuration"]["labels"] == {"team": "data", "figway": "bigquery_extract"}
    assert inserted["configuration"]["jobTimeoutMs"] == "600000"
    assert inserted["jobReference"]["jobId"].startswith("figway_")

    # The job was polled with jobs.get, then read page by page with getQueryResults.
    job_id = inserted["jobReference"]["jobId"]
    assert len(fake.requests_to("GET", f"/jobs/{job_id}")) == 1
    pages = fake.page_requests()
    assert [r.query.get("pageToken") for r in pages] == [None, ["3"], ["6"]]
    assert all(r.query["maxResults"] == ["3"] for r in pages)

    reference, table = read_back(store, output)
    assert reference.rows == 7
    assert table.num_rows == 7
    assert table.schema.names == ["id", "name", "score", "active"]
    assert [str(t) for t in table.schema.types] == ["int64", "string", "double", "bool"]
    assert [list(row.values()) for row in table.to_pylist()] == ROWS
    assert reference.columns == (
        ("id", "int64"),
        ("name", "string"),
        ("score", "double"),
        ("active", "bool"),
    )
    assert "extracted 7 rows from BigQuery (3 pages)" in caplog.text
    assert fake.credentials_given == [None]  # no credentials: application defaults


def test_the_location_reaches_the_job_and_its_pages(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    run_bigquery_extract(config(location="EU"), make_context(store))
    assert fake.inserted()["jobReference"]["location"] == "EU"
    assert all(r.query["location"] == ["EU"] for r in fake.page_requests())


def test_a_page_size_larger_than_the_result_reads_one_page(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    output = run_bigquery_extract(config(), make_context(store))
    assert [r.query["maxResults"] for r in fake.page_requests()] == [["50000"]]
    assert read_back(store, output)[0].rows == 7


def test_an_empty_result_is_an_empty_table_with_its_columns(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    fake.rows = []
    reference, table = read_back(store, run_bigquery_extract(config(), make_context(store)))
    assert reference.rows == 0
    assert table.num_rows == 0
    assert table.schema.names == ["id", "name", "score", "active"]


def test_a_long_query_is_waited_for(fake: FakeBigQuery, store: ArtifactStore) -> None:
    fake.done_after_polls = 2
    output = run_bigquery_extract(config(), make_context(store))
    job_id = fake.inserted()["jobReference"]["jobId"]
    assert len(fake.requests_to("GET", f"/jobs/{job_id}")) == 2
    assert read_back(store, output)[0].rows == 7


def test_a_refused_query_fails_with_bigquerys_message(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    fake.insert_error = (400, "invalidQuery", "Syntax error: Unexpected identifier at [1:1]")
    with pytest.raises(NodeFailedError) as failed:
        run_bigquery_extract(config(query="SELEC 1"), make_context(store))
    assert re.fullmatch(
        r"BigQuery refused the query \(invalidQuery\): "
        r"Syntax error: Unexpected identifier at \[1:1\] \(job figway_[0-9a-f-]+\)",
        str(failed.value),
    ), failed.value
    assert fake.page_requests() == []
    assert files_in(store) == []


def test_access_denied_says_so(fake: FakeBigQuery, store: ArtifactStore) -> None:
    fake.insert_error = (403, "accessDenied", "User does not have bigquery.jobs.create")
    with pytest.raises(NodeFailedError, match=r"^BigQuery denied access in project 'my-project' "):
        run_bigquery_extract(config(), make_context(store))


def test_a_job_that_fails_fails_the_node(fake: FakeBigQuery, store: ArtifactStore) -> None:
    fake.job_error = (
        "bytesBilledLimitExceeded",
        "Query exceeded limit for bytes billed: 1000. 10485760 or higher required.",
    )
    with pytest.raises(NodeFailedError) as failed:
        run_bigquery_extract(config(maximum_bytes_billed=1000), make_context(store))
    message = str(failed.value)
    assert message.startswith("BigQuery refused the query (bytesBilledLimitExceeded): ")
    assert "Query exceeded limit for bytes billed: 1000." in message
    assert files_in(store) == []


def test_a_kill_while_the_query_runs_cancels_the_job(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    fake.done_after_polls = None  # runs until cancelled
    context = make_context(store)
    context.cancel_event.set()
    with pytest.raises(NodeCancelledError, match="was cancelled"):
        run_bigquery_extract(config(), context)
    job_id = fake.inserted()["jobReference"]["jobId"]
    assert len(fake.requests_to("POST", f"/jobs/{job_id}/cancel")) == 1
    assert fake.page_requests() == []


def test_a_query_past_its_timeout_is_cancelled(fake: FakeBigQuery, store: ArtifactStore) -> None:
    fake.done_after_polls = None
    with pytest.raises(NodeFailedError, match=r"did not finish within 0\.3 s \(timeout_seconds\)"):
        run_bigquery_extract(config(timeout_seconds=0.3), make_context(store))
    job_id = fake.inserted()["jobReference"]["jobId"]
    assert len(fake.requests_to("POST", f"/jobs/{job_id}/cancel")) == 1


def test_a_kill_between_pages_stops_reading_and_leaves_no_table(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    context = make_context(store)

    def kill_on_second_page(offset: int) -> None:
        if offset == 3:
            context.cancel_event.set()

    fake.on_page = kill_on_second_page
    with pytest.raises(NodeCancelledError, match=r"after 2 pages \(6 rows\)"):
        run_bigquery_extract(config(page_size=3), context)
    assert [r.query.get("pageToken") for r in fake.page_requests()] == [None, ["3"]]
    assert files_in(store) == []  # the partial file is removed


def test_no_artifact_store_fails_before_any_query(fake: FakeBigQuery) -> None:
    with pytest.raises(NodeFailedError, match="no artifact store"):
        run_bigquery_extract(config(), make_context(None))
    assert fake.received == []


def test_every_client_is_closed(
    fake: FakeBigQuery, store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[bool] = []
    real_client = fake.client

    def client(project: str, credentials: object, location: str | None) -> Any:
        made = real_client(project, credentials, location)
        real_close = made.close

        def close() -> None:
            closed.append(True)
            real_close()

        made.close = close
        return made

    monkeypatch.setattr(bigquery_node, "_client", client)
    run_bigquery_extract(config(), make_context(store))
    fake.insert_error = (400, "invalidQuery", "no")
    with pytest.raises(NodeFailedError):
        run_bigquery_extract(config(), make_context(store))
    assert closed == [True, True]


# -- credentials ---------------------------------------------------------------------------------


def test_a_service_account_secret_becomes_the_clients_credentials(
    fake: FakeBigQuery, store: ArtifactStore
) -> None:
    key = service_account_key("reader@my-project.iam.gserviceaccount.com")
    context = make_context(store, secrets={"bq-reader": key})
    run_bigquery_extract(config(credentials="secret:bq-reader"), context)
    (given,) = fake.credentials_given
    assert isinstance(given, service_account.Credentials)
    assert given.service_account_email == "reader@my-project.iam.gserviceaccount.com"
    # The key's private key alone is masked too, should an error quote just that.
    pem = json.loads(key)["private_key"]
    assert context.secrets.redactor.redact(f"bad key {pem}") == "bad key ***"


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("not json at all: hunter2-hunter2", "does not hold a JSON key"),
        ('["a", "list"]', "does not hold a JSON key"),
        ('{"type": "service_account"}', "missing fields"),
        (
            json.dumps(
                {
                    "type": "service_account",
                    "private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END",
                    "client_email": "a@b.iam.gserviceaccount.com",
                    "token_uri": "https://oauth2.googleapis.com/token",
                }
            ),
            "not hold a usable service-account key",
        ),
    ],
)
def test_a_secret_that_is_not_a_key_fails_without_quoting_it(
    fake: FakeBigQuery, store: ArtifactStore, secret: str, problem: str
) -> None:
    context = make_context(store, secrets={"bq-reader": secret})
    with pytest.raises(NodeFailedError, match=problem) as failed:
        run_bigquery_extract(config(credentials="secret:bq-reader"), context)
    assert "secret 'bq-reader'" in str(failed.value)
    assert "hunter2" not in str(failed.value)
    assert "bm90IGEga2V5" not in str(failed.value)
    # Nothing chained either: a traceback would show what the exception quoted.
    assert failed.value.__cause__ is None
    assert failed.value.__context__ is None or failed.value.__suppress_context__
    assert fake.received == []


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (
            google_auth_exceptions.DefaultCredentialsError(
                "Your default credentials were not found"
            ),
            r"^no credentials for BigQuery: set credentials: secret:NAME .*were not found",
        ),
        (
            requests.ConnectionError("connection refused"),
            r"^cannot reach BigQuery: connection refused$",
        ),
    ],
)
def test_an_error_making_the_client_is_translated(
    monkeypatch: pytest.MonkeyPatch, store: ArtifactStore, error: Exception, problem: str
) -> None:
    def client(project: str, credentials: object, location: str | None) -> Any:
        raise error

    monkeypatch.setattr(bigquery_node, "_client", client)
    with pytest.raises(NodeFailedError, match=problem):
        run_bigquery_extract(config(), make_context(store))


def test_the_real_client_factory_uses_the_given_credentials() -> None:
    credentials = service_account.Credentials.from_service_account_info(
        json.loads(service_account_key())
    )
    client = bigquery_node._client("my-project", credentials, "EU")
    try:
        assert client.project == "my-project"
        assert client.location == "EU"
        assert client._credentials.service_account_email == credentials.service_account_email
    finally:
        client.close()


# -- the paging loop on its own ------------------------------------------------------------------


def batch(ids: list[int]) -> pa.RecordBatch:
    return pa.record_batch({"id": pa.array(ids, pa.int64())})


def test_write_pages_writes_every_batch(store: ArtifactStore) -> None:
    reference = write_pages(iter([batch([1, 2]), batch([3]), batch([])]), make_context(store))
    assert reference.rows == 3
    assert read_back(store, reference.to_output())[1].column("id").to_pylist() == [1, 2, 3]


@pytest.mark.parametrize("batches", [[], [pa.RecordBatch.from_pydict({})]])
def test_write_pages_refuses_a_result_without_columns(
    store: ArtifactStore, batches: list[pa.RecordBatch]
) -> None:
    with pytest.raises(NodeFailedError, match="no result set"):
        write_pages(iter(batches), make_context(store))
    assert files_in(store) == []


def test_write_pages_fetches_no_page_after_a_kill(store: ArtifactStore) -> None:
    context = make_context(store)
    fetched: list[int] = []

    def pages() -> Iterator[pa.RecordBatch]:
        for number in range(1, 4):
            fetched.append(number)
            if number == 2:
                context.cancel_event.set()
            yield batch([number])

    with pytest.raises(NodeCancelledError):
        write_pages(pages(), context)
    assert fetched == [1, 2]
    assert files_in(store) == []
