"""The example routing_rules.yaml is what the embedded default uses: it must pass its checks
and show every feature a migration engineer reads it for."""

from __future__ import annotations

from pathlib import Path

from gateway.routing.loading import parse_rules

EXAMPLE = Path(__file__).resolve().parents[2] / "routing_rules.yaml"


def test_the_example_rules_pass_every_check_and_show_each_feature() -> None:
    document = parse_rules(EXAMPLE.read_text(), source=str(EXAMPLE))
    rules = document.rules
    assert rules.backends, "it shows how to switch a backend off"
    used = {
        "percent": any(r.percent is not None for r in rules.rules),
        "sticky_by": any(r.sticky_by is not None for r in rules.rules),
        "otherwise": any(r.otherwise is not None for r in rules.rules),
        "shadow": any(r.shadow is not None for r in rules.rules),
        "fallback": any(r.fallback is not None for r in rules.rules),
        "guard": any(r.guard is not None for r in rules.rules),
        "steps": any(r.steps is not None for r in rules.rules),
        "promote": any(r.promote is not None for r in rules.rules),
        "registered_after": any(r.match.registered_after for r in rules.rules),
        "tags": any(r.match.tags for r in rules.rules),
        "glob": any("*" in str(r.match.workflow_id) for r in rules.rules),
    }
    assert all(used.values()), {feature for feature, shown in used.items() if not shown}
