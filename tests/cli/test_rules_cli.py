"""``figway rules``: check, explain, diff, history, guards and readiness, through click's runner.

Each test sees no FIGWAY_* variable but the ones it sets, works in an empty
directory (so no ./routing_rules.yaml is picked up by accident) and writes its
rules files under its own tmp_path. Tests that read the database run on SQLite
and on PostgreSQL (the shared ``database_url`` fixture empties the tables
around each test); readiness runs on PostgreSQL and the real Redis.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis import Redis
from rq import Queue
from sqlalchemy import Engine

from backends.model.workflow import RunPlan, WorkflowDefinition, parse_definition
from backends.nodes import default_registry
from backends.store import Store, create_database_engine
from backends.store.routing_records import RoutingRecords
from gateway.cli.main import main
from gateway.routing.bucketing import bucket_of

REPO_RULES = Path(__file__).resolve().parents[2] / "routing_rules.yaml"
SUBCOMMANDS = (
    "check",
    "explain",
    "diff",
    "readiness",
    "history",
    "show",
    "guards",
    "guard-reset",
    "pause",
    "resume",
    "pin",
)


# -- helpers ---------------------------------------------------------------------------


def figway(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def rules_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def write_rules(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(rules_text(text), encoding="utf-8")
    return path


def version_of(path: Path) -> str:
    """The version figway gives a rules file: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def line_of(path: Path, marker: str) -> int:
    """The 1-based number of the one line of the file that contains ``marker``."""
    numbers = [
        number for number, line in enumerate(path.read_text().splitlines(), 1) if marker in line
    ]
    assert len(numbers) == 1, f"{marker!r} is on lines {numbers}"
    return numbers[0]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def register(
    engine: Engine,
    workflow_id: str,
    *,
    workspace_id: str = "ws1",
    folder_id: str = "f1",
    tags: tuple[str, ...] = (),
    backend: str | None = None,
) -> WorkflowDefinition:
    raw: dict[str, Any] = {
        "workflow_id": workflow_id,
        "workspace_id": workspace_id,
        "folder_id": folder_id,
        "tags": list(tags),
        "nodes": {"a": {"type": "noop"}},
    }
    if backend is not None:
        raw["backend"] = backend
    definition = parse_definition(raw, node_types=default_registry())
    Store(engine).put_workflow(definition=definition)
    return definition


