"""Resource limits per node attempt: memory and CPU time, enforced in the attempt's own process.

A definition gives a node ``limits: {memory_mb: 512, cpu_seconds: 30}``; a worker's
operator gives defaults for nodes that set none (``FIGWAY_NODE_DEFAULT_MEMORY_MB``,
``FIGWAY_NODE_DEFAULT_CPU_SECONDS``) and caps on both (``FIGWAY_NODE_MAX_*``).

An attempt with limits runs its node in a process of its own, forked from the
process that runs the attempt (an RQ work horse, a Prefect flow-run process, the
embedded gateway), with the kernel's limits set in that process only:

- memory: ``RLIMIT_DATA`` (the process's heap and private mappings) at what the
  process holds when it starts plus ``memory_mb``, so the limit is what the node may
  add, whatever the worker itself has imported. An allocation past it fails with
  ``MemoryError``;
- CPU time: ``RLIMIT_CPU`` at ``cpu_seconds`` (user and system time of all its
  threads); the kernel ends the process with SIGXCPU, and SIGKILL a second later.

The attempt's own process records the outcome, so figway's bookkeeping never runs
short of memory or time, and the worker (and the RQ work horse) lives on: a node
over its limit fails with ``memory limit 512 MiB exceeded`` or ``CPU time limit 30 s
exceeded``, and its retries apply as to any failure. The node's log lines are relayed
as they are written; a killed run ends the node's process. Linux only (``RLIMIT_DATA``
bounds ``mmap`` since Linux 4.7).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import resource
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from backends.model.workflow import NodeLimits
from backends.nodes import NodeCancelledError, NodeFailedError
from backends.nodes.connections import close_all_pools
from backends.nodes.policy import NodePolicy

__all__ = ["AttemptLimits", "Channel", "LimitExceededError", "NodeProcessError", "run_limited"]

#: Seconds between the CPU limit's SIGXCPU and the kernel's SIGKILL, for a process that
#: ignores the first.
CPU_GRACE_SECONDS = 1
#: How often the attempt's process checks for a kill of the run while the node runs.
_POLL_SECONDS = 0.2


class LimitExceededError(NodeFailedError):
    """A node attempt went over one of its limits (the message says which)."""


class NodeProcessError(NodeFailedError):
    """A node failed in its own process; its traceback was logged there."""


def size_text(megabytes: int) -> str:
    """A memory size as people write it.

    >>> size_text(512), size_text(2048), size_text(1536)
    ('512 MiB', '2 GiB', '1536 MiB')
    """
    if megabytes % 1024 == 0:
        return f"{megabytes // 1024} GiB"
    return f"{megabytes} MiB"


@dataclass(frozen=True)
class AttemptLimits:
    """The limits one attempt runs under (None: that resource is not limited)."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None

    @classmethod
    def resolve(cls, declared: NodeLimits | None, policy: NodePolicy) -> AttemptLimits | None:
        """The node's own limits, else the worker's defaults, each within the caps;
        None when nothing is limited (the attempt then runs in process, as it always has).

        >>> AttemptLimits.resolve(NodeLimits(cpu_seconds=90),
        ...     NodePolicy(default_memory_mb=512, max_cpu_seconds=60))
        AttemptLimits(memory_mb=512, cpu_seconds=60)
        >>> AttemptLimits.resolve(None, NodePolicy()) is None
        True
        """
        declared = declared or NodeLimits()
        memory = _within(declared.memory_mb or policy.default_memory_mb, policy.max_memory_mb)
        cpu = _within(declared.cpu_seconds or policy.default_cpu_seconds, policy.max_cpu_seconds)
        if memory is None and cpu is None:
            return None
        return cls(memory_mb=memory, cpu_seconds=cpu)

    def memory_reason(self) -> str:
        return f"memory limit {size_text(self.memory_mb or 0)} exceeded"

    def cpu_reason(self) -> str:
        return f"CPU time limit {self.cpu_seconds} s exceeded"

    def describe(self) -> str:
        """The limits, for a reason that names them.

        >>> AttemptLimits(memory_mb=2048, cpu_seconds=30).describe()
        'memory 2 GiB, CPU time 30 s'
        """
        parts = []
        if self.memory_mb is not None:
            parts.append(f"memory {size_text(self.memory_mb)}")
        if self.cpu_seconds is not None:
            parts.append(f"CPU time {self.cpu_seconds} s")
        return ", ".join(parts)


def _within(value: int | None, cap: int | None) -> int | None:
    if value is None or cap is None:
        return value
    return min(value, cap)


