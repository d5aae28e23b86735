"""The router: which backend a run goes to, why, and that the fast path agrees with the slow one."""

from __future__ import annotations

import fnmatch
import random
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.routing import router as router_module
from gateway.routing.bucketing import bucket_of
from gateway.routing.loading import RulesDocument, parse_rules
from gateway.routing.router import Decision, Router, RunFacts
from gateway.routing.rules import PATTERN_FIELDS

REGISTERED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rules(text: str) -> RulesDocument:
    return parse_rules(textwrap.dedent(text).lstrip("\n"), source="routing_rules.yaml")


def facts(**overrides: Any) -> RunFacts:
    values: dict[str, Any] = {
        "workflow_id": "wf",
        "workspace_id": "ws",
        "folder_id": "folder",
        "job_id": "job",
        "tags": frozenset(),
        "registered_at": REGISTERED,
        "pinned": None,
    }
    values.update(overrides)
    return RunFacts(**values)


def one_rule(match: str, **options: str) -> RulesDocument:
    """Phase 2, default rq, and one rule ``r`` sending what ``match`` matches to prefect."""
    extra = "".join(f"    {key}: {value}\n" for key, value in options.items())
    return rules(
        "phase: 2\ndefault: rq\nrules:\n"
        f"  - id: r\n    match: {match}\n    backend: prefect\n{extra}"
    )


# -- matching ----------------------------------------------------------------------------

MATCH_CASES = [
    pytest.param("{workflow_id: etl}", {"workflow_id": "etl"}, True, id="workflow-exact"),
    pytest.param(
        "{workflow_id: etl}", {"workflow_id": "etl-daily"}, False, id="workflow-exact-is-not-prefix"
    ),
    pytest.param("{workflow_id: etl}", {"workflow_id": "ETL"}, False, id="workflow-case-sensitive"),
    pytest.param("{workflow_id: 'etl-*'}", {"workflow_id": "etl-daily"}, True, id="workflow-glob"),
    pytest.param(
        "{workflow_id: 'etl-*'}",
        {"workflow_id": "my-etl-daily"},
        False,
        id="workflow-glob-anchored",
    ),
    pytest.param(
        "{workspace_id: ws-data}", {"workspace_id": "ws-data"}, True, id="workspace-exact"
    ),
    pytest.param("{workspace_id: ws-data}", {"workspace_id": "ws"}, False, id="workspace-miss"),
    pytest.param(
        "{folder_id: 'nightly/*'}",
        {"folder_id": "nightly/a/b"},
        True,
        id="folder-glob-star-crosses-slash",
    ),
    pytest.param(
        "{folder_id: 'nightly/*'}", {"folder_id": "daily/a"}, False, id="folder-glob-miss"
    ),
    pytest.param("{job_id: 'job-?'}", {"job_id": "job-7"}, True, id="job-question-mark"),
    pytest.param(
        "{job_id: 'job-?'}", {"job_id": "job-77"}, False, id="job-question-mark-is-one-char"
    ),
    pytest.param("{job_id: 'job-[0-9]*'}", {"job_id": "job-7x"}, True, id="job-character-class"),
    pytest.param(
        "{job_id: 'job-[0-9]*'}", {"job_id": "job-x7"}, False, id="job-character-class-miss"
    ),
    pytest.param("{job_id: 'job-[!0-9]'}", {"job_id": "job-x"}, True, id="job-negated-class"),
    pytest.param(
        "{workflow_id: [etl, 'ml-*']}", {"workflow_id": "etl"}, True, id="list-literal-member"
    ),
    pytest.param(
        "{workflow_id: [etl, 'ml-*']}", {"workflow_id": "ml-train"}, True, id="list-glob-member"
    ),
    pytest.param(
        "{workflow_id: [etl, 'ml-*']}", {"workflow_id": "etl2"}, False, id="list-no-member"
    ),
    pytest.param("{job_id: ['a-*', 'b-*']}", {"job_id": "b-1"}, True, id="list-of-globs"),
    pytest.param("{tags: [etl]}", {"tags": frozenset({"etl", "nightly"})}, True, id="tags-subset"),
    pytest.param(
        "{tags: [etl, nightly]}", {"tags": frozenset({"etl", "nightly"})}, True, id="tags-equal"
    ),
    pytest.param(
        "{tags: [etl, nightly]}", {"tags": frozenset({"etl"})}, False, id="tags-all-required"
    ),
    pytest.param("{tags: [etl]}", {"tags": frozenset()}, False, id="tags-none"),
    pytest.param(
        "{registered_after: 2026-03-01T12:00:00Z}",
        {"registered_at": REGISTERED + timedelta(seconds=1)},
        True,
        id="registered-after",
    ),
    pytest.param(
        "{registered_after: 2026-03-01T12:00:00Z}",
        {"registered_at": REGISTERED},
        False,
        id="registered-at-the-instant-is-not-after",
    ),
    pytest.param(
        "{registered_after: 2026-03-01T12:00:00Z}",
        {"registered_at": REGISTERED - timedelta(days=1)},
        False,
        id="registered-before",
    ),
    pytest.param(
        "{registered_after: 2026-03-01}",
        {"registered_at": datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)},
        True,
        id="registered-after-a-date-is-after-its-midnight-utc",
    ),
    pytest.param(
        "{registered_after: 2000-01-01}",
        {"registered_at": None},
        False,
        id="unregistered-never-matches-registered-after",
    ),
    pytest.param(
        "{workflow_id: etl}",
        {"workflow_id": "etl", "registered_at": None},
        True,
        id="unregistered-matches-ids",
    ),
    pytest.param(
        "{workflow_id: etl, workspace_id: ws-data}",
        {"workflow_id": "etl", "workspace_id": "ws"},
        False,
        id="every-field-must-match",
    ),
    pytest.param(
        "{workflow_id: etl, workspace_id: ws-data, folder_id: f, job_id: 'j*', tags: [t]}",
        {
            "workflow_id": "etl",
            "workspace_id": "ws-data",
            "folder_id": "f",
            "job_id": "j1",
            "tags": frozenset({"t"}),
        },
        True,
        id="every-field-matches",
    ),
    pytest.param("{}", {}, True, id="empty-match-is-catch-all"),
]


