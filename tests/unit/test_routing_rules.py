"""Rules files: what parse_rules accepts, what it refuses, and the line it blames.

Each refused file in the tables below carries exactly one mistake, on the line
marked ``# <--``; the test proves that parse_rules reports that one problem,
on that line, under a field and with a message that name it.
"""

from __future__ import annotations

import hashlib
import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from backends.model.backend_names import BACKEND_NAMES
from backends.model.errors import RulesInvalidError, RulesProblem
from gateway.routing.loading import RulesDocument, parse_rules, rules_version
from gateway.routing.rules import Guard

MARK = "# <--"


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def marked(text: str) -> tuple[str, int]:
    """The file and the 1-based line carrying the ``# <--`` mark."""
    content = yaml_text(text)
    lines = [number for number, line in enumerate(content.splitlines(), 1) if MARK in line]
    assert len(lines) == 1, f"a case marks exactly one line, not {lines}"
    return content, lines[0]


def parse(content: str) -> RulesDocument:
    return parse_rules(content, source="routing_rules.yaml")


def problems_of(content: str) -> tuple[RulesProblem, ...]:
    with pytest.raises(RulesInvalidError) as caught:
        parse(content)
    assert caught.value.problems, "a RulesInvalidError must carry at least one problem"
    return caught.value.problems


def only_problem(content: str) -> RulesProblem:
    problems = problems_of(content)
    assert len(problems) == 1, problems
    return problems[0]


# -- one mistake per file ----------------------------------------------------------------

