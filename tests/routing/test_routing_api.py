"""Routing through the real gateway: rules recorded on runs, hot reload, pinning, shadows.

The gateway here runs on the real PostgreSQL (its system of record and the
table the shadow test's load node writes to), with RQ and Prefect in-process,
and a rules file of its own that the tests rewrite while it serves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from gateway.routing.loading import rules_version
from tests.support.api_client import (
    Gateway,
    define,
    definition,
    get_run,
    start,
    unique,
    wait_for,
    wait_for_run,
)
from tests.support.gateway import client_of, running_gateway
from tests.support.rules import PREFECT_AND_SHADOW_RULES

pytestmark = pytest.mark.service

RULES = PREFECT_AND_SHADOW_RULES

#: The first Prefect flow in a process starts Prefect's ephemeral API (14 s measured).
PREFECT_START_SECONDS = 120


@pytest.fixture(scope="module")
def rules_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "routing_rules.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory, rules_path: Path, pg_url: str
) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("routed"),
        database_url=pg_url,
        routing_rules=rules_path,
        routing_reload_seconds=0.2,
    ) as gateway:
        yield gateway


@pytest.fixture
def client(routed: Gateway, rules_path: Path) -> Iterator[httpx.Client]:
    """A client of the routed gateway, with the module's rules in force again."""
    with client_of(routed) as http:
        apply_rules(http, rules_path, RULES)
        yield http


def apply_rules(client: httpx.Client, path: Path, content: str) -> None:
    """Write the rules file and wait until the gateway has put it in force."""
    # Write-then-rename, as editors and config management do: never a half-written file.
    staging = path.with_suffix(".tmp")
    staging.write_text(content)
    staging.replace(path)
    wait_for(
        lambda: client.get("/routing/rules").json()["version"],
        lambda version: version == rules_version(content),
        f"rules version {rules_version(content)} in force",
    )


def test_a_run_records_the_rule_version_and_reason_that_routed_it(client: httpx.Client) -> None:
    on_rq = start(client, define(client, {"a": {"type": "noop"}}, prefix="plain"))
    assert on_rq["backend"] == "rq"
    assert on_rq["routing"] == {
        "rule": None,
        "version": rules_version(RULES),
        "reason": "no rule matched: the default, rq",
    }
    on_prefect = start(client, define(client, {"a": {"type": "noop"}}, prefix="pf"))
    assert on_prefect["backend"] == "prefect"
    assert on_prefect["routing"]["rule"] == "to-prefect"
    finished = wait_for_run(client, on_prefect["job_run_id"])
    assert finished["status"] == "succeeded"
    assert finished["routing"] == on_prefect["routing"]


def test_a_shadowed_workflow_with_a_load_node_writes_once(
    client: httpx.Client, pg_url: str
) -> None:
    table = unique("sink").replace("-", "_")
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"CREATE TABLE {table} (value text)")
    load = {
        "type": "python",
        "config": {
            "callable": "tests.support.api_client:load_row",
            "kwargs": {"dsn": pg_url, "table": table, "value": "v1"},
            "side_effects": "sandboxed",
        },
    }
    workflow_id = define(
        client, {"extract": {"type": "noop"}, "load": load}, {"load": ["extract"]}, prefix="shadow"
    )
    run = start(client, workflow_id)
    assert run["backend"] == "rq"
    assert run["routing"]["reason"].endswith("shadowed on prefect")
    assert wait_for_run(client, run["job_run_id"])["status"] == "succeeded"

    comparison = wait_for(
        lambda: client.get(f"/routing/shadows/{run['job_run_id']}"),
        lambda response: response.status_code == 200,
        "the shadow comparison",
        timeout=PREFECT_START_SECONDS,
    ).json()
    assert comparison["shadow_backend"] == "prefect"
    assert comparison["matched"] is True, comparison["mismatches"]
    summary = client.get("/routing/shadows").json()
    assert summary[workflow_id] == {"compared": 1, "mismatched": 0}
    mismatched = client.get("/routing/shadow-mismatches").json()
    assert run["job_run_id"] not in {m["job_run_id"] for m in mismatched}
    shadow = get_run(client, f"{run['job_run_id']}~shadow")
    assert (shadow["backend"], shadow["status"]) == ("prefect", "succeeded")
    assert shadow["nodes"]["load"]["output"] == {"rows": 1, "value": "v1"}

    with psycopg.connect(pg_url) as connection:
        rows = connection.execute(f"SELECT value FROM {table}").fetchall()
    assert rows == [("v1",)], "the shadow run must not write"
    stats = client.get("/workflow_runs/stats").json()
    assert stats["by_workflow"][workflow_id]["total"] == 1, "a shadow run is not the client's"


