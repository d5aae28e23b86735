"""Where the rules in force come from: start-up, reloads, and files that cannot be used."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.model.errors import RulesInvalidError
from backends.store import Store
from backends.store.routing_records import RoutingRecords
from gateway.routing.loading import rules_version
from gateway.routing.source import RulesSource

GOOD = """\
phase: 2
default: rq
rules:
  - id: canary
    match: {workflow_id: etl}
    backend: prefect
    percent: 10
"""


@pytest.fixture
def records(store: Store) -> RoutingRecords:
    return RoutingRecords(store.engine)


def start(records: RoutingRecords, path: Path) -> RulesSource:
    return RulesSource.start(records=records, configured=path, default_backend="rq")


def test_an_edit_that_keeps_the_files_size_is_seen(records: RoutingRecords, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    source = start(records, path)
    edited = GOOD.replace("percent: 10", "percent: 50")
    assert len(edited) == len(GOOD)
    path.write_text(edited)  # within the same clock tick, often: the content decides
    assert source.reload_if_changed()
    assert source.version == rules_version(edited)
    assert not source.reload_if_changed(), "an unchanged file is not applied again"


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        pytest.param(
            lambda p: p.write_bytes(b"phase: 2\ndefault: \xe9\n"), "not UTF-8", id="latin-1"
        ),
        pytest.param(lambda p: p.unlink(), "cannot read it", id="removed"),
    ],
)
def test_a_file_that_cannot_be_read_is_refused_and_the_rules_stay(
    records: RoutingRecords, tmp_path: Path, spoil: object, message: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    source = start(records, path)
    spoil(path)  # type: ignore[operator]
    assert not source.reload_if_changed()
    assert source.version == rules_version(GOOD)
    assert source.refusal is not None
    assert message in source.refusal.problems[0].message
    assert not source.reload_if_changed(), "said once, not every poll"
    assert not source.reload()


def test_a_bad_file_at_start_serves_the_last_applied_version(
    records: RoutingRecords, tmp_path: Path
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("phase: 3\ndefault: rq\n")
    with pytest.raises(RulesInvalidError) as refused:
        start(records, path)
    assert refused.value.version == rules_version("phase: 3\ndefault: rq\n")

    path.write_text(GOOD)
    start(records, path)  # a gateway applies GOOD
    path.write_text("phase: 3\ndefault: rq\n")
    source = start(records, path)
    assert source.version == rules_version(GOOD)
    assert source.refusal is not None
    assert source.refusal.version == rules_version("phase: 3\ndefault: rq\n")