SCHEMA_CASES = [
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect: rq  # <--
        """,
        "file",
        "not valid YAML",
        id="yaml-syntax",
    ),
    pytest.param(
        """
        - phase: 2  # <--
        """,
        "file",
        "expected a mapping",
        id="yaml-not-a-mapping",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        fallback: prefect  # <--
        """,
        "fallback",
        "unknown key 'fallback'; allowed here: phase, default, backends, rules",
        id="extra-top-level-key",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backnd: prefect  # <--
            backend: prefect
        """,
        "rules[0] (a).backnd",
        "unknown key 'backnd'; allowed here: id, description, match, backend,",
        id="extra-rule-key",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            match:
              workflow: etl  # <--
            backend: prefect
        """,
        "rules[0] (a).match.workflow",
        "unknown key 'workflow'; allowed here: workflow_id, workspace_id,",
        id="extra-match-key",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              max_p95_ratio: 2
              rollback: rq  # <--
        """,
        "rules[0] (a).guard.rollback",
        "allowed here: watch, max_failure_rate_increase, max_ratio, confidence, min_runs, "
        "window_hours, max_p95_ratio, rollback_to",
        id="extra-guard-key",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        backends:
          rq:
            enabeld: false  # <--
        """,
        "backends.rq.enabeld",
        "unknown key 'enabeld'; allowed here: enabled",
        id="extra-backend-switch-key",
    ),
    pytest.param(
        """
        phase: 4  # <--
        default: rq
        """,
        "phase",
        "1, 2 or 3",
        id="phase-out-of-range",
    ),
    pytest.param(
        """
        phase: 2  # <--
        rules: []
        """,
        "default",
        "Field required",
        id="default-missing",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            percent: 100.5  # <--
        """,
        "rules[0] (a).percent",
        "less than or equal to 100",
        id="percent-above-100",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            percent: -1  # <--
        """,
        "rules[0] (a).percent",
        "greater than or equal to 0",
        id="percent-below-0",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: "-leading-dash"  # <--
            backend: prefect
        """,
        "rules[0] (-leading-dash).id",
        "should match pattern",
        id="rule-id-pattern",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a  # <--
            match: {workflow_id: etl}
        """,
        "rules[0] (a).backend",
        "Field required",
        id="rule-backend-missing",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            percent: 10
            sticky_by: run_id  # <--
        """,
        "rules[0] (a).sticky_by",
        "'job_id'",
        id="sticky-by-unknown-key",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              max_p95_ratio: 0.5  # <--
        """,
        "rules[0] (a).guard.max_p95_ratio",
        "greater than or equal to 1.01",
        id="guard-p95-ratio-below-1",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              max_ratio: 1  # <--
        """,
        "rules[0] (a).guard.max_ratio",
        "greater than or equal to 1.01",
        id="guard-ratio-not-above-1",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              max_failure_rate_increase: 0  # <--
        """,
        "rules[0] (a).guard.max_failure_rate_increase",
        "greater than or equal to 0.005",
        id="guard-failure-margin-zero",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              confidence: 1  # <--
        """,
        "rules[0] (a).guard.confidence",
        "less than or equal to 0.999",
        id="guard-confidence-one",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              watch: [failure_rate, p95]  # <--
        """,
        "rules[0] (a).guard.watch[1]",
        "'failure_rate', 'queue_wait', 'execution_time' or 'total_time'",
        id="guard-watches-an-unknown-figure",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            steps: [5, 25]
            promote:
              max_ratio: 0.9  # <--
        """,
        "rules[0] (a).promote.max_ratio",
        "greater than or equal to 1.01",
        id="promote-ratio-below-1",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            steps: [5, 25, 25, 100]  # <--
            promote: {min_runs: 50}
        """,
        "rules[0] (a).steps",
        "steps must increase",
        id="steps-not-increasing",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            steps: [5, 250]  # <--
            promote: {min_runs: 50}
        """,
        "rules[0] (a).steps[1]",
        "less than or equal to 100",
        id="steps-above-100",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              min_runs: 0  # <--
              max_failure_rate_increase: 0.05
        """,
        "rules[0] (a).guard.min_runs",
        "greater than or equal to 1",
        id="guard-min-runs-zero",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules: {id: a}  # <--
        """,
        "rules",
        "expected a list",
        id="rules-not-a-list",
    ),
]

DUPLICATE_KEY_CASES = [
    pytest.param(
        """
        phase: 2
        default: rq
        phase: 2  # <--
        """,
        "phase",
        id="top-level",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            backend: prefect  # <--
        """,
        "rules[0].backend",
        id="in-a-rule",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            match:
              workflow_id: etl
              workflow_id: etl  # <--
            backend: prefect
        """,
        "rules[0].match.workflow_id",
        id="in-a-match",
    ),
]

UNKNOWN_BACKEND_CASES = [
    pytest.param(
        """
        phase: 2
        default: airflow  # <--
        """,
        "default",
        id="default",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: airflow  # <--
        """,
        "rules[0] (a).backend",
        id="backend",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            percent: 10
            otherwise: airflow  # <--
        """,
        "rules[0] (a).otherwise",
        id="otherwise",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            shadow: airflow  # <--
        """,
        "rules[0] (a).shadow",
        id="shadow",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            fallback: airflow  # <--
        """,
        "rules[0] (a).fallback",
        id="fallback",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            guard:
              max_p95_ratio: 2
              rollback_to: airflow  # <--
        """,
        "rules[0] (a).guard.rollback_to",
        id="guard-rollback-to",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        backends:
          airflow: {enabled: false}  # <--
        """,
        "backends.airflow",
        id="backends-section",
    ),
]

DISABLED_BACKEND_CASES = [
    pytest.param(
        """
        phase: 2
        default: prefect  # <--
        backends:
          prefect: {enabled: false}
        """,
        "default",
        id="default",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        backends:
          prefect: {enabled: false}
        rules:
          - id: a
            backend: prefect  # <--
        """,
        "rules[0] (a).backend",
        id="backend",
    ),
    pytest.param(
        """
        phase: 2
        default: prefect
        backends:
          rq: {enabled: false}
        rules:
          - id: a
            backend: prefect
            shadow: rq  # <--
        """,
        "rules[0] (a).shadow",
        id="shadow",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        backends:
          prefect:
            enabled: false
        rules:
          - id: a
            backend: rq
            fallback: prefect  # <--
        """,
        "rules[0] (a).fallback",
        id="fallback",
    ),
]

PHASE_3_RQ_CASES = [
    pytest.param(
        """
        phase: 3
        default: rq  # <--
        """,
        "default",
        id="default",
    ),
    pytest.param(
        """
        phase: 3
        default: prefect
        rules:
          - id: a
            match: {workflow_id: legacy}
            backend: rq  # <--
        """,
        "rules[0] (a).backend",
        id="backend",
    ),
    pytest.param(
        """
        phase: 3
        default: prefect
        rules:
          - id: a
            backend: prefect
            percent: 50
            otherwise: rq  # <--
        """,
        "rules[0] (a).otherwise",
        id="otherwise",
    ),
    pytest.param(
        """
        phase: 3
        default: prefect
        rules:
          - id: a
            backend: prefect
            shadow: rq  # <--
        """,
        "rules[0] (a).shadow",
        id="shadow",
    ),
    pytest.param(
        """
        phase: 3
        default: prefect
        rules:
          - id: a
            backend: prefect
            fallback: rq  # <--
        """,
        "rules[0] (a).fallback",
        id="fallback",
    ),
    pytest.param(
        """
        phase: 3
        default: prefect
        rules:
          - id: a
            backend: prefect
            guard:
              max_failure_rate_increase: 0.05
              rollback_to: rq  # <--
        """,
        "rules[0] (a).guard.rollback_to",
        id="guard-rollback-to",
    ),
    # rollback_to defaults to rq, so a guard that does not say where to go names rq too.
    pytest.param(
        """
        phase: 3
        default: prefect
        rules:
          - id: a
            backend: prefect
            guard:  # <--
              max_failure_rate_increase: 0.05
        """,
        "rules[0] (a).guard.rollback_to",
        id="guard-rollback-to-by-default",
    ),
]

RULE_CASES = [
    pytest.param(
        """
        phase: 1
        default: prefect  # <--
        """,
        "default",
        "phase 1",
        id="phase-1-default-not-rq",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: canary
            match: {workflow_id: a}
            backend: prefect
          - id: canary  # <--
            match: {workflow_id: b}
            backend: prefect
        """,
        "rules[1] (canary).id",
        "used by an earlier rule",
        id="duplicate-rule-id",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            otherwise: rq  # <--
        """,
        "rules[0] (a).otherwise",
        "only applies with `percent`",
        id="otherwise-without-percent",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            sticky_by: workflow_id  # <--
        """,
        "rules[0] (a).sticky_by",
        "only applies with `percent`",
        id="sticky-by-without-percent",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            salt: s1  # <--
        """,
        "rules[0] (a).salt",
        "only applies with `percent`",
        id="salt-without-percent",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            percent: 10  # <--
            otherwise: prefect
        """,
        "rules[0] (a).percent",
        "both sides of the split",
        id="percent-otherwise-is-backend",
    ),
    pytest.param(
        """
        phase: 2
        default: prefect
        rules:
          - id: a
            match: {workflow_id: etl}
            backend: prefect
            percent: 10  # <--
        """,
        "rules[0] (a).percent",
        "both sides of the split",
        id="percent-default-is-backend",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            shadow: prefect  # <--
        """,
        "rules[0] (a).shadow",
        "must differ from `backend`",
        id="shadow-is-backend",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            fallback: prefect  # <--
        """,
        "rules[0] (a).fallback",
        "must differ from `backend`",
        id="fallback-is-backend",
    ),
    pytest.param(
        """
        phase: 2
        default: prefect
        rules:
          - id: a
            match: {workflow_id: etl}
            backend: rq
            guard:
              max_p95_ratio: 2
              rollback_to: rq  # <--
        """,
        "rules[0] (a).guard.rollback_to",
        "already this rule's backend",
        id="guard-rolls-back-to-own-backend",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            steps: [5, 25, 100]  # <--
        """,
        "rules[0] (a).steps",
        "steps with no guard and no promote",
        id="steps-without-guard-or-promote",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            percent: 10  # <--
            steps: [5, 25, 100]
            promote: {min_runs: 30}
        """,
        "rules[0] (a).percent",
        "`percent` and `steps` both set the share",
        id="steps-and-percent",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: a
            backend: prefect
            promote: {min_runs: 30}  # <--
        """,
        "rules[0] (a).promote",
        "`promote` only applies with `steps`",
        id="promote-without-steps",
    ),
    pytest.param(
        """
        phase: 2
        default: prefect
        rules:
          - id: a
            backend: prefect
            steps: [5, 100]  # <--
            promote: {min_runs: 30}
        """,
        "rules[0] (a).steps",
        "both sides of the split are 'prefect'",
        id="steps-with-both-sides-the-same",
    ),
    # rollback_to defaults to rq: a guard on an rq rule would roll back to itself.
    pytest.param(
        """
        phase: 2
        default: prefect
        rules:
          - id: a
            match: {workflow_id: etl}
            backend: rq
            guard:  # <--
              max_p95_ratio: 2
        """,
        "rules[0] (a).guard.rollback_to",
        "already this rule's backend",
        id="guard-rolls-back-to-own-backend-by-default",
    ),
]

UNREACHABLE_CASES = [
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            backend: prefect
            percent: 5
          - id: later
            match: {workflow_id: etl}  # <--
            backend: prefect
        """,
        id="catch-all-first",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {workflow_id: "etl-*"}
            backend: prefect
          - id: later
            match: {workflow_id: etl-daily, job_id: "nightly-*"}  # <--
            backend: prefect
        """,
        id="glob-covers-literal",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {workspace_id: [ws1, ws2, "team-*"]}
            backend: prefect
          - id: later
            match: {workspace_id: [ws2, team-a]}  # <--
            backend: prefect
        """,
        id="list-covers-list",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {folder_id: "f-*"}
            backend: prefect
          - id: later
            match: {folder_id: "f-*", workspace_id: ws1}  # <--
            backend: prefect
        """,
        id="same-glob-plus-more",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {job_id: "*"}
            backend: prefect
          - id: later
            match: {job_id: "nightly-[0-9]*"}  # <--
            backend: prefect
        """,
        id="star-covers-a-glob",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {tags: [etl]}
            backend: prefect
          - id: later
            match: {tags: [etl, nightly]}  # <--
            backend: prefect
        """,
        id="fewer-tags-cover-more",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {registered_after: 2026-06-01}
            backend: prefect
          - id: later
            match: {registered_after: 2026-07-01, tags: [etl]}  # <--
            backend: prefect
        """,
        id="earlier-registration-covers-later",
    ),
    pytest.param(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {registered_after: 2026-06-01}
            backend: prefect
          - id: later
            match: {registered_after: 2026-06-01}  # <--
            backend: prefect
        """,
        id="same-registration",
    ),
]

REACHABLE_CASES = [
    pytest.param(
        {"workflow_id": "etl-*"},
        {"workflow_id": "etl-a*"},
        id="glob-after-a-wider-glob-is-not-provably-covered",
    ),
    pytest.param({"workflow_id": "etl"}, {}, id="narrow-before-catch-all"),
    pytest.param(
        {"workflow_id": ["a", "b"]}, {"workflow_id": ["b", "c"]}, id="lists-that-only-overlap"
    ),
    pytest.param(
        {"workflow_id": "etl-*"}, {"workflow_id": "ETL-daily"}, id="globs-are-case-sensitive"
    ),
    pytest.param({"tags": ["etl", "nightly"]}, {"tags": ["etl"]}, id="more-tags-before-fewer"),
    pytest.param(
        {"registered_after": "2026-07-01"},
        {"registered_after": "2026-06-01"},
        id="later-registration-before-earlier",
    ),
    pytest.param(
        {"registered_after": "2026-07-01"}, {"tags": ["x"]}, id="registration-before-none"
    ),
    pytest.param({"job_id": "j-*"}, {"workspace_id": "ws1"}, id="different-fields"),
]


def check_one_problem(text: str, field: str, fragment: str) -> None:
    content, line = marked(text)
    problem = only_problem(content)
    assert (problem.line, problem.field) == (line, field), problem
    assert fragment in problem.message, problem


@pytest.mark.parametrize(("text", "field", "fragment"), SCHEMA_CASES)
def test_a_schema_mistake_is_reported_on_its_line(text: str, field: str, fragment: str) -> None:
    check_one_problem(text, field, fragment)


BAD_PATTERN = yaml_text(
    """
    phase: 2
    default: rq
    rules:
      - id: a
        match:
          job_id: ["job-*", ""]
        backend: prefect
    """
)


def test_an_empty_pattern_is_reported_on_its_line() -> None:
    problems = problems_of(BAD_PATTERN)
    assert {problem.line for problem in problems} == {6}
    assert all(problem.field.startswith("rules[0] (a).match.job_id") for problem in problems)
    assert any("at least 1 character" in problem.message for problem in problems)


def test_a_pattern_field_is_named_without_pydantic_union_tags() -> None:
    problems = problems_of(BAD_PATTERN)
    # The list index is kept; pydantic's name for the union branch is not.
    assert {problem.field for problem in problems} == {"rules[0] (a).match.job_id[1]"}


@pytest.mark.parametrize(("text", "field"), DUPLICATE_KEY_CASES)
def test_a_key_given_twice_is_reported_on_its_second_line(text: str, field: str) -> None:
    """PyYAML would keep the last value silently; parse_rules refuses the file."""
    check_one_problem(text, field, "given twice")


@pytest.mark.parametrize(("text", "field"), UNKNOWN_BACKEND_CASES)
def test_an_unknown_backend_is_reported_wherever_it_is_named(text: str, field: str) -> None:
    check_one_problem(text, field, "unknown backend 'airflow'")


@pytest.mark.parametrize(("text", "field"), DISABLED_BACKEND_CASES)
def test_a_disabled_backend_may_not_be_routed_to(text: str, field: str) -> None:
    check_one_problem(text, field, "is disabled under `backends`")


@pytest.mark.parametrize(("text", "field"), PHASE_3_RQ_CASES)
def test_phase_3_refuses_every_reference_to_rq(text: str, field: str) -> None:
    check_one_problem(text, field, "phase 3")


@pytest.mark.parametrize(("text", "field", "fragment"), RULE_CASES)
def test_a_rule_mistake_is_reported_on_its_line(text: str, field: str, fragment: str) -> None:
    check_one_problem(text, field, fragment)


@pytest.mark.parametrize("text", UNREACHABLE_CASES)
def test_a_rule_an_earlier_rule_covers_is_unreachable(text: str) -> None:
    content, line = marked(text)
    problem = only_problem(content)
    assert (problem.line, problem.field) == (line, "rules[1] (later).match"), problem
    assert "unreachable" in problem.message
    assert "'first'" in problem.message, "the message names the rule that hides this one"


@pytest.mark.parametrize(("first", "later"), REACHABLE_CASES)
def test_a_rule_an_earlier_rule_does_not_cover_is_accepted(
    first: dict[str, object], later: dict[str, object]
) -> None:
    """The unreachable check never refuses a rule some run could still reach."""
    content = yaml_text(
        f"""
        phase: 2
        default: rq
        rules:
          - id: first
            match: {first}
            backend: prefect
          - id: later
            match: {later}
            backend: prefect
        """
    )
    document = parse(content)
    assert [rule.id for rule in document.rules.rules] == ["first", "later"]


def test_a_backend_off_under_backends_is_fine_while_nothing_names_it() -> None:
    document = parse("phase: 3\ndefault: prefect\nbackends:\n  rq: {enabled: false}\n")
    assert not document.rules.enabled("rq")
    assert document.rules.enabled("prefect")


def test_phase_1_accepts_rules_that_send_some_runs_to_prefect() -> None:
    """Phase 1 pins only the default; a rule may already try Prefect on a few workflows."""
    document = parse(
        yaml_text(
            """
            phase: 1
            default: rq
            rules:
              - id: try
                match: {workflow_id: sandbox}
                backend: prefect
            """
        )
    )
    assert document.rules.rules[0].backend == "prefect"


# -- every problem at once ---------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_at_once_in_line_order() -> None:
    """One bad rule does not hide the others', and schema and whole-file problems mix."""
    content = yaml_text(
        """
        phase: 2
        default: rq
        phase: 2
        rules:
          - id: a
            backend: prefect
            percent: 250
          - id: b
            match: {workflow_id: "etl-*"}
            backend: airflow
            salt: s
          - id: b
            match: {workflow_id: etl-daily}
            backend: prefect
            shadow: prefect
            fallback: prefect
          - id: c
            backend: prefect
            colour: blue
          - id: d
            match: {workflow_id: etl}
            backend: prefect
            shadow: airflow
        """
    )
    with pytest.raises(RulesInvalidError) as caught:
        parse(content)
    found = [(problem.line, problem.field) for problem in caught.value.problems]
    assert found == [
        (3, "phase"),  # given twice
        (7, "rules[0] (a).percent"),  # above 100
        (10, "rules[1] (b).backend"),  # unknown
        (11, "rules[1] (b).salt"),  # without percent
        (12, "rules[2] (b).id"),  # a second `b`
        (13, "rules[2] (b).match"),  # unreachable: the first `b` covers etl-daily
        (15, "rules[2] (b).shadow"),  # is the backend
        (16, "rules[2] (b).fallback"),  # is the backend
        (19, "rules[3] (c).colour"),  # extra key
        (23, "rules[4] (d).shadow"),  # unknown
    ]
    text = str(caught.value)
    assert "routing_rules.yaml: 10 problem(s), nothing applied" in text
    assert all(str(problem) in text for problem in caught.value.problems)


def test_a_problem_reads_as_its_line_field_and_message() -> None:
    assert str(RulesProblem(4, "rules[0] (a).percent", "too big")) == (
        "line 4: rules[0] (a).percent: too big"
    )
    assert str(RulesProblem(None, "file", "empty")) == "file: empty"


# -- valid files -------------------------------------------------------------------------

EVERY_FEATURE = yaml_text(
    """
    # Phase 2: move the ETL workspace over, carefully.
    phase: 2
    default: rq
    backends:
      rq: {enabled: true}
      prefect:
        enabled: true
    rules:
      - id: pinned-legacy
        description: The billing export stays on RQ until its owner signs off.
        match:
          workflow_id: billing-export
        backend: rq
      - id: etl-canary
        description: A quarter of the nightly ETL jobs, sticky per workflow.
        match:
          workspace_id: [ws-etl, "ws-data-*"]
          folder_id: "nightly/*"
          job_id: ["job-?", "job-[0-9][0-9]*"]
          tags: [etl, nightly]
          registered_after: 2026-06-01
        backend: prefect
        percent: 25.5
        otherwise: rq
        sticky_by: workflow_id
        salt: etl-2026
        shadow: rq
        fallback: rq
        guard:
          min_runs: 40
          window_hours: 12
          max_failure_rate_increase: 0.05
          max_p95_ratio: 1.5
          rollback_to: rq
      - id: new-workflows
        match:
          registered_after: 2026-09-01T12:30:00Z
        backend: prefect
        shadow: rq
      - id: everything-else
        backend: rq
        shadow: prefect
    """
)


def test_a_file_using_every_feature_parses_into_its_models() -> None:
    document = parse(EVERY_FEATURE)
    rules = document.rules
    assert (rules.phase, rules.default) == (2, "rq")
    assert rules.enabled("rq")
    assert rules.enabled("prefect")
    assert [rule.id for rule in rules.rules] == [
        "pinned-legacy",
        "etl-canary",
        "new-workflows",
        "everything-else",
    ]
    lines = EVERY_FEATURE.splitlines()
    assert document.rule_lines == tuple(
        number
        for rule in rules.rules
        for number, line in enumerate(lines, 1)
        if line.strip() == f"- id: {rule.id}"
    )
    canary = rules.rules[1]
    assert canary.match.workspace_id == ["ws-etl", "ws-data-*"]
    assert canary.match.patterns("folder_id") == ("nightly/*",)
    assert canary.match.patterns("job_id") == ("job-?", "job-[0-9][0-9]*")
    assert canary.match.tags == ["etl", "nightly"]
    assert canary.match.registered_after == datetime(2026, 6, 1, tzinfo=UTC)
    assert (canary.percent, canary.otherwise, canary.bucket_key, canary.bucket_salt) == (
        25.5,
        "rq",
        "workflow_id",
        "etl-2026",
    )
    assert (canary.shadow, canary.fallback) == ("rq", "rq")
    assert canary.guard == Guard(
        min_runs=40,
        window_hours=12,
        max_failure_rate_increase=0.05,
        max_p95_ratio=1.5,
        rollback_to="rq",
    )
    assert rules.rules[2].match.registered_after == datetime(2026, 9, 1, 12, 30, tzinfo=UTC)
    assert rules.rules[3].match.is_catch_all()
    assert not canary.match.is_catch_all()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("phase: 1\ndefault: rq\n", id="phase-1-minimal"),
        pytest.param("phase: 2\ndefault: prefect\nrules: []\n", id="phase-2-no-rules"),
        pytest.param("phase: 3\ndefault: prefect\n", id="phase-3-minimal"),
        pytest.param(
            "phase: 3\ndefault: prefect\nrules:\n  - id: all\n    backend: prefect\n",
            id="phase-3-prefect-rule",
        ),
        pytest.param(
            "phase: 2\ndefault: rq\nrules:\n  - id: half\n    backend: prefect\n    percent: 50\n",
            id="percent-to-the-default",
        ),
        pytest.param(
            "phase: 2\ndefault: rq\nrules:\n  - id: none\n    match: {workflow_id: y}\n"
            "    backend: prefect\n    percent: 0\n"
            "  - id: all\n    match: {workflow_id: x}\n    backend: prefect\n    percent: 100\n",
            id="percent-bounds",
        ),
    ],
)
def test_a_valid_file_parses(content: str) -> None:
    document = parse(content)
    assert document.content == content
    assert document.source == "routing_rules.yaml"
    assert len(document.rule_lines) == len(document.rules.rules)