@pytest.mark.parametrize(("match", "overrides", "matches"), MATCH_CASES)
def test_a_rule_matches_the_runs_its_match_describes(
    match: str, overrides: dict[str, Any], matches: bool
) -> None:
    router = Router(one_rule(match))
    run = facts(**overrides)
    decision = router.decide(run)
    expected = ("prefect", "r") if matches else ("rq", None)
    assert (decision.backend, decision.rule_id) == expected, decision.reason
    assert router.explain(run).decision == decision


def test_a_quoted_registered_after_routes_like_an_unquoted_one() -> None:
    router = Router(one_rule('{registered_after: "2026-03-01"}'))
    assert router.decide(facts()).backend == "prefect"


# -- order, default, pins ----------------------------------------------------------------

BOTH_RULES = {
    "by-workflow": "    match: {workflow_id: etl}\n    backend: prefect\n",
    "by-tag": "    match: {tags: [big]}\n    backend: rq\n",
}


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(("by-workflow", "by-tag"), id="workflow-rule-first"),
        pytest.param(("by-tag", "by-workflow"), id="tag-rule-first"),
    ],
)
def test_the_first_matching_rule_wins(order: tuple[str, str]) -> None:
    body = "".join(f"  - id: {rule_id}\n{BOTH_RULES[rule_id]}" for rule_id in order)
    router = Router(rules("phase: 2\ndefault: prefect\nrules:\n" + body))
    both = facts(workflow_id="etl", tags=frozenset({"big"}))
    decision = router.decide(both)
    assert decision.rule_id == order[0]
    assert decision.backend == ("prefect" if order[0] == "by-workflow" else "rq")


def test_a_run_no_rule_matches_goes_to_the_default() -> None:
    document = one_rule("{workflow_id: etl}")
    decision = Router(document).decide(facts(workflow_id="other"))
    assert decision == Decision(
        backend="rq",
        rule_id=None,
        version=document.version,
        reason="no rule matched: the default, rq",
        kind="default",
    )


def test_a_file_without_rules_sends_everything_to_the_default() -> None:
    router = Router(rules("phase: 3\ndefault: prefect\n"))
    assert router.decide(facts()).backend == "prefect"
    assert router.explain(facts()).passed_over == ()


def test_a_decision_carries_the_rules_version() -> None:
    document = one_rule("{workflow_id: etl}")
    assert Router(document).decide(facts(workflow_id="etl")).version == document.version