def test_a_workflow_with_an_unguarded_side_effect_is_not_shadowed(client: httpx.Client) -> None:
    writer = {"type": "python", "config": {"callable": "builtins:print"}}  # `unsafe` by default
    run = start(client, define(client, {"write": writer}, prefix="shadow"))
    reason = run["routing"]["reason"]
    assert "not shadowed on prefect" in reason
    assert "node 'write' (python)" in reason
    assert wait_for_run(client, run["job_run_id"])["status"] == "succeeded"
    assert client.get(f"/workflow_runs/{run['job_run_id']}~shadow").status_code == 404


def test_killing_a_shadowed_run_kills_its_shadow_too(client: httpx.Client) -> None:
    nap = {"type": "sleep", "config": {"seconds": 120}}
    run = start(client, define(client, {"nap": nap}, prefix="shadow"))
    shadow_id = f"{run['job_run_id']}~shadow"
    wait_for(
        lambda: client.get(f"/workflow_runs/{shadow_id}").json().get("status"),
        lambda status: status in ("queued", "running"),
        "the shadow run starting",
        timeout=PREFECT_START_SECONDS,
    )
    assert client.delete(f"/workflow_runs/{run['job_run_id']}").status_code == 200
    assert wait_for_run(client, run["job_run_id"])["status"] == "cancelled"
    assert wait_for_run(client, shadow_id)["status"] == "cancelled"


def test_a_run_stays_on_its_backend_after_the_rules_change(
    client: httpx.Client, rules_path: Path
) -> None:
    workflow_id = define(client, {"wait": {"type": "sleep", "config": {"seconds": 60}}})
    run = start(client, workflow_id, job_run_id=unique("pinned"))
    assert run["backend"] == "rq"
    wait_for_run(client, run["job_run_id"], frozenset({"running"}))

    everything_to_prefect = "phase: 2\ndefault: prefect\nrules: []\n"
    apply_rules(client, rules_path, everything_to_prefect)
    repeat = client.post(
        "/workflow_runs/",
        json={
            "workspace_id": "ws1",
            "folder_id": "folder1",
            "job_id": "job1",
            "workflow_id": workflow_id,
            "job_run_id": run["job_run_id"],
        },
    )
    assert repeat.status_code == 200, "a repeated job_run_id is the same run"
    assert repeat.json()["backend"] == "rq"
    moved = start(client, workflow_id)
    assert moved["backend"] == "prefect", "new runs follow the new rules"
    assert client.delete(f"/workflow_runs/{moved['job_run_id']}").status_code == 200

    killed = client.delete(f"/workflow_runs/{run['job_run_id']}")
    assert killed.status_code == 200, killed.text
    after = wait_for_run(client, run["job_run_id"])
    assert (after["status"], after["backend"]) == ("cancelled", "rq")
    assert after["routing"]["version"] == rules_version(RULES)
    logs = client.get(f"/workflow_runs/{run['job_run_id']}/logs")
    assert logs.status_code == 200


