"""``figway rules``: the tools of the people flipping routing rules."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from backends.contract import LEGACY_BACKEND
from backends.model.errors import FigwayError, RulesInvalidError
from backends.model.workflow import WorkflowDefinition, parse_definition, shadow_refusal
from backends.nodes import default_registry
from backends.store import Store
from backends.store.rollout_records import RolloutRecords
from backends.store.routing_records import RoutingRecords
from gateway.cli.support import migrated_engine, or_exit, settings_or_exit
from gateway.config import Settings
from gateway.reports.evidence import policy_of
from gateway.reports.judge import min_decidable_runs
from gateway.reports.readiness import rq_readiness
from gateway.routing.diff import diff_rules, rollout_changes, rule_changes
from gateway.routing.guard import GuardKeeper
from gateway.routing.loading import RulesDocument, read_rules
from gateway.routing.promotion import RolloutKeeper, position_of
from gateway.routing.router import Router, RoutingTable, RunFacts
from gateway.routing.rules import Rule
from gateway.routing.shadow import with_shadow
from gateway.routing.source import DEFAULT_RULES_FILE, builtin_rules
from gateway.services import build_executors, connect_redis

__all__ = ["rules"]

_RULES_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def rules() -> None:
    """Routing rules: check, explain, diff, history, guards, rollouts and phase 3 readiness."""


@rules.command("check")
@click.argument("files", nargs=-1, required=True, type=_RULES_FILE)
def rules_check(files: tuple[Path, ...]) -> None:
    """Check rules files as the gateway would; exit 1 listing every problem with its line."""
    refused = 0
    for path in files:
        try:
            document = read_rules(path)
        except RulesInvalidError as exc:
            refused += 1
            click.echo(f"{path}: refused, {len(exc.problems)} problem(s)", err=True)
            for problem in exc.problems:
                click.echo(f"  {problem}", err=True)
            continue
        rules_file = document.rules
        click.echo(
            f"{path}: ok (version {document.version}, phase {rules_file.phase}, "
            f"{len(rules_file.rules)} rule(s), default {rules_file.default})"
        )
        for line, warning in decidability_warnings(document):
            click.echo(f"  warning: line {line}: {warning}", err=True)
    if refused:
        raise click.ClickException(f"{refused} of {len(files)} file(s) refused")


def decidability_warnings(document: RulesDocument) -> list[tuple[int, str]]:
    """Guards and promote blocks whose ``min_runs`` is below what their margins can ever
    decide on: even perfect data stay inconclusive until the larger number."""
    warnings = []
    for rule, line in zip(document.rules.rules, document.rule_lines, strict=True):
        blocks: list[tuple[str, Any, float | None]] = []
        if rule.guard is not None:
            blocks.append(("guard", rule.guard, rule.guard.time_ratio))
        if rule.promote is not None:
            blocks.append(("promote", rule.promote, rule.promote.max_ratio))
        for name, block, ratio in blocks:
            policy = policy_of(block, time_ratio=ratio)
            needed = {figure: min_decidable_runs(policy, figure) for figure in block.watched}
            figure, most = max(needed.items(), key=lambda item: item[1])
            if block.min_runs < most:
                warnings.append(
                    (
                        line,
                        f"rule {rule.id!r}: {name}.min_runs is {block.min_runs}, but its margins "
                        f"cannot decide on {figure.replace('_', ' ')} before {most} runs a side "
                        "(on perfect data): it will wait that long; widen the margin or raise "
                        "min_runs to say so",
                    )
                )
    return warnings


@rules.command("explain")
@click.option(
    "--workflow-id",
    default=None,
    help="The workflow a run would be of (without it: the evidence of every guarded or "
    "stepped rule).",
)
@click.option("--job-id", default="job", show_default=True, help="The run's job id.")
@click.option("--workspace-id", default=None, help="For a workflow not registered yet.")
@click.option("--folder-id", default=None, help="For a workflow not registered yet.")
@click.option("--tag", "tags", multiple=True, help="For a workflow not registered yet.")
@click.option(
    "--rules", "rules_file", type=_RULES_FILE, help="Rules to ask (default: the configured file)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rules_explain(
    workflow_id: str | None,
    job_id: str,
    workspace_id: str | None,
    folder_id: str | None,
    tags: tuple[str, ...],
    rules_file: Path | None,
    as_json: bool,
) -> None:
    """Which rule a run would match, which backend it would go to, and why; and, for
    guarded or stepped rules, the evidence now, the runs each side still needs and how
    long that should take at the current run rate.

    The workflow's workspace, folder, tags and registration time come from the
    database when it is registered there.
    """
    settings = settings_or_exit()
    records = _records(settings)
    router = Router(_configured_rules(settings, rules_file))
    guards, rollouts = _keepers(router, records)
    if workflow_id is None:
        every = [r for r in router.table.rules.rules if r.guard or r.steps]
        if as_json:
            click.echo(json.dumps([_evidence_of(r, guards, rollouts) for r in every]))
            return
        if not every:
            click.echo("no rule of the rules in force has a guard or steps")
        for rule in every:
            _echo_evidence(rule, guards, rollouts)
        return
    workflow = or_exit(lambda: Store(records.engine).get_workflow(workflow_id=workflow_id))
    refusal = None
    if workflow is not None:
        node_types = default_registry(settings.node_policy())
        definition = or_exit(
            lambda: parse_definition(
                workflow.definition, node_types=node_types, max_levels=settings.max_levels
            )
        )
        facts = RunFacts.of_definition(
            definition, job_id=job_id, registered_at=workflow.registered_at
        )
        refusal = shadow_refusal(definition, node_types)
    else:
        facts = RunFacts(
            workflow_id, workspace_id or "", folder_id or "", job_id, tags=frozenset(tags)
        )
    explanation = router.explain(facts)
    reason, shadow = with_shadow(explanation.decision.reason, explanation.decision.shadow, refusal)
    decision = replace(explanation.decision, reason=reason, shadow=shadow)
    deciding = next((r for r in router.table.rules.rules if r.id == decision.rule_id), None)
    planned = deciding if deciding is not None and (deciding.guard or deciding.steps) else None
    if as_json:
        evidence = None if planned is None else _evidence_of(planned, guards, rollouts)
        click.echo(
            json.dumps(
                {**asdict(decision), "passed_over": explanation.passed_over, "evidence": evidence}
            )
        )
        return
    registered = "registered" if workflow is not None else "not registered; ids as given"
    click.echo(f"workflow {workflow_id} ({registered}), job {job_id}")
    click.echo(f"  backend: {decision.backend}")
    click.echo(f"  rule:    {decision.rule_id or '(none)'}  (rules version {decision.version})")
    click.echo(f"  why:     {decision.reason}")
    if decision.shadow:
        click.echo(f"  shadow:  also runs on {decision.shadow} for comparison")
    if decision.fallback:
        click.echo(f"  fallback: {decision.fallback} while {decision.backend} is unreachable")
    for line in explanation.passed_over:
        click.echo(f"  passed over: {line}")
    if planned is not None:
        _echo_evidence(planned, guards, rollouts)


@rules.command("diff")
@click.argument("old", type=_RULES_FILE)
@click.argument("new", type=_RULES_FILE)
@click.option("--workflow", "only", multiple=True, help="Only these workflows (repeatable).")
def rules_diff(old: Path, new: Path, only: tuple[str, ...]) -> None:
    """What changing the rules from OLD to NEW would move, per registered workflow.

    Each workflow's recent job ids are routed by both files; a workflow with
    no runs yet is measured on 10,000 made-up job ids.
    """
    settings = settings_or_exit()
    before, after = (RoutingTable(_parse_or_exit(path)) for path in (old, new))
    changes = rule_changes(before, after)
    click.echo(f"rules {before.version} -> {after.version}")
    if changes.phase is not None:
        click.echo(f"  phase: {changes.phase[0]} -> {changes.phase[1]}")
    if changes.added:
        click.echo(f"  added: {', '.join(changes.added)}")
    if changes.removed:
        click.echo(f"  removed: {', '.join(changes.removed)}")
    if changes.changed:
        listing = ", ".join(
            f"{rule_id} ({', '.join(keys)})" for rule_id, keys in changes.changed.items()
        )
        click.echo(f"  changed: {listing}")
    if changes.reordered:
        click.echo("  rules kept are in a different order (first match wins)")
    if before.default != after.default:
        click.echo(f"  default: {before.default} -> {after.default}")
    records = _records(settings)
    stored = {
        rule_id: position_of(row)
        for rule_id, row in or_exit(RolloutRecords(records.engine).rollouts).items()
    }
    for rule_id, text in rollout_changes(before, after, stored):
        click.echo(f"  rollout {rule_id}: {text}")
    workflows = [w for w in or_exit(records.workflows) if not only or w.workflow_id in only]
    if not workflows:
        click.echo("no registered workflows to measure (load some with `figway workflows load`)")
        return
    click.echo(f"\n{'workflow':<32} {'jobs':>7} {'moved':>7}  moves")
    job_ids = or_exit(
        lambda: {
            w.workflow_id: records.recent_job_ids(workflow_id=w.workflow_id) for w in workflows
        }
    )
    moves = diff_rules(
        before,
        after,
        [
            # The stored shape is enough to route by; node configs need not be re-checked.
            RunFacts.of_definition(
                WorkflowDefinition.model_validate(w.definition),
                job_id="",
                registered_at=w.registered_at,
            )
            for w in workflows
        ],
        job_ids,
        _trip_texts(records),
        stored,
    )
    for result in moves:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(result.moves.items())) or "none"
        kind = " (made-up job ids)" if result.synthetic else ""
        click.echo(
            f"{result.workflow_id:<32} {result.jobs:>7} {result.share:>7.1%}  {detail}{kind}"
        )


@rules.command("readiness")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rules_readiness(as_json: bool) -> None:
    """Phase 3: can RQ be switched off? Exit 0 when ready, 1 listing what still holds it."""
    settings = settings_or_exit()
    if settings.redis_url is None:
        raise click.ClickException(
            "the embedded default keeps RQ's queues inside the gateway process; "
            "ask the gateway: GET /routing/readiness"
        )
    records = _records(settings)
    legacy = build_executors(settings, connect_redis(settings))[LEGACY_BACKEND]
    result = or_exit(
        lambda: rq_readiness(
            table=RoutingTable(_configured_rules(settings, None)),
            workflows=records.workflows(),
            records=records,
            legacy=legacy,
        )
    )
    if as_json:
        click.echo(json.dumps({**asdict(result), "holds": list(result.holds)}))
    elif result.ready:
        click.echo("ready: nothing routes to RQ and RQ holds nothing; it can be switched off")
    else:
        click.echo("not ready; RQ is still held by:")
        for hold in result.holds:
            click.echo(f"  - {hold}")
    if not result.ready:
        raise SystemExit(1)


@rules.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1_000))
@click.option("--rule", "rule_id", default=None, help="Only this rule's rollout moves.")
def rules_history(limit: int, rule_id: str | None) -> None:
    """Rules versions the gateways put in force, and every move of every rollout in steps
    (advanced on evidence, rolled back, paused, resumed, pinned, reconciled), newest first."""
    records = _records(settings_or_exit())
    history = or_exit(lambda: records.history(limit=limit))
    if not history:
        click.echo("no rules version has been applied yet (a gateway records one as it starts)")
    for applied in history:
        click.echo(
            f"{applied.applied_at:%Y-%m-%d %H:%M:%S} UTC  version {applied.version}  "
            f"phase {applied.phase}  from {applied.source}"
        )
    events = or_exit(lambda: RolloutRecords(records.engine).events(rule_id=rule_id, limit=limit))
    if events:
        click.echo("\nrollouts in steps, newest first:")
    for event in events:
        move = f"{_percent(event.from_percent)} -> {_percent(event.to_percent)}"
        click.echo(
            f"{event.at:%Y-%m-%d %H:%M:%S} UTC  rule {event.rule_id}  {event.action}  {move}  "
            f"by {event.by}"
        )
        click.echo(f"    {event.reason}")


@rules.command("show")
@click.argument("version")
def rules_show(version: str) -> None:
    """Print an applied version's exact content (restore it with `> routing_rules.yaml`)."""
    records = _records(settings_or_exit())
    row = or_exit(lambda: records.rules_content(version=version))
    if row is None:
        raise click.ClickException(
            f"no rules version {version!r} was ever applied; `figway rules history` lists them"
        )
    click.echo(row.content, nl=False)