@pytest.mark.parametrize(
    ("pinned", "workflow_id", "backend"),
    [
        pytest.param("rq", "etl", "rq", id="pin-beats-a-matching-rule"),
        pytest.param("prefect", "other", "prefect", id="pin-beats-the-default"),
    ],
)
def test_a_definition_pin_wins_over_the_rules(pinned: str, workflow_id: str, backend: str) -> None:
    router = Router(one_rule("{workflow_id: etl}"))
    run = facts(workflow_id=workflow_id, pinned=pinned)
    decision = router.decide(run)
    assert (decision.backend, decision.rule_id) == (backend, None)
    assert "pinned" in decision.reason
    assert router.explain(run).decision == decision
    assert router.explain(run).passed_over == ()


@pytest.mark.parametrize(
    ("workflow_id", "backend", "rule_id"),
    [
        pytest.param("etl", "rq", "stay", id="falls-to-the-matching-rule"),
        pytest.param("other", "rq", None, id="falls-to-the-default"),
    ],
)
def test_a_pin_to_a_disabled_backend_is_ignored(
    workflow_id: str, backend: str, rule_id: str | None
) -> None:
    document = rules(
        """
        phase: 2
        default: rq
        backends:
          prefect: {enabled: false}
        rules:
          - id: stay
            match: {workflow_id: etl}
            backend: rq
        """
    )
    router = Router(document)
    run = facts(workflow_id=workflow_id, pinned="prefect")
    decision = router.decide(run)
    assert (decision.backend, decision.rule_id) == (backend, rule_id)
    assert "pinned" not in decision.reason
    assert router.explain(run).decision == decision


# -- percentages -------------------------------------------------------------------------

JOBS = [f"job-{n}" for n in range(400)]


@pytest.mark.parametrize(
    ("options", "outside"),
    [
        pytest.param({"percent": "30"}, "rq", id="rest-to-the-file-default"),
        pytest.param(
            {"percent": "30", "otherwise": "rq"}, "rq", id="rest-to-otherwise-the-default"
        ),
    ],
)
def test_a_percentage_sends_the_jobs_in_its_buckets_to_backend(
    options: dict[str, str], outside: str
) -> None:
    router = Router(one_rule("{workflow_id: etl}", **options))
    sides = {job: router.decide(facts(workflow_id="etl", job_id=job)).backend for job in JOBS}
    # The rule's id is the salt and the job id the key unless the rule says otherwise.
    expected = {job: "prefect" if bucket_of("r", job) < 3_000 else outside for job in JOBS}
    assert sides == expected
    assert set(sides.values()) == {"prefect", outside}


def test_otherwise_overrides_the_file_default() -> None:
    """With the default on prefect, a prefect canary's other share goes where it says: rq."""
    document = rules(
        """
        phase: 2
        default: prefect
        rules:
          - id: back
            match: {workflow_id: etl}
            backend: prefect
            percent: 40
            otherwise: rq
        """
    )
    router = Router(document)
    for job in JOBS:
        decision = router.decide(facts(workflow_id="etl", job_id=job))
        assert decision.backend == ("prefect" if bucket_of("back", job) < 4_000 else "rq")
        assert decision.rule_id == "back"
        side = "inside" if decision.backend == "prefect" else "outside"
        assert f"is {side} the 40% rollout" in decision.reason


def test_a_percentage_buckets_on_sticky_by_with_the_salt() -> None:
    router = Router(
        one_rule("{workspace_id: ws}", percent="50", sticky_by="workflow_id", salt="s-2026")
    )
    for n in range(100):
        workflow_id = f"wf-{n}"
        expected = "prefect" if bucket_of("s-2026", workflow_id) < 5_000 else "rq"
        seen = {
            router.decide(facts(workflow_id=workflow_id, job_id=job)).backend for job in JOBS[:20]
        }
        assert seen == {expected}, f"every job of {workflow_id} goes to one side"


@pytest.mark.parametrize(
    ("percent", "backends"),
    [
        pytest.param("0", {"rq"}, id="zero-sends-none"),
        pytest.param("100", {"prefect"}, id="hundred-sends-all"),
    ],
)
def test_the_ends_of_a_percentage(percent: str, backends: set[str]) -> None:
    router = Router(one_rule("{workflow_id: etl}", percent=percent))
    assert {router.decide(facts(workflow_id="etl", job_id=job)).backend for job in JOBS} == backends