class Channel:
    """The node's process's line to the process that waits on it (see :func:`run_limited`)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        """Pass ``message`` (a log line) on; it reaches ``receive`` there."""
        self._write("message", message)

    def ask(self, question: Any) -> Any:
        """What ``answer`` there makes of ``question`` (a secret's name): the waiting
        process holds the clients (Prefect's) a forked process cannot use."""
        with self._lock:
            self._connection.send(("question", question))
            kind, payload = self._connection.recv()
        if kind == "refused":
            raise NodeFailedError(payload)
        return payload

    def _write(self, kind: str, payload: Any) -> None:
        with self._lock:
            self._connection.send((kind, payload))


def run_limited(
    body: Callable[[Channel], Any],
    limits: AttemptLimits,
    *,
    receive: Callable[[Any], None],
    answer: Callable[[Any], Any],
    cancelled: threading.Event,
) -> Any:
    """``body(channel)`` in a forked process held to ``limits``; returns what it returned.

    ``body`` must return something picklable. What it sends on ``channel`` reaches
    ``receive`` here as it is sent, and what it asks is answered by ``answer`` (an
    exception there fails the node with its message). Raises
    :class:`LimitExceededError` when the process went over a limit,
    ``NodeCancelledError`` when ``cancelled`` was set (the process is then killed),
    and ``NodeFailedError`` when it ended without a word.
    """
    here, there = Pipe(duplex=True)
    parent = os.getpid()
    with warnings.catch_warnings():
        # Python 3.12 warns about forking a process with threads (the heartbeat's, a
        # thread pool's). The child runs only the node and leaves with os._exit.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its outcome is checked by the parent
        here.close()
        _child(body, limits, Channel(there), parent)
    there.close()
    try:
        result, over_memory = _collect(here, pid, receive, answer, cancelled)
    except BaseException:
        # RQ's job timeout (an exception raised here), a stop: the node ends with its attempt.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        here.close()
    status, usage = _reap(pid)
    if cancelled.is_set():
        raise NodeCancelledError("the run was killed while the node ran")
    if over_memory:
        if limits.memory_mb is None:  # only its CPU time was limited: the machine is full
            raise NodeFailedError("MemoryError: the node's process ran out of memory")
        raise LimitExceededError(limits.memory_reason())
    if result is not _NOTHING:
        return result
    used = usage.ru_utime + usage.ru_stime
    signum = -os.waitstatus_to_exitcode(status)
    if limits.cpu_seconds is not None and (
        signum == signal.SIGXCPU or (signum == signal.SIGKILL and used >= limits.cpu_seconds)
    ):
        raise LimitExceededError(limits.cpu_reason())
    how = f"signal {signal.Signals(signum).name}" if signum > 0 else f"exit code {-signum}"
    raise NodeFailedError(
        f"the node's process ended without an outcome ({how}, under limits "
        f"{limits.describe()}; a library that cannot allocate memory may end it this way)"
    )


_NOTHING = object()
#: How long a node's process may take to exit once it has said how the node ended.
_EXIT_GRACE_SECONDS = 5.0


def _reap(pid: int) -> tuple[int, resource.struct_rusage]:
    """Wait for the node's process to exit: (its wait status, its resource usage).

    Its outcome is in hand already; what is left is closing the node's database
    sessions. A process forked from one with threads can block there on a lock that
    another thread held at the fork; it is killed rather than waited on for ever.
    """
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return status, usage
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            return status, usage
        time.sleep(0.01)


def _collect(
    connection: Connection,
    pid: int,
    receive: Callable[[Any], None],
    answer: Callable[[Any], Any],
    cancelled: threading.Event,
) -> tuple[Any, bool]:
    """Serve the child until it is done: (its result, whether it went over memory)."""
    while True:
        if cancelled.is_set():
            os.kill(pid, signal.SIGKILL)
            return _NOTHING, False
        if not connection.poll(_POLL_SECONDS):
            continue
        try:
            kind, payload = connection.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            return _NOTHING, False  # it ended mid-message: its exit status tells
        if kind == "message":
            receive(payload)
        elif kind == "question":
            try:
                reply: tuple[str, Any] = ("answer", answer(payload))
            except Exception as exc:
                reply = ("refused", f"{type(exc).__name__}: {exc}")
            try:
                connection.send(reply)
            except OSError:
                return _NOTHING, False  # gone meanwhile
        elif kind == "memory":
            return _NOTHING, True
        else:
            return payload, False


def _child(
    body: Callable[[Channel], Any], limits: AttemptLimits, channel: Channel, parent: int
) -> NoReturn:
    """Set the limits, run ``body``, send its result; never returns."""
    code = 0
    result: Any = None
    over_memory = False
    try:
        _end_with(parent)
        _apply(limits)
        try:
            result = body(channel)
            channel._write("result", result)
        except MemoryError:
            over_memory = True
        if over_memory:
            # Out of the except block: the node's frames (and what they held) are gone.
            result = None
            channel._write("memory", None)
    except BaseException:
        code = 70  # the parent names what it saw: an exit without an outcome
    finally:
        try:
            close_all_pools()  # the node's database sessions end closed, not dropped
        finally:
            os._exit(code)


def _end_with(parent: int) -> None:
    """Die with the process that forked this one: a flow-run process that Prefect's
    worker ended must not leave its node running on. (Linux ties this to the forking
    thread, which waits on this process until it ends.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return  # not Linux: the node's CPU limit, if any, still ends it
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(71)


_PR_SET_PDEATHSIG = 1


def _apply(limits: AttemptLimits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for a CPU kill
    if limits.cpu_seconds is not None:
        # CPU time counts from this fork: the child starts at zero.
        resource.setrlimit(
            resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_SECONDS)
        )
    if limits.memory_mb is not None:
        ceiling = _data_bytes() + limits.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (ceiling, ceiling))


def _data_bytes() -> int:
    """What this process holds in data mappings now (VmData), which the limit adds to."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0
