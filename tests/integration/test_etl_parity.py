"""The example ETL pipeline on real RQ workers and a real Prefect worker: same tables, same
fingerprints, right figures, and no secret anywhere it must not be.

`examples/workflows/sales_etl.yaml` runs as shipped, apart from its target table (one per
backend): orders from PostgreSQL and customers from MariaDB, joined by DuckDB, loaded into
PostgreSQL. The gateway and the RQ worker get the connection secrets in their environment;
the session's Prefect worker has none, and finds them in the Secret blocks that
`figway setup prefect --secrets-from-env` stores, as the docs tell operators to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from backends.artifacts import comparable_output
from backends.store.models import Base
from tests.support.figway_stack import FIGWAY
from tests.support.prefect_services import PrefectServices
from tests.support.prefect_stack import PrefectStack, prefect_stack
from tests.support.services import flushed_redis

pytestmark = pytest.mark.service

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "workflows" / "sales_etl.yaml"
SEED = REPO / "examples" / "etl" / "seed.py"
ORDERS = 20_000
RUN_TIMEOUT = 120.0
#: In every secret's value, so a leak is found by searching for it.
MARKER = f"leakcheck{uuid.uuid4().hex}"

SHADOW_RULES = """\
phase: 1
default: rq
rules:
  - id: shadow-etl
    match: {workflow_id: "etl_shadowed"}
    backend: rq
    shadow: prefect