# -- shadow and fallback -----------------------------------------------------------------


def test_shadow_and_fallback_are_carried_in_the_decision() -> None:
    router = Router(one_rule("{workflow_id: etl}", shadow="rq", fallback="rq"))
    decision = router.decide(facts(workflow_id="etl"))
    assert (decision.backend, decision.shadow, decision.fallback) == ("prefect", "rq", "rq")


def test_the_default_carries_no_shadow_or_fallback() -> None:
    router = Router(one_rule("{workflow_id: etl}", shadow="rq", fallback="rq"))
    decision = router.decide(facts(workflow_id="other"))
    assert (decision.backend, decision.shadow, decision.fallback) == ("rq", None, None)


def test_shadow_and_fallback_are_dropped_when_they_are_the_chosen_backend() -> None:
    """Outside a split the run goes to rq: shadowing or falling back to rq means nothing."""
    router = Router(one_rule("{workflow_id: etl}", percent="50", shadow="rq", fallback="rq"))
    by_side: dict[str, set[tuple[str | None, str | None]]] = {}
    for job in JOBS:
        decision = router.decide(facts(workflow_id="etl", job_id=job))
        by_side.setdefault(decision.backend, set()).add((decision.shadow, decision.fallback))
    assert by_side == {"prefect": {("rq", "rq")}, "rq": {(None, None)}}


# -- guards ------------------------------------------------------------------------------

GUARDED = """
phase: 2
default: rq
rules:
  - id: canary
    match: {workflow_id: etl}
    backend: prefect
    percent: 100
    shadow: rq
    guard:
      max_failure_rate_increase: 0.05
      rollback_to: rq
  - id: unguarded
    match: {workflow_id: ml}
    backend: prefect
"""


def test_a_tripped_guard_rolls_its_rule_back() -> None:
    router = Router(rules(GUARDED))
    run = facts(workflow_id="etl")
    assert router.decide(run).backend == "prefect"
    router.set_tripped({"canary": "failure rate 40% against 2%"})
    decision = router.decide(run)
    assert (decision.backend, decision.rule_id) == ("rq", "canary")
    assert "guard tripped (failure rate 40% against 2%)" in decision.reason
    assert decision.shadow is None, "a shadow on the backend the run goes to is dropped"
    assert router.explain(run).decision == decision


def test_a_trip_affects_only_its_own_rule() -> None:
    router = Router(rules(GUARDED))
    router.set_tripped({"canary": "slow"})
    assert router.decide(facts(workflow_id="ml")).backend == "prefect"


def test_a_trip_on_a_rule_without_a_guard_is_ignored() -> None:
    router = Router(rules(GUARDED))
    router.set_tripped({"unguarded": "slow"})
    decision = router.decide(facts(workflow_id="ml"))
    assert decision.backend == "prefect"
    assert decision.reason == "rule 'unguarded': prefect"


def test_a_cleared_trip_puts_the_rule_back_in_force() -> None:
    router = Router(rules(GUARDED))
    trips = {"canary": "slow"}
    router.set_tripped(trips)
    trips.clear()  # the router keeps its own copy
    assert router.decide(facts(workflow_id="etl")).backend == "rq"
    router.set_tripped({})
    assert router.decide(facts(workflow_id="etl")).backend == "prefect"


# -- explain -----------------------------------------------------------------------------

EXPLAINED = rules(
    """
    phase: 2
    default: rq
    rules:
      - id: by-workflow
        match: {workflow_id: ['etl-*', billing]}
        backend: prefect
      - id: by-tags
        match: {tags: [nightly, big]}
        backend: prefect
      - id: by-age
        match: {registered_after: 2026-06-01}
        backend: prefect
      - id: by-job
        match: {job_id: 'cron-*'}
        backend: prefect
      - id: by-workspace
        match: {workspace_id: ws-new}
        backend: prefect
    """
)


