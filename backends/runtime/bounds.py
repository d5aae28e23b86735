"""How much of a node attempt the record keeps: errors and log lines are cut to a length,
and an output too large for a database row goes to the artifact store.

A node can produce anything: a cast error quoting a 5 MB string, a 40 MB HTTP body as
its output. The database keeps what a person reads and a run view can rebuild quickly:

- an error or a log line longer than ``MAX_TEXT_CHARS`` (16,384) characters keeps its
  first ``MAX_TEXT_CHARS``, followed by a marker saying how long it was;
- an output whose JSON is larger than ``FIGWAY_MAX_OUTPUT_BYTES`` (256 KiB) is written
  to the artifact store, and the record holds ``{"stored_output": {uri, bytes, sha256}}``.
  Downstream nodes still receive the value itself.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "MAX_TEXT_CHARS", "bounded"]

#: Longest error or log line kept, in characters.
MAX_TEXT_CHARS = 16_384
#: Largest output kept in the database (its JSON, in bytes); larger ones are stored as files.
DEFAULT_MAX_OUTPUT_BYTES = 262_144


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text``, or its first ``limit`` characters with a marker saying what was cut.

    >>> bounded("abc"), bounded("abcdefgh", 3)
    ('abc', 'abc… [truncated by figway: 8 characters, the first 3 kept]')
    """
    if len(text) <= limit:
        return text
    return (
        f"{text[:limit]}… [truncated by figway: {len(text):,} characters, the first {limit:,} kept]"
    )
