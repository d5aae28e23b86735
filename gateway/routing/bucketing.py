"""Deterministic, sticky percentage buckets, as feature-flag rollouts do them.

A key (a job id, say) hashes with the rule's salt to one of 10,000 buckets.
The rule sends a run to its backend when the bucket is below ``percent``
hundredths, so:

* the same key lands on the same side on every run and every replica (the
  hash is BLAKE2b, never Python's per-process ``hash``);
* raising the percentage only adds buckets below the new mark: a job that was
  on the new backend at 10 % is still there at 50 %, and none moves back.
"""

from __future__ import annotations

import hashlib

__all__ = ["BUCKETS", "bucket_of", "in_rollout"]

BUCKETS = 10_000


def bucket_of(salt: str, key: str) -> int:
    """The bucket, 0 to 9,999, of ``key`` under ``salt``.

    >>> bucket_of("canary", "job-42") == bucket_of("canary", "job-42")
    True
    >>> 0 <= bucket_of("canary", "job-42") < BUCKETS
    True
    """
    # The separator keeps ("a", "bc") and ("ab", "c") apart.
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def in_rollout(bucket: int, percent: float) -> bool:
    """True when ``bucket`` is inside a rollout of ``percent`` (0 to 100, hundredths count).

    >>> in_rollout(999, 10), in_rollout(1_000, 10), in_rollout(0, 0), in_rollout(9_999, 100)
    (True, False, False, True)
    """
    return bucket < round(percent * 100)