def test_explain_says_why_each_earlier_rule_was_passed_over() -> None:
    lines = EXPLAINED.rule_lines
    run = facts(
        workflow_id="wf", tags=frozenset({"nightly"}), job_id="job-1", workspace_id="ws-new"
    )
    explanation = Router(EXPLAINED).explain(run)
    assert explanation.decision.rule_id == "by-workspace"
    assert explanation.passed_over == (
        f"rule 'by-workflow' (line {lines[0]}): workflow_id 'wf' does not match 'etl-*', 'billing'",
        f"rule 'by-tags' (line {lines[1]}): the workflow lacks tag(s) big",
        f"rule 'by-age' (line {lines[2]}): the workflow was registered 2026-03-01 12:00 UTC, "
        "not after 2026-06-01 00:00 UTC",
        f"rule 'by-job' (line {lines[3]}): job_id 'job-1' does not match 'cron-*'",
    )


def test_explain_says_an_unregistered_workflow_has_no_registration_time() -> None:
    explanation = Router(EXPLAINED).explain(facts(registered_at=None))
    assert explanation.decision.rule_id is None
    assert len(explanation.passed_over) == 5
    assert "not registered" in explanation.passed_over[2]


def test_explain_of_the_first_rule_passes_over_nothing() -> None:
    explanation = Router(EXPLAINED).explain(facts(workflow_id="billing"))
    assert explanation.decision.rule_id == "by-workflow"
    assert explanation.passed_over == ()


def test_the_rule_lines_explain_cites_are_the_lines_of_the_rules() -> None:
    lines = textwrap.dedent(EXPLAINED.content).splitlines()
    for rule, number in zip(EXPLAINED.rules.rules, EXPLAINED.rule_lines, strict=True):
        assert lines[number - 1].strip() == f"- id: {rule.id}"


# -- install -----------------------------------------------------------------------------


def test_install_swaps_the_rules_in_force() -> None:
    first = one_rule("{workflow_id: etl}")
    second = rules(
        "phase: 2\ndefault: prefect\nrules:\n  - id: keep\n    match: {workflow_id: etl}\n    backend: rq\n"
    )
    router = Router(first)
    run = facts(workflow_id="etl")
    other = facts(workflow_id="other")
    # Warm the first table's cache so a stale answer would show.
    assert (router.decide(run).backend, router.decide(other).backend) == ("prefect", "rq")
    table = router.install(second)
    assert router.table is table
    assert table.version == second.version != first.version
    assert (router.decide(run).rule_id, router.decide(run).backend) == ("keep", "rq")
    assert (router.decide(other).rule_id, router.decide(other).backend) == (None, "prefect")
    assert router.decide(run).version == second.version


def test_install_keeps_the_trips() -> None:
    router = Router(rules(GUARDED))
    router.set_tripped({"canary": "slow"})
    router.install(
        rules(GUARDED + "  - id: extra\n    match: {workflow_id: x}\n    backend: prefect\n")
    )
    assert router.decide(facts(workflow_id="etl")).backend == "rq"


# -- the fast path agrees with the slow one ----------------------------------------------

MIXED = rules(
    """
    phase: 2
    default: rq
    rules:
      - id: exact-one
        match: {workflow_id: wf-1}
        backend: prefect
      - id: exact-list-with-jobs
        match: {workflow_id: [wf-2, wf-3], job_id: 'nightly-*'}
        backend: prefect
        shadow: rq
      - id: exact-and-tags
        match: {workflow_id: [wf-3, wf-4], tags: [etl]}
        backend: prefect
        percent: 50
      - id: glob-workflows
        match: {workflow_id: 'etl-*', workspace_id: [ws-a, 'ws-b*']}
        backend: prefect
      - id: folder-and-age
        match: {folder_id: 'f-[0-4]', registered_after: 2026-02-01}
        backend: prefect
        percent: 30
        sticky_by: folder_id
      - id: exact-after-globs
        match: {workflow_id: wf-5, job_id: ['cron-?', 'adhoc-*']}
        backend: prefect
      - id: tags-only
        match: {tags: [big, nightly]}
        backend: prefect
        fallback: rq
      - id: mixed-literal-glob
        match: {workflow_id: [wf-6, 'ml-*'], workspace_id: ws-a}
        backend: prefect
        percent: 70
        otherwise: rq
      - id: by-job
        match: {job_id: 'nightly-1*'}
        backend: prefect
    """
)


def reference_rule(document: RulesDocument, run: RunFacts) -> str | None:
    """The first rule that matches, worked out the slow, obvious way with fnmatchcase."""
    for rule in document.rules.rules:
        match = rule.match
        fields_match = all(
            (patterns := match.patterns(name)) is None
            or any(fnmatch.fnmatchcase(getattr(run, name), p) for p in patterns)
            for name in PATTERN_FIELDS
        )
        after = match.registered_after
        registered = after is None or (run.registered_at is not None and run.registered_at > after)
        if fields_match and set(match.tags) <= run.tags and registered:
            return rule.id
    return None