def test_rules_reload_under_concurrent_posts_never_drops_a_request(
    client: httpx.Client, routed: Gateway, rules_path: Path
) -> None:
    workflow_id = define(client, {"a": {"type": "noop"}}, prefix="reload")
    # Three good versions that all keep this workflow on RQ: what differs is the version.
    second = RULES + "  - id: second\n    match: {workflow_id: other-*}\n    backend: prefect\n"
    broken = second + "  - id: broken\n    backend: celery\n    percent: 150\n"
    third = RULES + "  - id: third\n    match: {workflow_id: more-*}\n    backend: prefect\n"
    answers: list[tuple[int, dict[str, Any]]] = []
    stop = threading.Event()

    def post_runs() -> None:
        with httpx.Client(base_url=routed.base_url, timeout=30) as http:
            while not stop.is_set() and len(answers) < 5_000:  # bounded; the event ends it
                response = http.post(
                    "/workflow_runs/",
                    json={
                        "workspace_id": "ws1",
                        "folder_id": "folder1",
                        "job_id": unique("job"),
                        "workflow_id": workflow_id,
                    },
                )
                answers.append((response.status_code, response.json()))

    posters = [threading.Thread(target=post_runs) for _ in range(4)]
    for poster in posters:
        poster.start()
    try:
        time.sleep(0.5)
        apply_rules(client, rules_path, second)
        time.sleep(0.5)
        # Written whole, as apply_rules does: a poll must never see a half-written file,
        # whose refusal ("file", line 1) would come before the one this test is about.
        staging = rules_path.with_suffix(".tmp")
        staging.write_text(broken)
        staging.replace(rules_path)
        refused = wait_for(
            lambda: client.get("/routing/rules").json(),
            lambda rules: rules["refused"] is not None,
            "the broken file being refused",
        )
        assert refused["version"] == rules_version(second), "the last good rules stay"
        problems = {(p["line"], p["field"]) for p in refused["refused"]["problems"]}
        assert problems == {(21, "rules[4] (broken).backend"), (22, "rules[4] (broken).percent")}
        time.sleep(0.5)
        apply_rules(client, rules_path, third)
        time.sleep(0.5)
    finally:
        stop.set()
        for poster in posters:
            poster.join(timeout=60)

    assert answers, "no request was sent"
    assert {status for status, _ in answers} == {201}, [a for a in answers if a[0] != 201][:3]
    versions = [body["routing"]["version"] for _, body in answers]
    good = {rules_version(RULES), rules_version(second), rules_version(third)}
    assert set(versions) <= good, "every run was routed by a version that passed its checks"
    assert rules_version(second) in versions
    assert versions[-1] == rules_version(third)
    history = [a["version"] for a in client.get("/routing/history").json()]
    assert history[:3] == [rules_version(third), rules_version(second), rules_version(RULES)]
    assert rules_version(broken) not in history


def test_reload_now_refuses_a_bad_file_with_every_problem_and_its_line(
    client: httpx.Client, rules_path: Path
) -> None:
    rules_path.write_text("phase: 3\ndefault: rq\nrules:\n  - id: x\n    backend: nowhere\n")
    response = client.post("/routing/reload")
    assert response.status_code == 422
    body = response.json()
    assert rules_version(RULES) in body["detail"], "it says which version stays in force"
    assert {(e["line"], e["field"]) for e in body["errors"]} == {
        (2, "default"),
        (5, "rules[0] (x).backend"),
    }
    assert client.get("/routing/rules").json()["version"] == rules_version(RULES)


def test_explain_says_which_rule_and_why_the_others_were_passed_over(
    client: httpx.Client,
) -> None:
    workflow_id = define(client, {"a": {"type": "noop"}}, prefix="shadow")
    explained = client.get("/routing/explain", params={"workflow_id": workflow_id}).json()
    assert explained["backend"] == "rq"
    assert explained["rule_id"] == "shadowed"
    assert explained["shadow"] == "prefect"
    assert explained["workflow_registered"] is True
    assert explained["passed_over"] == [
        f"rule 'to-prefect' (line 4): workflow_id {workflow_id!r} does not match 'pf-*'"
    ]
    unknown = client.get("/routing/explain", params={"workflow_id": "nobody"}).json()
    assert (unknown["rule_id"], unknown["workflow_registered"]) == (None, False)


def test_explain_says_when_a_workflow_cannot_be_shadowed(client: httpx.Client) -> None:
    writer = {"type": "python", "config": {"callable": "builtins:print"}}
    workflow_id = define(client, {"write": writer}, prefix="shadow")
    explained = client.get("/routing/explain", params={"workflow_id": workflow_id}).json()
    assert explained["shadow"] is None
    assert "not shadowed on prefect: node 'write' (python)" in explained["reason"]
    tagged = client.get(
        "/routing/explain",
        params={"workflow_id": "shadow-new", "tag": ["a", "b"], "workspace_id": "ws1"},
    ).json()
    assert (tagged["rule_id"], tagged["shadow"]) == ("shadowed", "prefect")


def test_applied_versions_can_be_read_back(client: httpx.Client) -> None:
    version = client.get("/routing/rules").json()["version"]
    stored = client.get(f"/routing/history/{version}").json()
    assert (stored["version"], stored["content"]) == (version, RULES)
    assert client.get("/routing/history/000000000000").status_code == 404


