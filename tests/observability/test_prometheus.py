"""figway's Prometheus config, alert rules and Grafana dashboards, against a real Prometheus.

`promtool` checks the config and the rules as shipped in compose/. Then a real
`prometheus` scrapes a real gateway that has run workflows on both backends
(RQ and Prefect, in-process), and every PromQL expression of every dashboard
panel and alert rule is evaluated through Prometheus' query API: a syntax
error, or an expression that returns no series, fails the test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from backends.store import create_database_engine
from backends.store.routing_records import RoutingRecords
from tests.support.api_client import Gateway, define, start, wait_for, wait_for_run
from tests.support.gateway import client_of, running_gateway
from tests.support.processes import free_port
from tests.support.rules import PREFECT_AND_SHADOW_RULES

pytestmark = pytest.mark.service

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
PROMETHEUS_CONFIG = COMPOSE / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((COMPOSE / "grafana" / "dashboards").glob("*.json"))
#: Grafana's variables, as a person picking "All" and the default interval would have them.
VARIABLES = {"$workflow": ".*", "${workflow}": ".*", "$__rate_interval": "1m"}

#: The rule the history's guard trip is recorded for (no rule of any test's rules file).
TRIPPED_RULE = "prometheus-test-guard"

RULES = PREFECT_AND_SHADOW_RULES


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not installed; `make tools` installs Debian's prometheus")
    return found


def test_promtool_accepts_the_config_and_the_alert_rules() -> None:
    checked = subprocess.run(
        # --syntax-only: the key file it names is a compose secret, mounted only in the stack.
        [tool("promtool"), "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for rules in rule_files():
        checked = subprocess.run(
            [tool("promtool"), "check", "rules", str(rules)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def rule_files() -> list[Path]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    files = [PROMETHEUS_CONFIG.parent / name for name in config.get("rule_files", [])]
    assert files, "prometheus.yml loads no rule files"
    return files


# -- a gateway with history on both backends, scraped by a real Prometheus ------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> Iterator[Gateway]:
    rules = tmp_path_factory.mktemp("rules") / "routing_rules.yaml"
    rules.write_text(RULES)
    with running_gateway(
        tmp_path_factory.mktemp("prometheus-gateway"),
        database_url=pg_url,
        routing_rules=rules,
    ) as running:
        with client_of(running) as client:
            make_history(client, pg_url)
        try:
            yield running
        finally:
            engine = create_database_engine(pg_url)
            RoutingRecords(engine).reset_guard(rule_id=TRIPPED_RULE, by="test")
            engine.dispose()


def make_history(client: httpx.Client, pg_url: str) -> None:
    """Runs on both backends that succeed, fail and retry; a shadow; a guard trip."""
    nodes = {
        "ok": {"type": "noop"},
        "flaky": {"type": "fail", "config": {"times": 1}, "retries": 1},
        "nap": {"type": "sleep", "config": {"seconds": 0.1}},
    }
    broken = {"bad": {"type": "fail"}}
    runs = []
    for prefix in ("rq", "pf"):
        workflow_id = define(client, nodes, prefix=prefix)
        runs += [start(client, workflow_id)["job_run_id"] for _ in range(3)]
        runs.append(start(client, define(client, broken, prefix=prefix))["job_run_id"])
    shadowed = start(client, define(client, {"ok": {"type": "noop"}}, prefix="shadow"))
    runs.append(shadowed["job_run_id"])
    for job_run_id in runs:
        wait_for_run(client, job_run_id)
    wait_for(
        lambda: client.get(f"/routing/shadows/{shadowed['job_run_id']}").status_code,
        lambda status: status == 200,
        "the shadow comparison",
        timeout=120,
    )
    # A guard trip, as a guard records one: the metric reads the trips recorded. The
    # database is the session's: a rule id of its own, reset after, touches no other test.
    engine = create_database_engine(pg_url)
    records = RoutingRecords(engine)
    records.trip_guard(rule_id=TRIPPED_RULE, rules_version="test", reason="test", figures={})
    engine.dispose()


@pytest.fixture(scope="module")
def prometheus(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the gateway every second, with figway's alert rules."""
    workdir = tmp_path_factory.mktemp("prometheus")
    target = gateway.base_url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files()],
        "scrape_configs": [{"job_name": "figway", "static_configs": [{"targets": [target]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            wait_for(
                lambda: _ready(client),
                lambda ready: ready,
                "Prometheus answering",
                timeout=60,
            )
            # Enough scrapes for rate() over a minute's window to have two points or more.
            wait_for(
                lambda: _query(client, "count_over_time(figway_metrics_leader[1m])"),
                lambda result: bool(result) and float(result[0]["value"][1]) >= 5,
                "five scrapes of the gateway",
                timeout=60,
            )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/-/ready").status_code == 200
    except httpx.TransportError:
        return False


def _query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body.get('error', body)}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def dashboard_expressions() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str) and node["expr"].strip():
                found.append((where, node["expr"]))
            for key, value in node.items():
                title = node.get("title") if isinstance(node.get("title"), str) else None
                walk(value, f"{where} > {title}" if title and key == "targets" else where)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    for path in DASHBOARDS:
        walk(json.loads(path.read_text()), path.name)
    return found


def alert_expressions() -> list[tuple[str, str]]:
    """Each alert's condition, split at its top-level comparison: a healthy system has no
    alert firing, so the test asks for the figures the comparison is made on."""
    found: list[tuple[str, str]] = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                for operand in comparison_operands(rule["expr"]):
                    found.append((f"{path.name} > {name}", operand))
    return found


_COMPARISON = re.compile(r"\s(>=|<=|==|!=|>|<)(\s+bool)?\s")


def comparison_operands(expr: str) -> list[str]:
    """The sides of ``expr``'s top-level comparison (both, unless one is a number)."""
    depth = 0
    for index, char in enumerate(expr):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            match = _COMPARISON.match(expr, index - 1) if index else None
            if match:
                sides = [expr[: match.start()].strip(), expr[match.end() :].strip()]
                return [side for side in sides if not re.fullmatch(r"[\d.]+", side)]
    return [expr]


def substitute(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_the_dashboards_and_the_alerts_have_expressions() -> None:
    assert DASHBOARDS, "no dashboard JSON under compose/grafana/dashboards"
    assert len(dashboard_expressions()) >= 10
    assert alert_expressions()


def test_every_dashboard_and_alert_expression_returns_series(prometheus: str) -> None:
    empty: list[str] = []
    with httpx.Client(base_url=prometheus, timeout=30) as client:
        for where, expr in dashboard_expressions() + alert_expressions():
            left = set(re.findall(r"\$\{?\w+\}?", substitute(expr)))
            assert not left, f"{where}: unknown variable(s) {left} in {expr}"
            if not _query(client, substitute(expr)):
                empty.append(f"{where}: {expr}")
    assert not empty, "expressions with no series:\n" + "\n".join(empty)
