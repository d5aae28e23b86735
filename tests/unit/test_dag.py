from __future__ import annotations

import pytest

from backends.model import dag


def test_levels_group_nodes_by_longest_upstream_path() -> None:
    upstream = {"a": [], "b": [], "c": ["a"], "d": ["a", "c"], "e": ["b"]}
    assert dag.levels(upstream) == [["a", "b"], ["c", "e"], ["d"]]


def test_a_deep_chain_does_not_hit_the_recursion_limit() -> None:
    upstream = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(5_000)}
    assert len(dag.levels(upstream)) == 5_000
    assert dag.find_cycle(upstream) is None


@pytest.mark.parametrize(
    ("upstream", "cycle"),
    [
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"x": [], "a": ["c"], "b": ["a"], "c": ["b", "x"]}, ["a", "c", "b", "a"]),
    ],
)
def test_find_cycle_names_the_closed_path(upstream: dict[str, list[str]], cycle: list[str]) -> None:
    assert dag.find_cycle(upstream) == cycle


def test_downstream_of_is_transitive_and_excludes_siblings() -> None:
    upstream = {"a": [], "b": ["a"], "c": ["b"], "d": [], "e": ["d", "c"]}
    assert dag.downstream_of("a", upstream) == {"b", "c", "e"}
    assert dag.downstream_of("e", upstream) == set()
