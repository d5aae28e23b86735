"""How figway's RQ jobs are written to Redis: JSON, never pickle.

RQ pickles a job's function, arguments, metadata and result by default, and a
worker unpickles whatever it dequeues: anyone who can write to Redis could run
code on every worker. figway's jobs need nothing pickle can carry (three
strings and an integer in, a small dict out), so every queue, worker, scheduler
and fetch of figway's uses this serializer. A job written another way (pickled
by an older figway, or put there by someone else) is refused when it is read,
with a log line saying so, and never executed; the reconciler makes a new job
for the node from figway's own record.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JOB_SERIALIZER", "NOT_JSON", "JobSerializer"]

#: The start of the error a worker logs for a job that is not JSON.
NOT_JSON = "refused an RQ job that is not JSON"


class JobSerializer:
    """RQ's serializer protocol (``dumps`` and ``loads``) over compact JSON."""

    @staticmethod
    def dumps(obj: Any, /) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    @staticmethod
    def loads(data: bytes, /) -> Any:
        try:
            return json.loads(data)
        except (UnicodeDecodeError, ValueError):
            raise ValueError(
                f"{NOT_JSON} (pickled by an older figway, or written to Redis by someone "
                "else): not executed"
            ) from None


JOB_SERIALIZER = JobSerializer