def record_run(
    engine: Engine, definition: WorkflowDefinition, job_id: str, backend: str = "rq"
) -> str:
    job_run_id = f"run-{uuid.uuid4().hex[:12]}"
    plan = RunPlan.from_definition(definition, job_run_id=job_run_id, job_id=job_id)
    assert Store(engine).create_run(plan=plan, backend=backend, from_job=None)
    return job_run_id


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def engine(cli_env: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The empty, migrated test database, which the ``figway`` commands use too."""
    monkeypatch.setenv("FIGWAY_DATABASE_URL", database_url)
    engine = create_database_engine(database_url)
    yield engine
    engine.dispose()


# -- figway rules --help -----------------------------------------------------------------


def test_rules_help_lists_every_subcommand(cli_env: Path) -> None:
    result = figway("rules", "--help")
    assert result.exit_code == 0, result.output
    listed = set()
    in_commands = False
    for line in result.stdout.splitlines():
        if line.startswith("Commands:"):
            in_commands = True
        elif in_commands and line.strip():
            listed.add(line.split()[0])
    assert listed == set(SUBCOMMANDS)

    top = figway("--help")
    assert re.search(r"^\s+rules\s", top.stdout, re.MULTILINE), top.stdout


# -- rules check -----------------------------------------------------------------------

GOOD = """
phase: 2
default: prefect
rules:
  - id: keep-hello
    match: {workflow_id: hello}
    backend: rq
  - id: canary
    match: {workspace_id: ws1}
    backend: rq
    percent: 20
    otherwise: prefect
"""

# Five mistakes, each on the line that names it.
BAD = """
phase: 1
default: prefect               # phase 1 keeps rq as the default
rules:
  - id: first
    match: {workflow_id: "sales_*"}
    backend: teleport          # no such backend
  - id: split
    backend: prefect
    percent: 150               # more than 100
  - id: no-split
    match: {workflow_id: hello}
    backend: prefect
    salt: pepper               # only with percent
  - id: first                  # the id of an earlier rule
    match: {workflow_id: other}
    backend: rq
"""


def test_check_accepts_a_good_file(cli_env: Path, tmp_path: Path) -> None:
    path = write_rules(tmp_path, "good.yaml", GOOD)
    result = figway("rules", "check", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"{path}: ok (version {version_of(path)}, phase 2, 2 rule(s), default prefect)"
    )
    assert result.stderr == ""


def test_check_accepts_the_repository_rules_file(cli_env: Path) -> None:
    result = figway("rules", "check", str(REPO_RULES))
    assert result.exit_code == 0, result.output
    rule_count = sum(
        1 for line in REPO_RULES.read_text().splitlines() if re.match(r"^\s+- id: ", line)
    )
    default = re.search(r"^default: (\w+)", REPO_RULES.read_text(), re.MULTILINE)
    phase = re.search(r"^phase: (\d)", REPO_RULES.read_text(), re.MULTILINE)
    assert default is not None
    assert phase is not None
    assert f"{REPO_RULES}: ok (version {version_of(REPO_RULES)}, " in result.stdout
    assert (
        f"phase {phase.group(1)}, {rule_count} rule(s), default {default.group(1)})"
        in result.stdout
    )


def test_check_lists_every_problem_of_a_bad_file_with_its_line(
    cli_env: Path, tmp_path: Path
) -> None:
    path = write_rules(tmp_path, "bad.yaml", BAD)
    result = figway("rules", "check", str(path))
    assert result.exit_code == 1
    assert "ok (" not in result.output
    assert "Traceback" not in result.output
    stderr = result.stderr.splitlines()
    assert stderr[0] == f"{path}: refused, 5 problem(s)"
    expected = [
        (line_of(path, "default: prefect"), "default", "keeps `default: rq`"),
        (line_of(path, "teleport"), "rules[0] (first).backend", "unknown backend 'teleport'"),
        (line_of(path, "percent: 150"), "rules[1] (split).percent", "less than or equal to 100"),
        (line_of(path, "salt: pepper"), "rules[2] (no-split).salt", "only applies with `percent`"),
        (
            line_of(path, "the id of an earlier rule"),
            "rules[3] (first).id",
            "rule id 'first' is used by an earlier rule too",
        ),
    ]
    problems = [line.strip() for line in stderr[1:-1]]
    assert len(problems) == len(expected), problems
    for problem, (number, field, message) in zip(problems, expected, strict=True):
        assert problem.startswith(f"line {number}: {field}: "), problem
        assert message in problem, problem
    assert stderr[-1] == "Error: 1 of 1 file(s) refused"


def test_check_of_several_files_reports_each_and_fails_for_the_bad_one(
    cli_env: Path, tmp_path: Path
) -> None:
    good = write_rules(tmp_path, "good.yaml", GOOD)
    bad = write_rules(tmp_path, "bad.yaml", BAD)
    result = figway("rules", "check", str(good), str(bad), str(REPO_RULES))
    assert result.exit_code == 1
    assert f"{good}: ok (version {version_of(good)}," in result.stdout
    assert f"{REPO_RULES}: ok (version {version_of(REPO_RULES)}," in result.stdout
    assert str(bad) not in result.stdout
    assert f"{bad}: refused, 5 problem(s)" in result.stderr
    assert str(good) not in result.stderr
    assert "Error: 1 of 3 file(s) refused" in result.stderr


@pytest.mark.parametrize(
    ("text", "marker", "complaint"),
    [
        ("phase: 2\ndefault: rq\nrules: [unclosed\n", None, "not valid YAML"),
        ("- just\n- a list\n", "- just", "expected a mapping"),
        ("phase: 2\ndefault: rq\nrules:\n  - {id: a, backend: rq}\n  - {id: b\n", None, "YAML"),
    ],
    ids=["unclosed-list", "not-a-mapping", "unclosed-mapping"],
)
def test_check_refuses_unreadable_files(
    cli_env: Path, tmp_path: Path, text: str, marker: str | None, complaint: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    result = figway("rules", "check", str(path))
    assert result.exit_code == 1
    assert f"{path}: refused, 1 problem(s)" in result.stderr
    assert complaint in result.stderr
    assert re.search(r"^  line \d+: file: ", result.stderr, re.MULTILINE), result.stderr
    if marker is not None:
        assert f"line {line_of(path, marker)}: file: " in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "text",
    [
        "phase: !!python/object/apply:os.getcwd []\ndefault: rq\n",
        "phase: 2\ndefault: rq\n? [a, b]\n: c\n",
    ],
    ids=["python-tag", "unhashable-key"],
)
def test_check_refuses_yaml_a_safe_loader_cannot_build(
    cli_env: Path, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "unsafe.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["rules", "check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 1
    assert f"{path}: refused, 1 problem(s)" in result.stderr


def test_check_of_a_missing_file_is_a_usage_error(cli_env: Path, tmp_path: Path) -> None:
    result = figway("rules", "check", str(tmp_path / "nowhere.yaml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_check_needs_a_file(cli_env: Path) -> None:
    result = figway("rules", "check")
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


# -- rules explain ---------------------------------------------------------------------

EXPLAIN = """
phase: 2
default: rq
rules:
  - id: other-workspace
    match: {workspace_id: ws9}
    backend: prefect
  - id: critical-stays
    match: {tags: [critical]}
    backend: rq
  - id: new-non-critical
    match: {registered_after: 2020-01-01, tags: [non-critical]}
    backend: prefect
    fallback: rq
  - id: tagged-shadow
    match: {tags: [non-critical]}
    backend: rq
    shadow: prefect
  - id: half
    match: {workflow_id: "split_*"}
    backend: prefect
    percent: 50
"""


def rule_line(path: Path, rule_id: str) -> int:
    return line_of(path, f"- id: {rule_id}")


def test_explain_a_registered_workflow_uses_its_stored_facts(
    engine: Engine, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path, "rules.yaml", EXPLAIN)
    workflow_id = unique("explain_reg")
    definition = tmp_path / "defs" / f"{workflow_id}.yaml"
    definition.parent.mkdir()
    definition.write_text(
        f"workflow_id: {workflow_id}\nworkspace_id: ws1\nfolder_id: f1\n"
        "tags: [non-critical]\nnodes:\n  a: {type: noop}\n"
    )
    loaded = figway("workflows", "load", str(definition))
    assert loaded.exit_code == 0, loaded.output

    # The stored workspace (ws1) counts, not the one given for unregistered workflows.
    result = figway(
        "rules", "explain", "--workflow-id", workflow_id, "--job-id", "job-7",
        "--workspace-id", "ws9", "--rules", str(rules),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"workflow {workflow_id} (registered), job job-7",
        "  backend: prefect",
        f"  rule:    new-non-critical  (rules version {version_of(rules)})",
        "  why:     rule 'new-non-critical': prefect",
        "  fallback: rq while prefect is unreachable",
        f"  passed over: rule 'other-workspace' (line {rule_line(rules, 'other-workspace')}): "
        "workspace_id 'ws1' does not match 'ws9'",
        f"  passed over: rule 'critical-stays' (line {rule_line(rules, 'critical-stays')}): "
        "the workflow lacks tag(s) critical",
    ]


def test_explain_an_unregistered_workflow_with_the_ids_given(
    engine: Engine, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path, "rules.yaml", EXPLAIN)
    workflow_id = unique("explain_new")
    result = figway(
        "rules", "explain", "--workflow-id", workflow_id, "--job-id", "job-1",
        "--workspace-id", "ws1", "--tag", "non-critical", "--tag", "extra",
        "--rules", str(rules),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"workflow {workflow_id} (not registered; ids as given), job job-1",
        "  backend: rq",
        f"  rule:    tagged-shadow  (rules version {version_of(rules)})",
        "  why:     rule 'tagged-shadow': rq; shadowed on prefect",
        "  shadow:  also runs on prefect for comparison",
        f"  passed over: rule 'other-workspace' (line {rule_line(rules, 'other-workspace')}): "
        "workspace_id 'ws1' does not match 'ws9'",
        f"  passed over: rule 'critical-stays' (line {rule_line(rules, 'critical-stays')}): "
        "the workflow lacks tag(s) critical",
        f"  passed over: rule 'new-non-critical' (line {rule_line(rules, 'new-non-critical')}): "
        "the workflow is not registered, so it has no registration time",
    ]

    in_ws9 = figway(
        "rules", "explain", "--workflow-id", workflow_id, "--workspace-id", "ws9",
        "--rules", str(rules),
    )  # fmt: skip
    assert in_ws9.exit_code == 0, in_ws9.output
    assert "  rule:    other-workspace  " in in_ws9.stdout
    assert "  backend: prefect" in in_ws9.stdout
    assert "passed over" not in in_ws9.stdout


def test_explain_falls_to_the_default_when_no_rule_matches(engine: Engine, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "rules.yaml", EXPLAIN)
    result = figway("rules", "explain", "--workflow-id", unique("lonely"), "--rules", str(rules))
    assert result.exit_code == 0, result.output
    assert "  backend: rq" in result.stdout
    assert f"  rule:    (none)  (rules version {version_of(rules)})" in result.stdout
    assert "  why:     no rule matched: the default, rq" in result.stdout
    # Every rule was tried, in file order.
    passed = re.findall(r"passed over: rule '([\w-]+)'", result.stdout)
    assert passed == [
        "other-workspace",
        "critical-stays",
        "new-non-critical",
        "tagged-shadow",
        "half",
    ]
    assert "(line " in result.stdout
    assert ", job job\n" in result.stdout  # the default job id


def test_explain_a_percentage_split_by_job_id(engine: Engine, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "rules.yaml", EXPLAIN)
    jobs = [f"job-{i}" for i in range(200)]
    inside = next(job for job in jobs if bucket_of("half", job) < 5_000)
    outside = next(job for job in jobs if bucket_of("half", job) >= 5_000)
    workflow_id = unique("split")
    for job, side, backend in ((inside, "inside", "prefect"), (outside, "outside", "rq")):
        result = figway(
            "rules", "explain", "--workflow-id", workflow_id, "--job-id", job,
            "--rules", str(rules),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        bucket = bucket_of("half", job) / 100
        assert f"  backend: {backend}" in result.stdout
        assert (
            f"  why:     rule 'half': job_id bucket {bucket:.2f} is {side} the 50% rollout: "
            f"{backend}" in result.stdout
        )


def test_explain_a_workflow_pinned_by_its_definition(engine: Engine, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "rules.yaml", EXPLAIN)
    workflow_id = unique("pinned")
    register(engine, workflow_id, workspace_id="ws9", backend="rq")
    result = figway("rules", "explain", "--workflow-id", workflow_id, "--rules", str(rules))
    assert result.exit_code == 0, result.output
    assert "  backend: rq" in result.stdout
    assert "  rule:    (none)" in result.stdout
    assert "  why:     pinned by the workflow definition (backend: rq)" in result.stdout
    assert "passed over" not in result.stdout


def test_explain_json_matches_the_text(engine: Engine, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "rules.yaml", EXPLAIN)
    workflow_id = unique("explain_json")
    register(engine, workflow_id, tags=("non-critical",))
    args = ("rules", "explain", "--workflow-id", workflow_id, "--job-id", "j1")
    text = figway(*args, "--rules", str(rules))
    as_json = figway(*args, "--rules", str(rules), "--json")
    assert text.exit_code == 0, text.output
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document == {
        "backend": "prefect",
        "rule_id": "new-non-critical",
        "version": version_of(rules),
        "reason": "rule 'new-non-critical': prefect",
        "shadow": None,
        "fallback": "rq",
        "kind": "rule",
        "passed_over": [
            f"rule 'other-workspace' (line {rule_line(rules, 'other-workspace')}): "
            "workspace_id 'ws1' does not match 'ws9'",
            f"rule 'critical-stays' (line {rule_line(rules, 'critical-stays')}): "
            "the workflow lacks tag(s) critical",
        ],
        "evidence": None,  # the deciding rule has no guard and no steps
    }
    for line in document["passed_over"]:
        assert f"  passed over: {line}" in text.stdout
    assert f"  why:     {document['reason']}" in text.stdout


def test_explain_reads_the_configured_rules_file(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = write_rules(tmp_path, "configured.yaml", "phase: 2\ndefault: prefect\nrules: []\n")
    monkeypatch.setenv("FIGWAY_ROUTING_RULES", str(rules))
    result = figway("rules", "explain", "--workflow-id", unique("any"))
    assert result.exit_code == 0, result.output
    assert f"(rules version {version_of(rules)})" in result.stdout
    assert "  backend: prefect" in result.stdout


def test_explain_refuses_a_bad_rules_file(engine: Engine, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "bad.yaml", BAD)
    result = figway("rules", "explain", "--workflow-id", unique("any"), "--rules", str(rules))
    assert result.exit_code == 1
    assert "5 problem(s), nothing applied" in result.stderr
    assert f"line {line_of(rules, 'teleport')}: rules[0] (first).backend" in result.stderr
    assert "Traceback" not in result.output


# -- rules diff ------------------------------------------------------------------------

DIFF_OLD = """
phase: 2
default: rq
rules:
  - id: a
    match: {workflow_id: "diff_a*"}
    backend: prefect
  - id: b
    match: {workflow_id: "diff_b*"}
    backend: prefect
  - id: c
    match: {workflow_id: "diff_c*"}
    backend: prefect
"""

DIFF_NEW = """
phase: 2
default: prefect
rules:
  - id: c
    match: {workflow_id: "diff_c*"}
    backend: prefect
  - id: a
    match: {workflow_id: "diff_a*"}
    backend: rq
  - id: d
    match: {workflow_id: "diff_d*"}
    backend: rq
"""

CANARY = """
phase: 2
default: rq
rules:
  - id: canary
    match: {{workflow_id: "canary_*"}}
    backend: prefect
    percent: {percent}
"""

DIFF_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\d+\.\d)%  (.+)$")


def diff_rows(output: str) -> dict[str, tuple[int, str, str]]:
    """The table of ``rules diff``: workflow -> (jobs, share, moves)."""
    rows = {}
    for line in output.splitlines():
        match = DIFF_ROW.match(line)
        if match:
            workflow_id, jobs, share, moves = match.groups()
            rows[workflow_id] = (int(jobs), share, moves)
    return rows


def test_diff_names_added_removed_and_changed_rules_and_the_default(
    engine: Engine, tmp_path: Path
) -> None:
    old = write_rules(tmp_path, "old.yaml", DIFF_OLD)
    new = write_rules(tmp_path, "new.yaml", DIFF_NEW)
    result = figway("rules", "diff", str(old), str(new))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"rules {version_of(old)} -> {version_of(new)}",
        "  added: d",
        "  removed: b",
        "  changed: a (backend)",
        "  rules kept are in a different order (first match wins)",
        "  default: rq -> prefect",
        "no registered workflows to measure (load some with `figway workflows load`)",
    ]

    same = figway("rules", "diff", str(old), str(old))
    assert same.exit_code == 0, same.output
    assert same.stdout.splitlines()[0] == f"rules {version_of(old)} -> {version_of(old)}"
    for word in ("added", "removed", "changed", "different order", "default:"):
        assert word not in same.stdout


def test_diff_measures_each_registered_workflow(engine: Engine, tmp_path: Path) -> None:
    old = write_rules(tmp_path, "old.yaml", DIFF_OLD)
    new = write_rules(tmp_path, "new.yaml", DIFF_NEW)
    moved_to_rq = unique("diff_a")  # rule a: prefect -> rq
    dropped = unique("diff_b")  # rule b removed: prefect -> the new default, prefect
    untouched = unique("diff_c")  # rule c: prefect both times
    to_default = unique("other")  # no rule: the default, rq -> prefect
    for workflow_id in (moved_to_rq, dropped, untouched, to_default):
        register(engine, workflow_id)

    result = figway("rules", "diff", str(old), str(new))
    assert result.exit_code == 0, result.output
    rows = diff_rows(result.stdout)
    synthetic = "(made-up job ids)"
    assert rows == {
        moved_to_rq: (10_000, "100.0", f"prefect -> rq: 10000 {synthetic}"),
        dropped: (10_000, "0.0", f"none {synthetic}"),
        untouched: (10_000, "0.0", f"none {synthetic}"),
        to_default: (10_000, "100.0", f"rq -> prefect: 10000 {synthetic}"),
    }

    only = figway("rules", "diff", str(old), str(new), "--workflow", moved_to_rq)
    assert only.exit_code == 0, only.output
    assert set(diff_rows(only.stdout)) == {moved_to_rq}


def test_diff_measures_a_percent_change_on_the_recorded_job_ids(
    engine: Engine, tmp_path: Path
) -> None:
    old = write_rules(tmp_path, "old.yaml", CANARY.format(percent=10))
    new = write_rules(tmp_path, "new.yaml", CANARY.format(percent=50))
    with_runs = unique("canary_runs")
    fresh = unique("canary_fresh")
    definition = register(engine, with_runs)
    register(engine, fresh)
    job_ids = [f"{with_runs}-job-{i}" for i in range(120)]
    for job_id in job_ids:
        record_run(engine, definition, job_id)
    for job_id in job_ids[:10]:  # a second run of a job is the same job
        record_run(engine, definition, job_id)

    result = figway("rules", "diff", str(old), str(new))
    assert result.exit_code == 0, result.output
    rows = diff_rows(result.stdout)
    assert set(rows) == {with_runs, fresh}

    # The jobs that move are exactly those whose bucket lies between the two marks.
    moving = sum(1 for job_id in job_ids if 1_000 <= bucket_of("canary", job_id) < 5_000)
    jobs, share, moves = rows[with_runs]
    assert jobs == len(job_ids)
    assert share == f"{moving / len(job_ids):.1%}".rstrip("%")
    assert moves == f"rq -> prefect: {moving}"
    assert 0.25 <= moving / len(job_ids) <= 0.55  # about 40%

    jobs, share, moves = rows[fresh]
    assert jobs == 10_000
    assert 38.0 <= float(share) <= 42.0
    assert moves.startswith("rq -> prefect: ")
    assert moves.endswith(" (made-up job ids)")
    assert "prefect -> rq" not in result.stdout  # raising a percentage never moves a job back


def test_diff_refuses_a_bad_file(engine: Engine, tmp_path: Path) -> None:
    good = write_rules(tmp_path, "good.yaml", GOOD)
    bad = write_rules(tmp_path, "bad.yaml", BAD)
    result = figway("rules", "diff", str(good), str(bad))
    assert result.exit_code == 1
    assert f"{bad}: 5 problem(s), nothing applied" in result.stderr
    assert "Traceback" not in result.output


# -- rules history ---------------------------------------------------------------------

HISTORY_LINE = re.compile(
    r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC  version (\w+)  phase (\d)  from (.+)$"
)


def history(*args: str) -> list[tuple[datetime, str, int, str]]:
    result = figway("rules", "history", *args)
    assert result.exit_code == 0, result.output
    entries: list[tuple[datetime, str, int, str]] = []
    if result.stdout.startswith("no rules version has been applied yet"):
        return entries
    for line in result.stdout.splitlines():
        match = HISTORY_LINE.match(line)
        assert match, line
        at, version, phase, source = match.groups()
        stamp = datetime.strptime(at, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        entries.append((stamp, version, int(phase), source))
    return entries


def test_history_lists_applied_versions_newest_first(engine: Engine) -> None:
    records = RoutingRecords(engine)
    assert history() == []
    first, second = (hashlib.sha256(uuid.uuid4().bytes).hexdigest()[:12] for _ in range(2))
    assert records.record_applied(
        version=first, content="phase: 1\ndefault: rq\n", phase=1, source="/etc/figway/a.yaml"
    )
    assert records.record_applied(
        version=second, content="phase: 2\ndefault: prefect\n", phase=2, source="replica-2"
    )

    entries = history()
    assert [(v, p, s) for _, v, p, s in entries] == [
        (second, 2, "replica-2"),
        (first, 1, "/etc/figway/a.yaml"),
    ]
    now = datetime.now(UTC)
    for stamp, *_ in entries:
        assert now - timedelta(minutes=5) <= stamp <= now + timedelta(seconds=1)

    assert [v for _, v, _, _ in history("--limit", "1")] == [second]

    # Applying the version in force again is not a new entry; going back to the first is.
    assert not records.record_applied(
        version=second, content="phase: 2\ndefault: prefect\n", phase=2, source="replica-3"
    )
    assert records.record_applied(
        version=first, content="phase: 1\ndefault: rq\n", phase=1, source="rollback"
    )
    assert [(v, s) for _, v, _, s in history()] == [
        (first, "rollback"),
        (second, "replica-2"),
        (first, "/etc/figway/a.yaml"),
    ]


def test_show_prints_an_applied_version_exactly(engine: Engine) -> None:
    content = "# kept as written\nphase: 1\ndefault: rq\n"
    version = hashlib.sha256(uuid.uuid4().bytes).hexdigest()[:12]
    RoutingRecords(engine).record_applied(version=version, content=content, phase=1, source="x")
    shown = figway("rules", "show", version)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == content
    missing = figway("rules", "show", "000000000000")
    assert missing.exit_code == 1
    assert "was ever applied" in missing.stderr


def test_diff_names_a_phase_change(engine: Engine, tmp_path: Path) -> None:
    old = write_rules(tmp_path, "old.yaml", "phase: 1\ndefault: rq\n")
    new = write_rules(tmp_path, "new.yaml", "phase: 2\ndefault: rq\n")
    result = figway("rules", "diff", str(old), str(new))
    assert result.exit_code == 0, result.output
    assert "  phase: 1 -> 2" in result.stdout.splitlines()


def test_history_limit_must_be_positive(engine: Engine) -> None:
    result = figway("rules", "history", "--limit", "0")
    assert result.exit_code == 2
    assert "--limit" in result.stderr


# -- rules guards and guard-reset ------------------------------------------------------

GUARDED = """
phase: 2
default: rq
rules:
  - id: {rule_id}
    match: {{workflow_id: "guarded_*"}}
    backend: prefect
    guard: {{max_failure_rate_increase: 0.05, rollback_to: rq}}
"""

GUARD_LINE = re.compile(
    r"^rule (\S+): tripped (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC \((.+?)\): (.+)$"
)


def guards() -> list[tuple[str, str, str]]:
    """``rules guards`` as (rule, state, reason), newest first."""
    result = figway("rules", "guards")
    assert result.exit_code == 0, result.output
    entries = []
    for line in result.stdout.splitlines():
        match = GUARD_LINE.match(line)
        assert match, line
        rule_id, _, state, reason = match.groups()
        entries.append((rule_id, state, reason))
    return entries


def test_guards_before_any_trip(engine: Engine) -> None:
    result = figway("rules", "guards")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no guard has tripped"


def test_guard_trip_shows_in_force_and_reset_puts_the_rule_back(
    engine: Engine, tmp_path: Path
) -> None:
    rule_id = unique("canary-guard")
    other = unique("other-guard")
    rules = write_rules(tmp_path, "rules.yaml", GUARDED.format(rule_id=rule_id))
    records = RoutingRecords(engine)
    reason = "failure rate 12.0% vs 2.0% on rq"
    assert records.trip_guard(
        rule_id=rule_id, rules_version=version_of(rules), reason=reason, figures={"runs": 40}
    )
    assert records.trip_guard(
        rule_id=other, rules_version=version_of(rules), reason="p95 3.1x", figures={}
    )
    assert guards() == [(other, "IN FORCE", "p95 3.1x"), (rule_id, "IN FORCE", reason)]

    # While tripped, explain routes the rule's runs back to rq and says why.
    explain = ("rules", "explain", "--workflow-id", "guarded_x", "--rules", str(rules))
    tripped = figway(*explain)
    assert tripped.exit_code == 0, tripped.output
    assert "  backend: rq" in tripped.stdout
    assert re.search(
        rf"its guard tripped \(at [0-9: -]+ UTC: {re.escape(reason)}\); rolled back to rq",
        tripped.stdout,
    ), tripped.stdout
    # The guard's evidence follows the decision: what it judges now, what it still needs.
    assert "  guard (TRIPPED (rolled back); window 24 h): Too early to say" in tripped.stdout

    reset = figway("rules", "guard-reset", rule_id, "--by", "alice")
    assert reset.exit_code == 0, reset.output
    assert (
        reset.stdout.strip() == f"guard of rule {rule_id} reset; the rule routes as written again"
    )
    assert set(records.tripped_guards()) == {other}

    listed = guards()
    assert listed[0] == (other, "IN FORCE", "p95 3.1x")
    assert listed[1][0] == rule_id
    assert re.fullmatch(r"reset \d{4}-\d{2}-\d{2} \d{2}:\d{2} by alice", listed[1][1]), listed[1]

    back = figway(*explain)
    assert "  backend: prefect" in back.stdout
    assert f"  why:     rule '{rule_id}': prefect" in back.stdout

    again = figway("rules", "guard-reset", rule_id)
    assert again.exit_code == 1
    assert f"Error: the guard of rule {rule_id!r} is not tripped" in again.stderr
    assert "Traceback" not in again.output
    assert set(records.tripped_guards()) == {other}  # the other guard stays in force


def test_guard_reset_of_a_rule_never_tripped_fails(engine: Engine) -> None:
    rule_id = unique("never")
    result = figway("rules", "guard-reset", rule_id)
    assert result.exit_code == 1
    assert f"the guard of rule {rule_id!r} is not tripped" in result.stderr


def test_guard_reset_records_the_default_resetter(engine: Engine) -> None:
    rule_id = unique("by-default")
    RoutingRecords(engine).trip_guard(
        rule_id=rule_id, rules_version="0" * 12, reason="slow", figures={}
    )
    assert figway("rules", "guard-reset", rule_id).exit_code == 0
    [(listed_rule, state, _)] = guards()
    assert listed_rule == rule_id
    assert state.endswith(" by cli")


# -- rules readiness -------------------------------------------------------------------

PHASE_3 = """
phase: 3
default: prefect
backends:
  rq: {enabled: false}
rules:
  - id: everything-on-prefect
    match: {workspace_id: "*"}
    backend: prefect
"""

STILL_RQ = """
phase: 2
default: rq
rules:
  - id: pilot
    match: {workflow_id: sales_daily}
    backend: prefect
    fallback: rq
"""


@pytest.fixture
def readiness_env(
    cli_env: Path, engine: Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Engine:
    monkeypatch.setenv("FIGWAY_REDIS_URL", redis_url)
    return engine


def use_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    path = write_rules(tmp_path, "routing_rules.yaml", text)
    monkeypatch.setenv("FIGWAY_ROUTING_RULES", str(path))
    return path


def holds_of(result: Result) -> list[str]:
    lines = result.stdout.splitlines()
    assert lines[0] == "not ready; RQ is still held by:", result.output
    assert all(line.startswith("  - ") for line in lines[1:]), lines
    return [line[4:] for line in lines[1:]]


readiness = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.mark.service
@readiness
def test_readiness_is_held_by_rules_that_name_rq(
    readiness_env: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = use_rules(monkeypatch, tmp_path, STILL_RQ)
    result = figway("rules", "readiness")
    assert result.exit_code == 1, result.output
    assert holds_of(result) == [
        f"routing rules version {version_of(rules)} still name rq at: "
        "default, rule 'pilot' fallback"
    ]


@pytest.mark.service
@readiness
def test_readiness_is_held_by_a_definition_pinned_to_rq(
    readiness_env: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_rules(monkeypatch, tmp_path, PHASE_3)
    pinned = unique("pinned")
    register(readiness_env, pinned, backend="rq")
    register(readiness_env, unique("free"))
    register(readiness_env, unique("on_prefect"), backend="prefect")
    result = figway("rules", "readiness")
    assert result.exit_code == 1, result.output
    assert holds_of(result) == [f"workflow definitions pinned to rq (backend: rq): {pinned}"]


@pytest.mark.service
@readiness
def test_readiness_is_held_by_a_job_in_an_rq_queue(
    readiness_env: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    use_rules(monkeypatch, tmp_path, PHASE_3)
    with Redis.from_url(redis_url) as redis:
        Queue("default", connection=redis).enqueue("builtins.print", "left behind")
    result = figway("rules", "readiness")
    assert result.exit_code == 1, result.output
    assert holds_of(result) == ["RQ still holds jobs: default.queued 1"]

    as_json = figway("rules", "readiness", "--json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["ready"] is False
    assert document["holds"] == ["RQ still holds jobs: default.queued 1"]
    assert document["figures"]["rq_jobs"]["default.queued"] == 1
    assert document["figures"]["phase"] == 3


@pytest.mark.service
@readiness
def test_readiness_is_held_by_an_unfinished_rq_run(
    readiness_env: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_rules(monkeypatch, tmp_path, PHASE_3)
    definition = register(readiness_env, unique("busy"))
    on_rq = record_run(readiness_env, definition, "job-1", backend="rq")
    record_run(readiness_env, definition, "job-2", backend="prefect")
    result = figway("rules", "readiness")
    assert result.exit_code == 1, result.output
    assert holds_of(result) == [
        f"1 run(s) on rq have not finished, e.g. {on_rq}; wait for them or kill them"
    ]


@pytest.mark.service
@readiness
def test_readiness_lists_every_hold_at_once(
    readiness_env: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    use_rules(monkeypatch, tmp_path, STILL_RQ)
    definition = register(readiness_env, unique("pinned"), backend="rq")
    record_run(readiness_env, definition, "job-1")
    with Redis.from_url(redis_url) as redis:
        Queue("priority", connection=redis).enqueue("builtins.print", "a")
        Queue("priority", connection=redis).enqueue("builtins.print", "b")
    result = figway("rules", "readiness")
    assert result.exit_code == 1, result.output
    holds = holds_of(result)
    assert len(holds) == 4, holds
    assert holds[0].startswith("routing rules version ")
    assert holds[1].startswith("workflow definitions pinned to rq")
    assert holds[2].startswith("1 run(s) on rq have not finished")
    assert holds[3] == "RQ still holds jobs: priority.queued 2"


@pytest.mark.service
@readiness
def test_readiness_is_ready_in_phase_3_with_rq_drained(
    readiness_env: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = use_rules(monkeypatch, tmp_path, PHASE_3)
    definition = register(readiness_env, unique("migrated"), backend="prefect")
    record_run(readiness_env, definition, "job-1", backend="prefect")
    result = figway("rules", "readiness")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "ready: nothing routes to RQ and RQ holds nothing; it can be switched off"
    )

    as_json = figway("rules", "readiness", "--json")
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["ready"] is True
    assert document["holds"] == []
    figures = document["figures"]
    assert figures["rules_version"] == version_of(rules)
    assert figures["routes_to_rq"] == []
    assert figures["pinned_to_rq"] == []
    assert figures["active_rq_runs"] == 0
    assert set(figures["rq_jobs"].values()) == {0}
    assert "default.queued" in figures["rq_jobs"]


def test_readiness_is_held_when_redis_cannot_be_reached(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_rules(monkeypatch, tmp_path, PHASE_3)
    monkeypatch.setenv("FIGWAY_REDIS_URL", "redis://127.0.0.1:1/0")
    result = figway("rules", "readiness")
    assert result.exit_code == 1, result.output
    [hold] = holds_of(result)
    assert hold.startswith("cannot count RQ's jobs: ")
    assert "Redis" in hold


def test_readiness_in_the_embedded_default_points_at_the_gateway(
    cli_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_rules(monkeypatch, tmp_path, PHASE_3)
    result = figway("rules", "readiness")
    assert result.exit_code == 1
    assert "embedded default" in result.stderr
    assert "GET /routing/readiness" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_an_unreachable_database_is_a_message_not_a_traceback(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGWAY_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    result = CliRunner().invoke(main, ["rules", "history"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Error: " in result.stderr


# -- rollouts in steps: check, pause / resume / pin, history, diff, explain -------------------

STEPPED = """
phase: 2
default: rq
rules:
  - id: {rule_id}
    match: {{workflow_id: "stepped_*"}}
    backend: prefect
    otherwise: rq
    steps: {steps}
    promote: {{min_runs: 30, watch: [execution_time], max_ratio: 1.5}}
    guard: {{min_runs: {guard_runs}, max_failure_rate_increase: 0.05}}
"""


def stepped(
    tmp_path: Path,
    rule_id: str,
    *,
    steps: str = "[5, 25, 50, 100]",
    name: str = "r.yaml",
    guard_runs: int = 100,
) -> Path:
    return write_rules(
        tmp_path, name, STEPPED.format(rule_id=rule_id, steps=steps, guard_runs=guard_runs)
    )


def test_check_warns_when_min_runs_is_below_what_the_margins_can_decide(
    cli_env: Path, tmp_path: Path
) -> None:
    path = stepped(tmp_path, "canary", guard_runs=20)
    result = figway("rules", "check", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        f"warning: line {line_of(path, '- id: canary')}: rule 'canary': guard.min_runs is 20, "
        "but its margins cannot decide on failure rate before 80 runs a side (on perfect "
        "data): it will wait that long; widen the margin or raise min_runs to say so"
    )
    quiet = figway("rules", "check", str(stepped(tmp_path, "canary", name="ok.yaml")))
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""


def test_pause_resume_pin_and_history_from_the_command_line(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_id = unique("canary")
    monkeypatch.setenv("FIGWAY_ROUTING_RULES", str(stepped(tmp_path, rule_id)))

    paused = figway("rules", "pause", rule_id, "--by", "alice")
    assert paused.exit_code == 0, paused.output
    assert (
        paused.stdout.strip() == f"rollout of rule {rule_id}: 5% (step 1 of 4, paused) (by alice)"
    )
    twice = figway("rules", "pause", rule_id)
    assert twice.exit_code == 1
    assert "already paused" in twice.stderr
    pinned = figway("rules", "pin", rule_id, "--percent", "25", "--by", "bob")
    assert pinned.exit_code == 0, pinned.output
    assert "25% (step 2 of 4, pinned)" in pinned.stdout
    not_a_step = figway("rules", "pin", rule_id, "--percent", "30")
    assert not_a_step.exit_code == 1
    assert "30% is not a step" in not_a_step.stderr
    assert figway("rules", "resume", rule_id, "--by", "carol").exit_code == 0
    unknown = figway("rules", "pause", "nope")
    assert unknown.exit_code == 1
    assert "rule 'nope' has no steps" in unknown.stderr

    history = figway("rules", "history", "--rule", rule_id)
    assert history.exit_code == 0, history.output
    moves = [
        line.split("  ")[2:5] for line in history.stdout.splitlines() if f"rule {rule_id}" in line
    ]
    assert moves == [
        ["resumed", "25% -> 25%", "by carol"],
        ["pinned", "5% -> 25%", "by bob"],
        ["paused", "5% -> 5%", "by alice"],
        ["started", "- -> 5%", "by gateway"],
    ]


def test_diff_says_how_changed_steps_reconcile_the_rollout_in_force(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_id = unique("canary")
    old = stepped(tmp_path, rule_id, name="old.yaml")
    monkeypatch.setenv("FIGWAY_ROUTING_RULES", str(old))
    assert figway("rules", "pin", rule_id, "--percent", "25").exit_code == 0
    around = stepped(tmp_path, rule_id, steps="[10, 50, 100]", name="around.yaml")
    below = stepped(tmp_path, rule_id, steps="[5, 10]", name="below.yaml")

    result = figway("rules", "diff", str(old), str(around))
    assert result.exit_code == 0, result.output
    assert (
        f"  rollout {rule_id}: steps [5, 25, 50, 100] -> [10, 50, 100], now at 25% (step 2 of "
        "4, pinned): the rollout stays at 25% (between steps; next 50%, pinned)"
    ) in result.stdout.splitlines()

    lower = figway("rules", "diff", str(old), str(below))
    assert lower.exit_code == 0, lower.output
    assert (
        "the new last step, 10%, is below the 25% in force: the rollout goes down to 10% "
        "and its evidence starts again"
    ) in lower.stdout


def test_explain_without_a_workflow_gives_every_guarded_or_stepped_rules_evidence(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_id = unique("canary")
    monkeypatch.setenv("FIGWAY_ROUTING_RULES", str(stepped(tmp_path, rule_id)))
    result = figway("rules", "explain")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"rule {rule_id}:"
    assert lines[1].startswith("  guard (armed; window 24 h): Too early to say whether prefect")
    assert lines[2].startswith("    needs: about ")
    assert lines[3] == "  rollout: 5% (step 1 of 4)"
    as_json = json.loads(figway("rules", "explain", "--json").stdout)
    (evidence,) = as_json
    assert evidence["rollout"]["position"]["percent"] == 5
    assert evidence["guard"]["answer"] == "inconclusive"
    assert evidence["guard"]["plan"]["more_runs"] >= 100
