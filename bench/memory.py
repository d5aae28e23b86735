"""Peak resident memory of a process tree, sampled on a thread while a run goes on.

:class:`TreeSampler` reads the RSS (psutil) of a root process and of every
process below it (an RQ worker and its forked work horse; a Prefect worker and
its ``python -m prefect.engine`` flow-run process) every ``interval`` seconds.
It keeps each process's peak, the peak of the tree's sum, and a timeline from
which the peak within any time window (one node's) is read afterwards.

- A sampled peak can miss a spike shorter than the interval, so each process's
  ``VmHWM`` (the kernel's own high-water mark of its RSS) is read too; the two
  agreeing says the sampling saw the real peak.
- At each process's peak, RSS is split into ``RssAnon`` (its heap: Python
  objects, Arrow buffers, DuckDB) and ``RssFile`` (mapped files: the code of
  Python's extension libraries, shared with every process that maps them).
- The tree's sum counts pages a work horse still shares with its parent twice:
  it is an upper bound of what the tree costs the machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

from bench.stack import descendants, status_kb

__all__ = ["Describer", "MemoryPeaks", "ProcessPeak", "TreeSampler", "WindowPeak"]

#: Names a process from its pid, whether it is the root, and its command line.
Describer = Callable[[int, bool, Sequence[str]], str]


@dataclass
class ProcessPeak:
    """One process of the tree: its role and the most it held."""

    pid: int
    role: str
    peak_rss_kb: int = 0
    #: RssAnon and RssFile at the sample of the peak.
    anon_kb: int | None = None
    file_kb: int | None = None
    #: The kernel's high-water mark at the last sample (None when /proc hid it).
    hwm_kb: int | None = None
    first_seen: float = 0.0  # time.time() of its first and last sample
    last_seen: float = 0.0


@dataclass(frozen=True)
class WindowPeak:
    """The peaks seen between two instants (one node's run)."""

    largest_kb: int
    largest_role: str
    #: The RSS of that same process at the window's first sample: what the node found.
    start_kb: int
    tree_sum_kb: int
    samples: int


@dataclass
class MemoryPeaks:
    """What a sampler saw: per process, the tree's sum, and every sample."""

    samples: int
    mean_interval_s: float
    cpu_s: float  # the sampler thread's own CPU time
    tree_sum_kb: int
    processes: list[ProcessPeak]
    #: (time.time(), ((pid, rss_kb), ...)) per sample, for :meth:`window`.
    timeline: list[tuple[float, tuple[tuple[int, int], ...]]] = field(repr=False)

    @property
    def largest(self) -> ProcessPeak:
        """The process that held the most at any one sample."""
        return max(self.processes, key=lambda process: process.peak_rss_kb)

    def window(self, start: float, end: float, *, exclude: Collection[int] = ()) -> WindowPeak:
        """Peaks among the samples from ``start`` to ``end`` (time.time() values).

        ``exclude`` leaves processes out of the largest (not of the tree's sum): the
        idle parent of a work horse, say, when the question is what the node held.
        """
        inside = [(at, dict(readings)) for at, readings in self.timeline if start <= at <= end]
        tree = max((sum(readings.values()) for _, readings in inside), default=0)
        largest, pid = 0, 0
        for _, readings in inside:
            for candidate, rss in readings.items():
                if candidate not in exclude and rss > largest:
                    largest, pid = rss, candidate
        first = next((readings[pid] for _, readings in inside if pid in readings), 0)
        roles = {process.pid: process.role for process in self.processes}
        return WindowPeak(largest, roles.get(pid, ""), first, tree, len(inside))


class TreeSampler:
    """Samples a process tree's RSS on a daemon thread between ``start`` and ``stop``.

    >>> import os
    >>> with TreeSampler(os.getpid(), interval=0.01) as sampler:
    ...     time.sleep(0.05)
    >>> sampler.result().largest.peak_rss_kb > 0
    True
    """

    def __init__(
        self, root: int, *, interval: float = 0.02, describe: Describer | None = None
    ) -> None:
        self.root = root
        self.interval = interval
        self._describe = describe or _by_name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._handles: dict[int, psutil.Process] = {}
        self._cmdlines: dict[int, list[str]] = {}
        self._peaks: dict[int, ProcessPeak] = {}
        self._timeline: list[tuple[float, tuple[tuple[int, int], ...]]] = []
        self._tree_sum_kb = 0
        self._began = 0.0
        self._ended = 0.0
        self._cpu_s = 0.0

    def __enter__(self) -> TreeSampler:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._began = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._ended = time.monotonic()

    def result(self) -> MemoryPeaks:
        count = len(self._timeline)
        return MemoryPeaks(
            samples=count,
            mean_interval_s=(self._ended - self._began) / count if count else 0.0,
            cpu_s=self._cpu_s,
            tree_sum_kb=self._tree_sum_kb,
            processes=sorted(self._peaks.values(), key=lambda p: p.first_seen),
            timeline=list(self._timeline),
        )

    # -- sampling ----------------------------------------------------------------------

    def _loop(self) -> None:
        cpu_began = time.thread_time()
        # Sleep to the next tick rather than a fixed time after each sample, so the
        # cadence holds even when reading /proc takes a few milliseconds.
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self._sample()
            next_tick += self.interval
            self._stop.wait(max(0.0, next_tick - time.monotonic()))
        self._sample()  # one last look, after the caller's work ended
        self._cpu_s = time.thread_time() - cpu_began

    def _sample(self) -> None:
        now = time.time()
        readings: list[tuple[int, int]] = []
        # /proc/<pid>/task/*/children walks only this tree; psutil's children() would scan
        # every process on the machine, 50 times a second.
        for pid in [self.root, *descendants(self.root)]:
            resident = self._rss_kb(pid)
            if resident is None:
                continue  # it exited between the listing and the reading
            readings.append((pid, resident))
            self._record(pid, resident, now)
        self._timeline.append((now, tuple(readings)))
        self._tree_sum_kb = max(self._tree_sum_kb, sum(rss for _, rss in readings))

    def _record(self, pid: int, resident: int, now: float) -> None:
        peak = self._peaks.get(pid)
        if peak is None:
            peak = self._peaks[pid] = ProcessPeak(pid, "", first_seen=now)
        self._name(pid, peak)
        status = status_kb(pid)
        if resident >= peak.peak_rss_kb:
            peak.peak_rss_kb = resident
            peak.anon_kb, peak.file_kb = status.get("RssAnon"), status.get("RssFile")
        peak.hwm_kb = status.get("VmHWM", peak.hwm_kb)
        peak.last_seen = now

    def _name(self, pid: int, peak: ProcessPeak) -> None:
        # A child seen between its fork and its exec still shows its parent's command
        # line: name it again whenever the command line changes.
        try:
            cmdline = self._handles[pid].cmdline()
        except (KeyError, psutil.Error):
            return
        if cmdline != self._cmdlines.get(pid):
            self._cmdlines[pid] = cmdline
            peak.role = self._describe(pid, pid == self.root, cmdline)

    def _rss_kb(self, pid: int) -> int | None:
        try:
            handle = self._handles.get(pid)
            if handle is None:
                handle = self._handles[pid] = psutil.Process(pid)
            return int(handle.memory_info().rss // 1024)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self._handles.pop(pid, None)
            return None


def _by_name(pid: int, is_root: bool, cmdline: Sequence[str]) -> str:
    name = Path(cmdline[0]).name if cmdline else str(pid)
    return f"{name} (root)" if is_root else name