def test_the_version_is_the_first_12_hex_digits_of_the_content_sha256() -> None:
    document = parse(EVERY_FEATURE)
    expected = hashlib.sha256(EVERY_FEATURE.encode()).hexdigest()[:12]
    assert document.version == rules_version(EVERY_FEATURE) == expected
    assert rules_version(EVERY_FEATURE + "\n") != expected, "any edit is a new version"


def test_the_known_backends_are_rq_and_prefect() -> None:
    assert set(BACKEND_NAMES) == {"rq", "prefect"}


def test_a_caller_may_know_other_backends() -> None:
    content = "phase: 2\ndefault: airflow\n"
    document = parse_rules(content, source="x", known_backends=("rq", "prefect", "airflow"))
    assert document.rules.default == "airflow"


# -- registered_after is UTC -------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        pytest.param("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC), id="date-is-midnight-utc"),
        pytest.param(
            "2026-12-01 08:15:00", datetime(2026, 12, 1, 8, 15, tzinfo=UTC), id="naive-is-utc"
        ),
        pytest.param("2026-12-01T08:15:00Z", datetime(2026, 12, 1, 8, 15, tzinfo=UTC), id="zulu"),
        pytest.param(
            "2026-12-01T10:15:00+02:00",
            datetime(2026, 12, 1, 8, 15, tzinfo=UTC),
            id="offset-is-the-same-instant",
        ),
    ],
)
def test_registered_after_becomes_an_aware_utc_instant(written: str, expected: datetime) -> None:
    content = (
        "phase: 2\ndefault: rq\nrules:\n  - id: new\n"
        f"    match: {{registered_after: {written}}}\n    backend: prefect\n"
    )
    after = parse(content).rules.rules[0].match.registered_after
    assert after is not None
    assert after.utcoffset() is not None, "a naive datetime cannot be compared with a run's"
    assert after == expected


@pytest.mark.parametrize(
    "written",
    [
        pytest.param('"2026-12-01"', id="quoted-date"),
        pytest.param('"2026-12-01T00:00:00"', id="quoted-datetime"),
    ],
)
def test_a_quoted_registered_after_is_utc_too(written: str) -> None:
    content = (
        "phase: 2\ndefault: rq\nrules:\n  - id: new\n"
        f"    match: {{registered_after: {written}}}\n    backend: prefect\n"
    )
    after = parse(content).rules.rules[0].match.registered_after
    assert after == datetime(2026, 12, 1, tzinfo=UTC)
    assert after is not None
    assert after.utcoffset() == timedelta(0)


def test_quoted_and_unquoted_registered_after_are_checked_together() -> None:
    content = yaml_text(
        """
        phase: 2
        default: rq
        rules:
          - id: first
            match: {registered_after: 2026-12-01}
            backend: prefect
          - id: later
            match: {registered_after: "2026-12-02", tags: [x]}
            backend: prefect
        """
    )
    problem = only_problem(content)
    assert "unreachable" in problem.message
