"""The migration at a glance: what ``figway status`` and the console show.

:func:`build_status` folds the JSON of the routing endpoints (rules, guard status, the
comparison, runs in flight, the histories of rules, rollouts and guards) into one
:class:`StatusView`, whose :meth:`StatusView.as_dict` is what ``figway status --json``
prints. ``figway status`` reads those endpoints over HTTP; the console renders the same
view on the gateway. Pure: tested without a gateway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CHANGES_SHOWN", "StatusView", "build_status", "rule_shares"]

#: How many of the latest changes the screen shows.
CHANGES_SHOWN = 8

#: The figures a verdict line shows, in this order.
_FIGURES = ("failure_rate", "queue_wait", "execution_time", "total_time")


@dataclass(frozen=True)
class StatusView:
    gateway: str
    version: str
    phase: int
    default: str
    backends: dict[str, str]
    refused: str | None
    rules: list[dict[str, Any]]
    since: str | None
    verdicts: list[dict[str, Any]]
    in_flight: dict[str, dict[str, int]]
    changes: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rule_shares(
    rule: Mapping[str, Any], *, default: str, percent: float | None, rolled_back: bool
) -> dict[str, float]:
    """The share of the rule's runs each backend gets now, in percent.

    ``percent`` is the rollout's position for a rule in steps (None otherwise); a rolled
    back rule sends everything to its guard's ``rollback_to`` (a stepped rule without a
    guard: to ``otherwise``).

    >>> rule_shares({"backend": "prefect", "percent": 10}, default="rq", percent=None,
    ...             rolled_back=False)
    {'prefect': 10.0, 'rq': 90.0}
    >>> rule_shares({"backend": "prefect", "steps": [5, 50], "guard": {"rollback_to": "rq"}},
    ...             default="rq", percent=5, rolled_back=True)
    {'rq': 100.0}
    """
    backend: str = rule["backend"]
    rest: str = rule.get("otherwise") or default
    if rolled_back:
        guard = rule.get("guard") or {}
        return {guard.get("rollback_to", rest): 100.0}
    share = percent if rule.get("steps") else rule.get("percent")
    if share is None or share >= 100 or backend == rest:
        return {backend: 100.0}
    if share <= 0:
        return {rest: 100.0}
    return {backend: float(share), rest: round(100.0 - share, 6)}


def _match(rule: Mapping[str, Any]) -> str:
    match = rule.get("match") or {}
    parts = []
    for field, value in match.items():
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{field}={shown}")
    return " ".join(parts) or "*"


def _guard_state(guard: Mapping[str, Any] | None) -> str:
    if guard is None:
        return "none"
    if guard.get("tripped"):
        return f"tripped at {guard['tripped']['tripped_at'][:19]}"
    if guard.get("would_trip"):
        return "would trip"
    if guard.get("figures") is None:
        return "no guard" if guard.get("rollout") else "watching"
    plan = guard.get("plan") or {}
    return "watching" + (f": {plan['text']}" if plan.get("text") else "")


def _promotion(rollout: Mapping[str, Any] | None, guard: Mapping[str, Any] | None) -> str | None:
    if rollout is None:
        return None
    text = f"{rollout['state']}"
    judged = (guard or {}).get("rollout") or {}
    plan = judged.get("plan") or {}
    if rollout["state"] == "running" and plan.get("text"):
        text += f": {plan['text']}"
    return text


def _evidence(figures: Mapping[str, Any]) -> list[str]:
    return [figures[name]["text"] for name in _FIGURES if name in figures]


def _changes(
    versions: Sequence[Mapping[str, Any]],
    rollout_events: Sequence[Mapping[str, Any]],
    trips: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for version in versions:
        source: str = version["source"]
        by = (
            source.rsplit("(reloaded by ", 1)[1].rstrip(")")
            if "(reloaded by " in source
            else "file"
        )
        found.append(
            {"at": version["applied_at"], "what": f"rules {version['version']} in force", "by": by}
        )
    for event in rollout_events:
        move = ""
        if event.get("to_percent") is not None:
            move = f" {event.get('from_percent') or 0:g}% -> {event['to_percent']:g}%"
        found.append(
            {
                "at": event["at"],
                "what": f"rollout {event['rule_id']} {event['action']}{move}",
                "by": event["by"],
            }
        )
    for trip in trips:
        found.append(
            {"at": trip["tripped_at"], "what": f"guard {trip['rule_id']} tripped", "by": "gateway"}
        )
        if trip.get("reset_at"):
            found.append(
                {
                    "at": trip["reset_at"],
                    "what": f"guard {trip['rule_id']} reset",
                    "by": trip.get("reset_by") or "-",
                }
            )
    found.sort(key=lambda change: str(change["at"]), reverse=True)
    return found[:CHANGES_SHOWN]


def build_status(
    *,
    gateway: str,
    rules: Mapping[str, Any],
    guards: Sequence[Mapping[str, Any]],
    comparison: Mapping[str, Any],
    in_flight: Mapping[str, Mapping[str, int]],
    versions: Sequence[Mapping[str, Any]],
    rollout_events: Sequence[Mapping[str, Any]],
    trips: Sequence[Mapping[str, Any]],
) -> StatusView:
    """The screen's data from the endpoints' JSON (see :func:`gather_status`)."""
    rollouts = {r["rule_id"]: r for r in rules["rollouts"]}
    guard_of = {g["rule_id"]: g for g in guards}
    tripped = {t["rule_id"] for t in rules["tripped_guards"]}
    shown_rules = []
    for rule in rules["rules"]:
        rule_id = rule["id"]
        rollout = rollouts.get(rule_id)
        shown_rules.append(
            {
                "id": rule_id,
                "match": _match(rule),
                "share": rule_shares(
                    rule,
                    default=rules["default"],
                    percent=None if rollout is None else rollout["percent"],
                    rolled_back=rule_id in tripped,
                ),
                "shadow": rule.get("shadow"),
                "step": None if rollout is None else rollout["text"],
                "guard": _guard_state(guard_of.get(rule_id)),
                "promotion": _promotion(rollout, guard_of.get(rule_id)),
            }
        )
    shown_rules.append(
        {
            "id": "(default)",
            "match": "anything else",
            "share": {rules["default"]: 100.0},
            "shadow": None,
            "step": None,
            "guard": "none",
            "promotion": None,
        }
    )
    confidence = comparison["thresholds"]["confidence"]
    verdicts = [
        {
            "workflow_id": workflow["workflow_id"],
            "answer": workflow["judgement"]["answer"],
            "sentence": workflow["judgement"]["sentence"],
            "candidate_runs": workflow["judgement"]["candidate_runs"],
            "baseline_runs": workflow["judgement"]["baseline_runs"],
            "confidence": confidence,
            "evidence": _evidence(workflow["judgement"]["figures"]),
            "figures": workflow["judgement"]["figures"],
        }
        for workflow in comparison["workflows"]
    ]
    refused = rules.get("refused")
    return StatusView(
        gateway=gateway,
        version=rules["version"],
        phase=rules["phase"],
        default=rules["default"],
        backends={
            name: "enabled" if enabled else "off" for name, enabled in rules["backends"].items()
        },
        refused=None
        if not refused
        else f"version {refused['version']}: "
        + "; ".join(f"line {p['line']}: {p['message']}" for p in refused["problems"]),
        rules=shown_rules,
        since=comparison.get("since"),
        verdicts=verdicts,
        in_flight={backend: dict(counts) for backend, counts in sorted(in_flight.items())},
        changes=_changes(versions, rollout_events, trips),
    )