def test_readiness_lists_what_still_holds_rq(client: httpx.Client) -> None:
    readiness = client.get("/routing/readiness").json()
    assert readiness["ready"] is False
    # Runs of earlier tests may still be in flight and held too; the rules always are.
    assert readiness["holds"][0] == (
        f"routing rules version {rules_version(RULES)} still name rq at: default, "
        "rule 'shadowed' backend, rule 'stepped' otherwise"
    )
    assert set(readiness["figures"]["rq_jobs"]) >= {"default.queued", "default.failed"}


def test_a_guard_reset_of_an_untripped_rule_is_404(client: httpx.Client) -> None:
    response = client.post("/routing/guards/to-prefect/reset")
    assert response.status_code == 404
    assert "not tripped" in response.json()["detail"]


# -- a Prefect server that does not answer ------------------------------------------------

DOWN_RULES = """\
phase: 2
default: rq
rules:
  - id: with-fallback
    match: {workflow_id: "fb-*"}
    backend: prefect
    fallback: rq
  - id: no-fallback
    match: {workflow_id: "nofb-*"}
    backend: prefect
"""


@pytest.fixture(scope="module")
def down_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rules = tmp_path_factory.mktemp("down-rules") / "rules.yaml"
    rules.write_text(DOWN_RULES)
    return rules


@pytest.fixture(scope="module")
def prefect_down(tmp_path_factory: pytest.TempPathFactory, down_rules: Path) -> Iterator[Gateway]:
    rules = down_rules
    # Nothing listens on the discard port: every Prefect call is refused at once. Prefect's
    # client reads the variable itself, as in production, so it is set, not just passed.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
        with running_gateway(tmp_path_factory.mktemp("prefect-down"), routing_rules=rules) as gw:
            assert gw.settings.prefect_api_url == "http://127.0.0.1:9/api"
            yield gw


def test_an_unreachable_backend_sends_the_run_to_the_rules_fallback(
    prefect_down: Gateway,
) -> None:
    with client_of(prefect_down) as client:
        client.put("/workflows/fb-etl", json=definition("fb-etl", {"a": {"type": "noop"}}))
        run = start(client, "fb-etl")
        assert run["backend"] == "rq"
        assert run["routing"]["rule"] == "with-fallback"
        assert "fell back to rq: prefect was unreachable" in run["routing"]["reason"]
        assert wait_for_run(client, run["job_run_id"])["status"] == "succeeded"


def test_without_a_fallback_the_client_gets_503_and_the_run_is_kept(
    prefect_down: Gateway,
) -> None:
    # A plain client: the 503 is the answer under test, not a server error.
    with httpx.Client(base_url=prefect_down.base_url, timeout=30) as client:
        client.put("/workflows/nofb-etl", json=definition("nofb-etl", {"a": {"type": "noop"}}))
        body = {
            "workspace_id": "ws1",
            "folder_id": "folder1",
            "job_id": "job1",
            "workflow_id": "nofb-etl",
            "job_run_id": unique("kept"),
        }
        for _ in range(2):  # a retry by the client is the same run, refused the same way
            refused = client.post("/workflow_runs/", json=body)
            assert refused.status_code == 503
            assert refused.headers["retry-after"]
            assert "prefect" in refused.json()["detail"]
            assert refused.json()["job_run_id"] == body["job_run_id"]
        kept = get_run(client, body["job_run_id"])
        assert (kept["status"], kept["backend"]) == ("pending", "prefect")
        assert "Prefect API" in kept["error"]
        assert kept["routing"]["rule"] == "no-fallback"
        stats = client.get("/workflow_runs/stats").json()
        assert stats["by_workflow"]["nofb-etl"] == {"total": 1, "pending": 1}


def test_readiness_waits_only_for_the_backends_the_rules_enable(
    prefect_down: Gateway, down_rules: Path
) -> None:
    # A plain client: the first 503 is the answer under test.
    with httpx.Client(base_url=prefect_down.base_url, timeout=30) as client:
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["prefect"] == {
            "up": False,
            "reason": "unreachable",
            "workers": None,
        }, "only up or down and a reason word: hosts and errors go to the log"
        try:
            apply_rules(
                client, down_rules, "phase: 1\ndefault: rq\nbackends: {prefect: {enabled: false}}\n"
            )
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["prefect"] == {"up": True, "reason": "switched_off"}
        finally:
            apply_rules(client, down_rules, DOWN_RULES)