"""


@pytest.fixture(scope="module")
def mysql_database(mysql_url: str) -> Iterator[str]:
    """A MariaDB database of this module's own (the example's table names are fixed)."""
    name = f"figway_etl_{uuid.uuid4().hex[:10]}"
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    yield name
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="module")
def secrets(upgraded_pg_url: str, mysql_database: str) -> dict[str, str]:
    """The example's three connections, each carrying MARKER (PostgreSQL's trust auth ignores
    the password; PyMySQL ignores `application_name`, one of the options a URL may carry)."""
    pg = upgraded_pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{MARKER}@")
    assert MARKER in pg
    mysql = f"mysql://root@127.0.0.1:3306/{mysql_database}?application_name={MARKER}"
    return {
        "FIGWAY_SECRET_ETL_SOURCE_PG": pg,
        "FIGWAY_SECRET_ETL_SOURCE_MYSQL": mysql,
        "FIGWAY_SECRET_ETL_TARGET_PG": pg,
    }


@pytest.fixture(scope="module")
def stack(
    upgraded_pg_url: str,
    prefect_services: PrefectServices,
    secrets: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrefectStack]:
    """A gateway and an RQ worker with the secrets; Prefect's worker gets them from blocks."""
    seeded = subprocess.run(
        [sys.executable, str(SEED), "--orders", str(ORDERS)],
        env={**os.environ, **secrets},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    stored = subprocess.run(
        [FIGWAY, "setup", "prefect", "--secrets-from-env"],
        env=prefect_services.env(secrets),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert "secret block figway-etl-source-pg: stored" in stored.stdout
    assert MARKER not in stored.stdout + stored.stderr

    with (
        flushed_redis() as redis_url,
        prefect_stack(
            database_url=upgraded_pg_url,
            redis_url=redis_url,
            log_dir=tmp_path_factory.mktemp("etl"),
            services=prefect_services,
            rules=SHADOW_RULES,
            settings=secrets,
        ) as running,
    ):
        try:
            running.start_workers("etl-rq")
            yield running
        finally:
            drop_targets(upgraded_pg_url)


def drop_targets(database_url: str) -> None:
    """Remove the tables the example read and wrote."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS etl_orders")
        for table in ("etl_target_rq", "etl_target_prefect", "etl_target_shadowed"):
            connection.execute(f"DROP TABLE IF EXISTS {table}")


def example(target: str, **fields: Any) -> dict[str, Any]:
    """The shipped example, loading into ``target`` instead of its own table."""
    definition = yaml.safe_load(EXAMPLE.read_text())
    definition["nodes"]["load_revenue"]["config"]["table"] = target
    definition.update(fields)
    return definition


def put(stack: PrefectStack, workflow_id: str, definition: dict[str, Any]) -> None:
    body = {key: value for key, value in definition.items() if key != "workflow_id"}
    response = stack.http.put(f"/workflows/{workflow_id}", json=body)
    assert response.status_code in (200, 201), response.text


def expected_revenue(pg_url: str, mysql_database: str) -> dict[str, tuple[int, Decimal, int]]:
    """The figures computed here, in Python, from the sources: (orders, revenue, web orders)."""
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", database=mysql_database)
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT id, region FROM etl_customers")
        region_of = dict(cursor.fetchall())
    figures: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0), 0])
    with psycopg.connect(pg_url) as connection:
        for customer_id, amount, channel in connection.execute(
            "SELECT customer_id, amount, channel FROM etl_orders WHERE ordered_on >= '2026-01-01'"
        ):
            row = figures[region_of[customer_id]]
            row[0] += 1
            row[1] += amount
            row[2] += channel is not None
    return {region: (n, revenue, web) for region, (n, revenue, web) in figures.items()}


def loaded(pg_url: str, table: str) -> dict[str, tuple[int, Decimal, int]]:
    with psycopg.connect(pg_url) as connection:
        return {
            region: (orders, revenue, web)
            for region, orders, revenue, web in connection.execute(
                f"SELECT region, orders, revenue, web_orders FROM {table}"
            )
        }


def test_the_example_etl_gives_the_same_tables_on_rq_and_on_prefect(
    stack: PrefectStack, upgraded_pg_url: str, mysql_database: str
) -> None:
    runs = {}
    for backend in ("rq", "prefect"):
        # The extract and load nodes would put it on the postgres pool; the session's
        # Prefect worker serves the default pool.
        put(
            stack,
            f"etl_{backend}",
            example(f"etl_target_{backend}", backend=backend, pool="default"),
        )
        job_run_id = f"etl-{backend}-{uuid.uuid4().hex[:8]}"
        stack.start_run(f"etl_{backend}", job_run_id)
        runs[backend] = job_run_id
    ended = {b: stack.wait_for_end(j, timeout=RUN_TIMEOUT) for b, j in runs.items()}
    context = "\n\n".join(stack.explain(j) for j in runs.values())
    assert {b: (r["backend"], r["status"]) for b, r in ended.items()} == {
        "rq": ("rq", "succeeded"),
        "prefect": ("prefect", "succeeded"),
    }, context

    # Every node's output is the same table on both: rows, columns and fingerprint.
    outputs = {
        backend: {n: comparable_output(v["output"]) for n, v in run["nodes"].items()}
        for backend, run in ended.items()
    }
    # (The loads differ only in the table each was told to write.)
    assert outputs["rq"].pop("load_revenue")["table"] == "etl_target_rq"
    assert outputs["prefect"].pop("load_revenue")["table"] == "etl_target_prefect"
    assert outputs["rq"] == outputs["prefect"], context
    assert outputs["rq"]["extract_orders"]["artifact"]["rows"] == ORDERS
    assert outputs["rq"]["extract_customers"]["artifact"]["rows"] == 1_000
    assert outputs["rq"]["revenue_by_region"]["artifact"]["rows"] == 5
    # The load reports the fingerprint of what it loaded: the transform's table.
    load = ended["rq"]["nodes"]["load_revenue"]["output"]
    assert load["rows"] == 5
    assert load["fingerprint"] == outputs["rq"]["revenue_by_region"]["artifact"]["fingerprint"]

    # The loaded tables are equal, and right.
    expected = expected_revenue(upgraded_pg_url, mysql_database)
    assert loaded(upgraded_pg_url, "etl_target_rq") == expected
    assert loaded(upgraded_pg_url, "etl_target_prefect") == expected

    # The rows passed between nodes as files in the artifact store, one per output.
    for backend, run in ended.items():
        for node_id in ("extract_orders", "extract_customers", "revenue_by_region"):
            # Relative to the store: the API does not show where the store is.
            uri = run["nodes"][node_id]["output"]["artifact"]["uri"]
            assert uri.startswith(f"runs/{run['job_run_id']}/"), uri
            store = Path(os.environ["FIGWAY_TEST_ARTIFACT_URL"])
            assert (store / uri).is_file(), (backend, node_id, uri)

    assert_no_secret_anywhere(stack, upgraded_pg_url, list(runs.values()))


def test_a_shadowed_etl_run_loads_once_and_its_shadow_matches(
    stack: PrefectStack, upgraded_pg_url: str
) -> None:
    """The load is `sandboxed`: the shadow on Prefect computes everything and writes nothing."""
    definition = example("etl_target_shadowed", pool="default")
    definition["nodes"]["load_revenue"]["config"]["mode"] = "append"
    put(stack, "etl_shadowed", definition)
    job_run_id = f"etl-shadowed-{uuid.uuid4().hex[:8]}"
    started = stack.start_run("etl_shadowed", job_run_id)
    assert started["routing"]["reason"].endswith("shadowed on prefect"), started["routing"]

    ended = stack.wait_for_end(job_run_id, timeout=RUN_TIMEOUT)
    shadow = stack.wait_for_end(f"{job_run_id}~shadow", timeout=RUN_TIMEOUT)
    context = stack.explain(job_run_id) + stack.explain(f"{job_run_id}~shadow")
    assert (ended["status"], shadow["status"], shadow["backend"]) == (
        "succeeded",
        "succeeded",
        "prefect",
    ), context
    deadline = time.monotonic() + RUN_TIMEOUT
    while (found := stack.http.get(f"/routing/shadows/{job_run_id}")).status_code == 404:
        assert time.monotonic() < deadline, "no shadow comparison recorded"
        time.sleep(0.2)
    assert found.json()["matched"] is True, found.json()
    # Appended once: the shadow's load wrote nothing.
    with psycopg.connect(upgraded_pg_url) as connection:
        (total,) = connection.execute("SELECT sum(orders) FROM etl_target_shadowed").fetchone()
    assert total == ORDERS
    shadow_uri = shadow["nodes"]["extract_orders"]["output"]["artifact"]["uri"]
    assert shadow_uri.startswith("shadow/"), shadow_uri
    logs = stack.http.get(f"/workflow_runs/{job_run_id}~shadow/logs").json()
    assert any("shadow run: wrote nothing" in line["message"] for line in logs["lines"]), logs


def assert_no_secret_anywhere(stack: PrefectStack, pg_url: str, job_run_ids: list[str]) -> None:
    """MARKER is in every secret; it must not be in figway's records, API, or Prefect's."""
    places: dict[str, str] = {}
    with psycopg.connect(pg_url) as connection:
        for table in Base.metadata.sorted_tables:
            rows = connection.execute(f"SELECT t::text FROM {table.name} t").fetchall()
            places[f"table {table.name}"] = "\n".join(row[0] for row in rows)
    for job_run_id in job_run_ids:
        places[f"run {job_run_id}"] = stack.http.get(f"/workflow_runs/{job_run_id}").text
        places[f"logs {job_run_id}"] = stack.http.get(f"/workflow_runs/{job_run_id}/logs").text
        for flow_run in stack.services.flow_runs(job_run_id):
            places[f"prefect parameters {job_run_id}"] = repr(flow_run.parameters)
            places[f"prefect logs {job_run_id}"] = prefect_logs(stack.services, flow_run.id)
    places["figway process logs"] = stack.logs()
    assert any(f"prefect logs {j}" in places for j in job_run_ids), "no Prefect flow run found"
    assert places["table node_runs"], "the records were not read"
    leaked = [place for place, text in places.items() if MARKER in text]
    assert not leaked, f"a secret's value is in: {leaked}"


def prefect_logs(services: PrefectServices, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with services.client() as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return "\n".join(log.message for log in logs)
