"""``figway rules``: the tools of the people flipping routing rules."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click

from backends.contract import LEGACY_BACKEND
from backends.model.errors import RulesInvalidError
from backends.model.workflow import WorkflowDefinition, parse_definition, shadow_refusal
from backends.nodes import default_registry
from backends.store import Store
from backends.store.routing_records import RoutingRecords
from gateway.cli.support import migrated_engine, or_exit, settings_or_exit
from gateway.config import Settings
from gateway.reports.readiness import rq_readiness
from gateway.routing.diff import diff_rules, rule_changes
from gateway.routing.loading import RulesDocument, read_rules
from gateway.routing.router import Router, RoutingTable, RunFacts
from gateway.routing.shadow import with_shadow
from gateway.routing.source import DEFAULT_RULES_FILE, builtin_rules
from gateway.services import build_executors, connect_redis

__all__ = ["rules"]

_RULES_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def rules() -> None:
    """Routing rules: check, explain, diff, history, guards and phase 3 readiness."""


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
    if refused:
        raise click.ClickException(f"{refused} of {len(files)} file(s) refused")


@rules.command("explain")
@click.option("--workflow-id", required=True, help="The workflow a run would be of.")
@click.option("--job-id", default="job", show_default=True, help="The run's job id.")
@click.option("--workspace-id", default=None, help="For a workflow not registered yet.")
@click.option("--folder-id", default=None, help="For a workflow not registered yet.")
@click.option("--tag", "tags", multiple=True, help="For a workflow not registered yet.")
@click.option(
    "--rules", "rules_file", type=_RULES_FILE, help="Rules to ask (default: the configured file)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rules_explain(
    workflow_id: str,
    job_id: str,
    workspace_id: str | None,
    folder_id: str | None,
    tags: tuple[str, ...],
    rules_file: Path | None,
    as_json: bool,
) -> None:
    """Which rule a run would match, which backend it would go to, and why.

    The workflow's workspace, folder, tags and registration time come from the
    database when it is registered there.
    """
    settings = settings_or_exit()
    records = _records(settings)
    router = Router(_configured_rules(settings, rules_file))
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
    router.set_tripped(_trip_texts(records))
    explanation = router.explain(facts)
    reason, shadow = with_shadow(explanation.decision.reason, explanation.decision.shadow, refusal)
    decision = replace(explanation.decision, reason=reason, shadow=shadow)
    if as_json:
        click.echo(json.dumps({**asdict(decision), "passed_over": explanation.passed_over}))
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
def rules_history(limit: int) -> None:
    """Rules versions the gateways put in force, newest first."""
    records = _records(settings_or_exit())
    history = or_exit(lambda: records.history(limit=limit))
    if not history:
        click.echo("no rules version has been applied yet (a gateway records one as it starts)")
    for applied in history:
        click.echo(
            f"{applied.applied_at:%Y-%m-%d %H:%M:%S} UTC  version {applied.version}  "
            f"phase {applied.phase}  from {applied.source}"
        )


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


# -- helpers --------------------------------------------------------------------------


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