@rules.command("guards")
def rules_guards() -> None:
    """Guard trips, newest first: in force until reset, or reset and by whom."""
    records = _records(settings_or_exit())
    trips = or_exit(records.guard_history)
    if not trips:
        click.echo("no guard has tripped")
    for trip in trips:
        state = (
            "IN FORCE"
            if trip.reset_at is None
            else f"reset {trip.reset_at:%Y-%m-%d %H:%M} by {trip.reset_by}"
        )
        click.echo(
            f"rule {trip.rule_id}: tripped {trip.tripped_at:%Y-%m-%d %H:%M:%S} UTC "
            f"({state}): {trip.reason}"
        )


@rules.command("guard-reset")
@click.argument("rule_id")
@click.option("--by", default="cli", show_default=True, help="Who resets it (recorded).")
def rules_guard_reset(rule_id: str, by: str) -> None:
    """Put a rule whose guard tripped back in force (every gateway picks it up)."""
    records = _records(settings_or_exit())
    if not or_exit(lambda: records.reset_guard(rule_id=rule_id, by=by)):
        raise click.ClickException(f"the guard of rule {rule_id!r} is not tripped")
    click.echo(f"guard of rule {rule_id} reset; the rule routes as written again")


def _rollout_command(action: str) -> Any:
    def run(rule_id: str, by: str, percent: float | None = None) -> None:
        settings = settings_or_exit()
        records = _records(settings)
        router = Router(_configured_rules(settings, None))
        _, keeper = _keepers(router, records)
        try:
            if action == "pause":
                row = keeper.pause(rule_id, by=by)
            elif action == "resume":
                row = keeper.resume(rule_id, by=by)
            else:
                row = keeper.pin(rule_id, by=by, percent=percent)
        except FigwayError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"rollout of rule {rule_id}: {position_of(row).describe()} (by {by})")

    return run