def generated_facts(count: int, seed: int) -> list[RunFacts]:
    rng = random.Random(seed)
    workflows = [f"wf-{n}" for n in range(8)] + ["etl-a", "etl-b", "ml-x", "ml-", "wf-10", "etl"]
    workspaces = ["ws-a", "ws-b", "ws-bb", "ws-c"]
    folders = [f"f-{n}" for n in range(7)] + ["f-10"]
    jobs = ["nightly-1", "nightly-12", "nightly-2", "cron-1", "cron-11", "adhoc-x", "job-9"]
    tag_pool = ["etl", "big", "nightly", "ml"]
    registrations = [
        None,
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    ]
    return [
        RunFacts(
            workflow_id=rng.choice(workflows),
            workspace_id=rng.choice(workspaces),
            folder_id=rng.choice(folders),
            job_id=rng.choice(jobs) + rng.choice(["", "", "-" + str(rng.randrange(50))]),
            tags=frozenset(rng.sample(tag_pool, rng.randrange(len(tag_pool) + 1))),
            registered_at=rng.choice(registrations),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    "cache_size",
    [
        pytest.param(None, id="cache-as-shipped"),
        pytest.param(5, id="cache-of-5-cleared-over-and-over"),
    ],
)
def test_the_cached_decision_agrees_with_explain_and_a_reference(
    cache_size: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """decide() uses the per-workflow candidate cache and the workflow index; explain() uses
    neither. On generated runs, twice over so the second pass reads the cache, they agree
    with each other and with a first-match written with fnmatchcase."""
    if cache_size is not None:
        monkeypatch.setattr(router_module, "_CANDIDATE_CACHE_SIZE", cache_size)
    router = Router(MIXED)
    runs = generated_facts(400, seed=20261129)
    first_pass = [router.decide(run) for run in runs]
    second_pass = [router.decide(run) for run in runs]
    assert first_pass == second_pass
    for run, decision in zip(runs, first_pass, strict=True):
        assert decision == router.explain(run).decision, run
        assert decision.rule_id == reference_rule(MIXED, run), run
    used = {decision.rule_id for decision in first_pass}
    assert used == {rule.id for rule in MIXED.rules.rules} | {None}, "every rule is exercised"


def test_the_cache_does_not_mix_workflows_that_share_a_job_id() -> None:
    """The cache is per workflow; the job id is checked afresh on every decision."""
    router = Router(MIXED)
    for job in ["nightly-1", "job-9", "nightly-1", "job-9"]:
        assert router.decide(facts(workflow_id="wf-2", job_id=job)).rule_id == (
            "exact-list-with-jobs" if job.startswith("nightly") else None
        )
        assert router.decide(facts(workflow_id="wf-1", job_id=job)).rule_id == "exact-one"


def test_in_phase_3_a_pin_to_rq_yields_to_the_rules() -> None:
    """Phase 3 routes nothing to RQ, a definition's own `backend: rq` included."""
    router = Router(parse_rules("phase: 3\ndefault: prefect\n", source="test"))
    decision = router.decide(RunFacts("etl", "ws", "f", "job", pinned="rq"))
    assert (decision.backend, decision.rule_id) == ("prefect", None)
    phase_2 = Router(parse_rules("phase: 2\ndefault: prefect\n", source="test"))
    assert phase_2.decide(RunFacts("etl", "ws", "f", "job", pinned="rq")).backend == "rq"


@pytest.mark.parametrize(
    ("rule", "job_id", "kind"),
    [
        pytest.param("backend: prefect", "j", "rule", id="rule"),
        pytest.param("backend: prefect\n    percent: 100", "j", "rollout", id="inside"),
        pytest.param("backend: prefect\n    percent: 0", "j", "rollout_rest", id="outside"),
    ],
)
def test_a_decision_says_in_one_word_why(rule: str, job_id: str, kind: str) -> None:
    document = rules(f"phase: 2\ndefault: rq\nrules:\n  - id: r\n    {rule}\n")
    assert Router(document).decide(facts(job_id=job_id)).kind == kind
