"""Percentage buckets: in range, the same in every process, and monotone in the percentage.

A rollout is only safe to raise if a job that went to the new backend keeps
going there, on every gateway replica and after every restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing.bucketing import BUCKETS, bucket_of, in_rollout
from gateway.routing.loading import RulesDocument, parse_rules
from gateway.routing.router import Router, RunFacts

ROOT = Path(__file__).resolve().parents[2]

# No example database: the tests leave no .hypothesis folder behind.
quiet = settings(database=None, max_examples=300)

texts = st.text(max_size=64)
percents = st.floats(min_value=0, max_value=100, allow_nan=False)


@quiet
@given(salt=texts, key=texts)
def test_a_bucket_is_one_of_the_10000(salt: str, key: str) -> None:
    assert BUCKETS == 10_000
    assert 0 <= bucket_of(salt, key) < BUCKETS


@quiet
@given(salt=texts, key=texts)
def test_a_bucket_is_the_same_every_time(salt: str, key: str) -> None:
    assert bucket_of(salt, key) == bucket_of(salt, key)


@quiet
@given(bucket=st.integers(0, BUCKETS - 1), p1=percents, p2=percents)
def test_a_rollout_is_monotone_in_its_percentage(bucket: int, p1: float, p2: float) -> None:
    low, high = sorted((p1, p2))
    if in_rollout(bucket, low):
        assert in_rollout(bucket, high)


@quiet
@given(salt=texts, key=texts, p1=percents, p2=percents)
def test_a_key_inside_a_rollout_stays_inside_a_larger_one(
    salt: str, key: str, p1: float, p2: float
) -> None:
    low, high = sorted((p1, p2))
    bucket = bucket_of(salt, key)
    assert not in_rollout(bucket, low) or in_rollout(bucket, high)


@quiet
@given(bucket=st.integers(0, BUCKETS - 1))
def test_zero_percent_takes_no_bucket_and_100_takes_every_one(bucket: int) -> None:
    assert not in_rollout(bucket, 0)
    assert in_rollout(bucket, 100)


@quiet
@given(hundredths=st.integers(0, BUCKETS))
def test_a_percentage_takes_exactly_its_hundredths(hundredths: int) -> None:
    """12.34 % is buckets 0 to 1,233: exactly 1,234 of the 10,000."""
    percent = hundredths / 100
    inside = [bucket for bucket in range(BUCKETS) if in_rollout(bucket, percent)]
    assert inside == list(range(hundredths))


def test_salt_and_key_are_kept_apart() -> None:
    """("a", "bc") and ("ab", "c") would hash alike if the two were simply joined."""
    assert bucket_of("a", "bc") != bucket_of("ab", "c")
    assert bucket_of("canary", "job-1") != bucket_of("canary-2", "job-1")


def test_known_buckets_do_not_change() -> None:
    """A different hash would reshuffle every rollout in force: these values are frozen."""
    assert [bucket_of("canary", f"job-{n}") for n in range(5)] == [4862, 2309, 2660, 8537, 5637]


CHILD = textwrap.dedent(
    """
    import json, sys
    from gateway.routing.bucketing import bucket_of
    pairs = json.load(sys.stdin)
    json.dump(
        {
            "buckets": [bucket_of(salt, key) for salt, key in pairs],
            "hashes": [hash(key) % 10_000 for _, key in pairs],
        },
        sys.stdout,
    )
    """
)


def buckets_in_a_child(pairs: list[tuple[str, str]], hash_seed: str) -> dict[str, list[int]]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(pairs),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    result: dict[str, list[int]] = json.loads(done.stdout)
    return result


def test_buckets_are_the_same_in_every_process() -> None:
    """Two child processes with different hash seeds, and this one, agree on every bucket;
    the children's built-in hash() differs, which proves the seeds took effect and so that
    the buckets do not come from a per-process hash."""
    pairs = [(f"rule-{n % 7}", f"job-{n}-é-{n * 7919}") for n in range(200)]
    here = [bucket_of(salt, key) for salt, key in pairs]
    first = buckets_in_a_child(pairs, hash_seed="1")
    second = buckets_in_a_child(pairs, hash_seed="2")
    assert first["hashes"] != second["hashes"], "the hash seed did not reach the children"
    assert first["buckets"] == second["buckets"] == here


# -- through the router ------------------------------------------------------------------

JOB_IDS = [f"job-{n}" for n in range(10_000)]


def split(percent: float, *, rule_id: str = "canary") -> RulesDocument:
    return parse_rules(
        "phase: 2\ndefault: rq\nrules:\n"
        f"  - id: {rule_id}\n    match: {{workflow_id: etl}}\n"
        f"    backend: prefect\n    percent: {percent}\n",
        source="routing_rules.yaml",
    )


def on_prefect(router: Router) -> set[str]:
    return {
        job
        for job in JOB_IDS
        if router.decide(RunFacts("etl", "ws", "folder", job)).backend == "prefect"
    }


@pytest.mark.parametrize("percent", [10, 25, 50, 90], ids=lambda p: f"{p}-percent")
def test_a_split_of_10000_jobs_is_within_one_point_of_its_percentage(percent: int) -> None:
    share = len(on_prefect(Router(split(percent)))) / len(JOB_IDS) * 100
    assert abs(share - percent) <= 1, f"{share:.2f}% went to prefect at {percent}%"


def test_raising_a_percentage_moves_no_job_back_to_the_old_backend() -> None:
    router = Router(split(10))
    at_10 = on_prefect(router)
    router.install(split(50))
    at_50 = on_prefect(router)
    assert at_10 <= at_50, f"{len(at_10 - at_50)} job(s) went back to rq"
    assert len(at_50) > 4 * len(at_10), "the raise took effect"


def test_two_rules_at_the_same_percentage_pick_different_jobs() -> None:
    """The rule id salts the hash, so one unlucky set of jobs is not every rule's canary."""
    first = on_prefect(Router(split(10, rule_id="first")))
    second = on_prefect(Router(split(10, rule_id="second")))
    overlap = len(first & second) / len(JOB_IDS) * 100
    assert 0.5 <= overlap <= 1.5, f"{overlap:.2f}% of jobs are in both (independent: about 1%)"