_BY = click.option("--by", default="cli", show_default=True, help="Who does it (recorded).")


@rules.command("pause")
@click.argument("rule_id")
@_BY
def rules_pause(rule_id: str, by: str) -> None:
    """Hold a rollout in steps where it is (its guard keeps watching); every gateway obeys."""
    _rollout_command("pause")(rule_id, by)


@rules.command("resume")
@click.argument("rule_id")
@_BY
def rules_resume(rule_id: str, by: str) -> None:
    """Let a paused or pinned rollout advance on the judge's evidence again."""
    _rollout_command("resume")(rule_id, by)


@rules.command("pin")
@click.argument("rule_id")
@click.option(
    "--percent",
    type=click.FloatRange(0, 100, min_open=True),
    default=None,
    help="One of the rule's steps (default: where it is now).",
)
@_BY
def rules_pin(rule_id: str, percent: float | None, by: str) -> None:
    """Fix a rollout at one of its steps until `figway rules resume`."""
    _rollout_command("pin")(rule_id, by, percent)


# -- helpers --------------------------------------------------------------------------


def _keepers(router: Router, records: RoutingRecords) -> tuple[GuardKeeper, RolloutKeeper]:
    """The guards and rollouts of ``router``'s rules, with the trips and positions in force
    (read only: nothing is started or reconciled)."""
    guards = GuardKeeper(router, records)
    rollouts = RolloutKeeper(router, records, RolloutRecords(records.engine))
    or_exit(guards.refresh)
    or_exit(rollouts.refresh)
    return guards, rollouts


def _evidence_of(rule: Rule, guards: GuardKeeper, rollouts: RolloutKeeper) -> dict[str, Any]:
    found: dict[str, Any] = {"rule_id": rule.id, "guard": None, "rollout": None}
    if rule.guard is not None:
        verdict = or_exit(lambda: guards.judge_rule(rule))
        found["guard"] = {**verdict.figures(), "plan_text": verdict.plan.describe()}
    if rule.steps is not None:
        status = next(s for s in or_exit(rollouts.status) if s.rule.id == rule.id)
        found["rollout"] = status.as_dict()
    return found


def _echo_evidence(rule: Rule, guards: GuardKeeper, rollouts: RolloutKeeper) -> None:
    click.echo(f"rule {rule.id}:")
    if rule.guard is not None:
        verdict = or_exit(lambda: guards.judge_rule(rule))
        state = "TRIPPED (rolled back)" if rule.id in guards.router.tripped else "armed"
        click.echo(f"  guard ({state}; window {rule.guard.window_hours:g} h): {verdict.reason}")
        click.echo(f"    needs: {verdict.plan.describe()}")
    if rule.steps is not None:
        status = next(s for s in or_exit(rollouts.status) if s.rule.id == rule.id)
        click.echo(f"  rollout: {status.position.describe()}")
        if status.rolled_back:
            click.echo("    rolled back: reset the guard to resume (figway rules guard-reset)")
        if status.judgement is not None and status.evidence is not None and status.plan:
            sentence = status.judgement.sentence(
                candidate=status.evidence.candidate, baseline=status.evidence.baseline
            )
            click.echo(f"    at this step: {sentence}")
            click.echo(f"    needs: {status.plan.describe()}")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def _parse_or_exit(path: Path) -> RulesDocument:
    try:
        return read_rules(path)
    except RulesInvalidError as exc:
        raise click.ClickException(str(exc)) from exc


def _configured_rules(settings: Settings, override: Path | None) -> RulesDocument:
    path = override or settings.routing_rules
    if path is None and DEFAULT_RULES_FILE.is_file():
        path = DEFAULT_RULES_FILE
    if path is None:
        return builtin_rules(settings.default_backend)
    return _parse_or_exit(path)


def _records(settings: Settings) -> RoutingRecords:
    return RoutingRecords(migrated_engine(settings))


def _trip_texts(records: RoutingRecords) -> dict[str, Any]:
    return {rule_id: trip.reason for rule_id, trip in or_exit(records.tripped_guards).items()}
