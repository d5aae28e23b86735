"""The node runtime: how every backend runs one attempt of one node.

RQ job functions and Prefect tasks both call :meth:`NodeRuntime.execute`. It
records ``running`` (refused if the run was killed or the attempt is stale, in
which case the node is not run), runs the node type's function with its logs
and stdout/stderr captured into the database, heartbeats while it runs (which
is also how a kill reaches a node that is running in-process), and records the
outcome: ``succeeded``, ``retrying`` (another attempt is due), ``failed``
(with the downstream nodes skipped) or ``cancelled``.

A node with resource limits (its ``limits``, or the worker's defaults) runs in a
process of its own held to them (:mod:`backends.runtime.limits`); this process
records its outcome, so a node over its limit fails with the reason and the worker
lives on. Nodes without limits run here, in process.

The backend only has to act on the returned :class:`AttemptResult`: let its
own retry machinery schedule the next attempt, and drop the jobs of skipped
nodes.

A database outage is not a node's failure. When the database cannot be reached
to record the start, the attempt waits for it with backoff (the job stays with
its worker, which RQ and the reconciler see alive) and starts once it is back;
an outcome the node has produced waits the same way to be recorded. Only past
``store_patience_seconds`` does the runtime give up and raise
:class:`~backends.model.errors.StoreUnavailableError` (the reconciler then finds
the node not started and has it queued again).
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TextIO, TypeVar

from backends.artifacts import ArtifactStore
from backends.artifacts.reference import STORED_OUTPUT_KEY, stored_output_of
from backends.model.errors import (
    FigwayError,
    SecretMissingError,
    SecretRefusedError,
    StoreUnavailableError,
)
from backends.model.status import NodeStatus
from backends.model.workflow import NodeSpec
from backends.nodes import (
    NodeCancelledError,
    NodeConfig,
    NodeContext,
    NodeFailedError,
    NodeRegistry,
    NodeType,
)
from backends.runtime.bounds import DEFAULT_MAX_OUTPUT_BYTES, MAX_TEXT_CHARS, bounded
from backends.runtime.heartbeats import Heartbeats
from backends.runtime.limits import (
    AttemptLimits,
    Channel,
    LimitExceededError,
    NodeProcessError,
    run_limited,
)
from backends.runtime.secrets import (
    EnvironmentSecrets,
    Redactor,
    SecretResolver,
    SecretSource,
    names_in_environment,
    secret_names_in,
)
from backends.store import LogRecord, Store, utcnow

__all__ = ["AttemptResult", "LogMirror", "NodeRuntime", "Outcome"]

log = logging.getLogger(__name__)

#: Logger handed to nodes; INFO and above are captured into the run's logs.
NODE_LOGGER = "figway.node"
#: How long an attempt waits for an unreachable database to record its start or outcome.
STORE_PATIENCE_SECONDS = 15 * 60


T = TypeVar("T")

#: Receives each captured log line of a node as it is written.
LogMirror = Callable[[LogRecord], None]


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"  # this attempt failed; the backend should run the next one
    FAILED = "failed"  # failed for good; ``skipped`` lists the downstream nodes dropped
    CANCELLED = "cancelled"
    NOT_RUN = "not_run"  # the node was not started (run killed, duplicate delivery)


@dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    error: str | None = None
    skipped: tuple[str, ...] = ()
    #: Downstream nodes this success made ready, with their specs: a backend that starts
    #: ready nodes itself (RQ, :mod:`backends.rq.release`) starts these.
    ready: Mapping[str, NodeSpec] = field(default_factory=dict)


class NodeRuntime:
    """Runs node attempts for any backend and records them in the store."""

    def __init__(
        self,
        store: Store,
        node_types: NodeRegistry,
        *,
        heartbeat_seconds: float = 1.0,
        artifacts: ArtifactStore | None = None,
        secrets: SecretSource | None = None,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        store_patience_seconds: float = STORE_PATIENCE_SECONDS,
    ) -> None:
        self.store = store
        self.node_types = node_types
        self.heartbeat_seconds = heartbeat_seconds
        self._heartbeats = Heartbeats(heartbeat_seconds)
        self.store_patience_seconds = store_patience_seconds
        self.artifacts = artifacts
        self.max_output_bytes = max_output_bytes
        self.secrets: SecretSource = secrets or EnvironmentSecrets()

    def execute(
        self,
        *,
        job_run_id: str,
        node_id: str,
        attempt: int,
        mirror: LogMirror | None = None,
        secrets: SecretSource | None = None,
    ) -> AttemptResult:
        """Run attempt ``attempt`` (1-based) of a node; never raises for a node's own failure.

        Two transactions: one starts the attempt (and reads its inputs), one records
        its outcome with its log lines; the heartbeat flushes longer nodes' logs.
        ``mirror`` also receives every captured line as it is written (the Prefect
        backend sends them to Prefect's run logger, for the Prefect UI). ``secrets``
        replaces the runtime's secret source for this attempt (the Prefect backend
        adds its Secret blocks). Every secret the node reveals is masked in what
        this attempt records: log lines, the error and the output.
        """
        start = self._patiently(
            f"recording the start of {job_run_id}/{node_id}",
            lambda: self.store.start_attempt(
                job_run_id=job_run_id, node_id=node_id, attempt=attempt
            ),
        )
        if not start.outcome.applied or start.spec is None:
            return AttemptResult(Outcome.NOT_RUN)
        spec = start.spec
        node_type = self.node_types[spec.type]
        redactor = Redactor()
        resolver = SecretResolver(
            secrets or self.secrets,
            redactor,
            policy=node_type.policy.secrets,
            workspace_id=start.workspace_id,
        )
        # Masking covers the whole run: a value another node of the run resolved (an API
        # token an upstream node sent, quoted back here by a cast error) is masked in this
        # attempt's records too, as is every secret this worker's environment holds.
        resolver.mask_too(secret_names_in(start.run_configs) | set(names_in_environment()))
        context = NodeContext(
            job_run_id=job_run_id,
            node_id=node_id,
            attempt=attempt,
            parameters=start.parameters,
            upstream_outputs=start.upstream_outputs,
            sandboxed=start.sandboxed,
            logger=logging.getLogger(f"{NODE_LOGGER}.{spec.type}"),
            artifacts=None
            if self.artifacts is None
            else self.artifacts.for_attempt(
                job_run_id=job_run_id, node_id=node_id, attempt=attempt, sandboxed=start.sandboxed
            ),
            secrets=resolver,
            policy=node_type.policy,
        )
        sink = _LogSink(job_run_id, node_id, attempt, mirror, redactor)
        _ensure_capture()
        output: object = None
        error: str | None = None
        with self._heartbeat(context, sink), _capturing(sink):
            try:
                # Inside the attempt: an upstream output whose file is gone fails it.
                context.upstream_outputs = {
                    upstream: self._inline(value)
                    for upstream, value in start.upstream_outputs.items()
                }
                config = node_type.parse_config(spec.config, workspace_id=start.workspace_id)
                limits = AttemptLimits.resolve(spec.limits, node_type.policy)
                if limits is None:
                    output = node_type.run(config, context)
                else:
                    output = _run_in_own_process(node_type, config, context, sink, resolver, limits)
            except (Exception, SystemExit) as exc:  # a node calling sys.exit() fails its attempt
                error = bounded(redactor.redact(_describe(exc)))
                if isinstance(exc, NodeCancelledError) or context.cancelled():
                    status, outcome = NodeStatus.CANCELLED, Outcome.CANCELLED
                else:
                    if isinstance(exc, LimitExceededError):
                        sink.add("ERROR", str(exc))  # the reason says it all; no traceback
                    elif not isinstance(exc, NodeProcessError):
                        sink.add("ERROR", _traceback_text(exc))
                    final = attempt >= spec.retries + 1
                    status = NodeStatus.FAILED if final else NodeStatus.RETRYING
                    outcome = Outcome.FAILED if final else Outcome.RETRY
            else:
                error, status, outcome = None, NodeStatus.SUCCEEDED, Outcome.SUCCEEDED
        _release_unused_memory()
        stored_output = (
            self._bounded_output(redactor.redact_value(_jsonable(output)), context)
            if outcome is Outcome.SUCCEEDED
            else None
        )
        logs = sink.drain()
        recorded = self._patiently(
            f"recording the outcome of {job_run_id}/{node_id}",
            lambda: self.store.record_node(
                job_run_id=job_run_id,
                node_id=node_id,
                attempt=attempt,
                status=status,
                error=error,
                output=stored_output,
                logs=logs,
            ),
        )
        if not recorded.applied and recorded.node_status is NodeStatus.CANCELLED:
            return AttemptResult(Outcome.CANCELLED, error)
        ready = {
            child: NodeSpec.model_validate(start.plan_nodes[child]) for child in recorded.ready
        }
        return AttemptResult(outcome, error, recorded.skipped, ready)

    def _bounded_output(self, output: Any, context: NodeContext) -> Any:
        """The output to record: itself, or a reference to its JSON in the artifact store
        when it is larger than ``max_output_bytes`` (bounds.py)."""
        if output is None or context.artifacts is None:
            return output
        data = json.dumps(output, separators=(",", ":"), allow_nan=False).encode()
        if len(data) <= self.max_output_bytes:
            return output
        uri = context.artifacts.put_json(data)
        digest = hashlib.sha256(data).hexdigest()
        return {STORED_OUTPUT_KEY: {"uri": uri, "bytes": len(data), "sha256": digest}}

    def _inline(self, output: Any) -> Any:
        """An upstream output as its node returned it: a stored one is read back."""
        stored = stored_output_of(output)
        if stored is None or self.artifacts is None:
            return output
        try:
            return json.loads(self.artifacts.read_bytes(str(stored["uri"])))
        except FileNotFoundError:
            raise NodeFailedError(
                f"an upstream output ({stored['uri']}) is no longer in the artifact store "
                "(removed after FIGWAY_ARTIFACT_RETENTION_HOURS?)"
            ) from None

    def _patiently(self, what: str, write: Callable[[], T]) -> T:
        """``write()``, tried again with backoff while the database is unreachable.

        Every write here is idempotent (the journal's key), so one that reached the
        database before its connection broke is refused when repeated, not doubled.
        """
        deadline = time.monotonic() + self.store_patience_seconds
        wait = 0.5
        while True:
            try:
                return write()
            except StoreUnavailableError as exc:
                if time.monotonic() + wait > deadline:
                    raise
                log.warning("%s: %s; trying again in %.1f s", what, exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, 5.0)

    @contextmanager
    def _heartbeat(self, context: NodeContext, sink: _LogSink) -> Iterator[None]:
        """Beat while the node runs: proves the worker alive, flushes logs, relays kills."""

        def beat() -> None:
            # Complete lines only: a line half printed is masked whole at the end.
            lines = sink.drain(partial=False)
            try:
                self.store.append_logs(lines)
                lines = []
                alive = self.store.heartbeat(
                    job_run_id=context.job_run_id,
                    node_id=context.node_id,
                    attempt=context.attempt,
                )
            except FigwayError as exc:
                sink.put_back(lines)  # kept for the next beat, not lost with the database
                log.warning(
                    "heartbeat for %s/%s failed: %s", context.job_run_id, context.node_id, exc
                )
                return
            if not alive:
                context.cancel_event.set()

        with self._heartbeats.beating(beat):
            yield


def _run_in_own_process(
    node_type: NodeType,
    config: NodeConfig,
    context: NodeContext,
    sink: _LogSink,
    resolver: SecretResolver,
    limits: AttemptLimits,
) -> object:
    """Run the node in a process of its own held to ``limits`` (see limits.py).

    The node's process asks this one for its secrets (this one holds the clients, a
    Prefect one among them, that a forked process cannot use) and masks what it sends
    with its own redactor: log lines as they are written, then the output or the
    error. This process records them as if the node had run here.
    """
    source = resolver.source
    redactor = resolver.redactor

    def body(channel: Channel) -> tuple[str, Any]:
        sink.forward_to(channel.send)
        _log_only_to_sink()
        redactor.after_fork()
        resolver.source = _RelayedSecrets(channel, source)
        try:
            output = node_type.run(config, context)
        except MemoryError:
            raise  # limits.py names it once the node's memory is let go
        except (Exception, SystemExit) as exc:
            sink.add("ERROR", _traceback_text(exc))
            cancelled = isinstance(exc, NodeCancelledError)
            outcome: tuple[str, Any] = (
                "cancelled" if cancelled else "raised",
                redactor.redact(_describe(exc)),
            )
        else:
            outcome = ("succeeded", redactor.redact_value(_jsonable(output)))
        for record in sink.drain():
            channel.send(record)
        return outcome

    kind, value = run_limited(
        body, limits, receive=sink.accept, answer=source.get, cancelled=context.cancel_event
    )
    if kind == "cancelled":
        raise NodeCancelledError(value)
    if kind == "raised":
        raise NodeProcessError(value)
    return value


class _RelayedSecrets:
    """A node's own process's secret source: each one asked of the attempt's process."""

    def __init__(self, channel: Channel, source: SecretSource) -> None:
        self._channel = channel
        self._source = source

    def get(self, name: str) -> str | None:
        value = self._channel.ask(name)
        return value if isinstance(value, str) else None

    def describe(self, name: str) -> str:
        return self._source.describe(name)


def _release_unused_memory() -> None:
    """Hand the memory of a finished node's tables back to the system.

    Arrow's allocator keeps freed blocks for reuse; a process that runs one node
    after another (a Prefect flow run, the embedded default) would otherwise carry
    the largest node's peak into the next.
    """
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()


def _describe(exc: BaseException) -> str:
    if isinstance(
        exc, NodeFailedError | NodeCancelledError | SecretMissingError | SecretRefusedError
    ):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _traceback_text(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc)).rstrip()
    except SystemError:
        # CPython 3.11 can fail formatting tracebacks in several threads at once (gh-106905).
        return f"{type(exc).__name__}: {exc} (traceback unavailable)"


def _jsonable(value: Any) -> Any:
    """The output as stored: JSON as is, anything else (NaN included) as its repr."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


# -- log capture -----------------------------------------------------------------------
#
# Nodes may run in threads of one process (the embedded default), so capture is
# per thread: a context variable names the sink of the node running here, and
# process-wide stdout/stderr proxies and a logging handler write to it.

_current_sink: contextvars.ContextVar[_LogSink | None] = contextvars.ContextVar(
    "figway_log_sink", default=None
)
_install_lock = threading.Lock()


class _LogSink:
    def __init__(
        self,
        job_run_id: str,
        node_id: str,
        attempt: int,
        mirror: LogMirror | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.job_run_id = job_run_id
        self.node_id = node_id
        self.attempt = attempt
        self.mirror = mirror
        self.redactor = redactor or Redactor()
        self._lock = threading.Lock()
        self._records: list[LogRecord] = []
        self._partial = {"stdout": "", "stderr": ""}
        self._forward: Callable[[LogRecord], None] | None = None

    def add(self, level: str, message: str) -> None:
        message = bounded(self.redactor.redact(message))
        record = LogRecord(self.job_run_id, self.node_id, self.attempt, utcnow(), level, message)
        if self._forward is not None:
            self._forward(record)
            return
        self.accept(record)

    def forward_to(self, send: Callable[[LogRecord], None]) -> None:
        """In a node's own process: send each line on as it is written (see limits.py)."""
        self._lock = threading.Lock()  # a copy of the forking process's, perhaps held there
        self.mirror = None  # the attempt's process mirrors what it receives
        self._forward = send

    def accept(self, record: LogRecord) -> None:
        """Keep a line (written here, or relayed from the node's own process)."""
        with self._lock:
            self._records.append(record)
        if self.mirror is not None:
            token = _current_sink.set(None)  # what the mirror logs is not the node's output
            try:
                self.mirror(record)
            finally:
                _current_sink.reset(token)

    def write_stream(self, stream: str, text: str) -> None:
        with self._lock:
            buffered = self._partial[stream] + text
            *lines, self._partial[stream] = buffered.split("\n")
            if len(self._partial[stream]) > 4 * MAX_TEXT_CHARS:
                # A line that never ends is kept as a (bounded) line of its own now, not
                # held in memory until it does.
                lines.append(self._partial[stream])
                self._partial[stream] = ""
        level = "INFO" if stream == "stdout" else "WARNING"
        for line in lines:
            self.add(level, line)

    def put_back(self, records: list[LogRecord]) -> None:
        """Return drained lines that could not be stored, ahead of the newer ones."""
        if records:
            with self._lock:
                self._records[:0] = records

    def drain(self, *, partial: bool = True) -> list[LogRecord]:
        """The lines captured so far; ``partial`` also takes lines not ended yet."""
        with self._lock:
            for stream, rest in self._partial.items():
                if rest and partial:
                    level = "INFO" if stream == "stdout" else "WARNING"
                    self._records.append(
                        LogRecord(
                            self.job_run_id,
                            self.node_id,
                            self.attempt,
                            utcnow(),
                            level,
                            bounded(self.redactor.redact(rest)),
                        )
                    )
                    self._partial[stream] = ""
            records, self._records = self._records, []
        return records


class _StreamProxy(io.TextIOBase):
    """Stands in for sys.stdout/stderr: a node's writes go to its sink, others pass through."""

    def __init__(self, name: str, original: TextIO) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        sink = _current_sink.get()
        if sink is None:
            return self._original.write(text)
        sink.write_stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        if _current_sink.get() is None:
            self._original.flush()

    def isatty(self) -> bool:
        return self._original.isatty()

    def fresh_passage(self) -> None:
        """Pass writes through a new writer on the same file (after a fork: the old
        writer's lock may be held by a thread that the fork left behind)."""
        try:
            descriptor = self._original.fileno()
        except (OSError, ValueError):
            return  # not a file (a test runner's capture): nothing shared to wait on
        self._original = open(  # noqa: SIM115 - lives as long as the node's process
            descriptor, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False
        )

    def fileno(self) -> int:
        return self._original.fileno()


class _SinkHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sink = _current_sink.get()
        if sink is not None:
            sink.add(record.levelname, self.format(record))


def _ensure_capture() -> None:
    """Put the proxies and the handler in place; cheap when they already are.

    Checked on every attempt, not once: whatever replaces sys.stdout after us (a
    test runner's capture, an embedding application) would otherwise silently
    switch off node output capture.
    """
    with _install_lock:
        if not isinstance(sys.stdout, _StreamProxy):
            sys.stdout = _StreamProxy("stdout", sys.stdout)
        if not isinstance(sys.stderr, _StreamProxy):
            sys.stderr = _StreamProxy("stderr", sys.stderr)
        if not getattr(logging.getLogRecordFactory(), "figway_masks", False):
            logging.setLogRecordFactory(_masking_factory(logging.getLogRecordFactory()))
        root = logging.getLogger()
        if not any(isinstance(h, _SinkHandler) for h in root.handlers):
            handler = _SinkHandler(level=logging.INFO)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            root.addHandler(handler)
        logging.getLogger(NODE_LOGGER).setLevel(logging.INFO)


def _log_only_to_sink() -> None:
    """In a node's own process: its log lines and output go to its sink alone.

    Every other handler (Prefect's console, a file) and the streams underneath
    write through locks that another thread of the forking process may have held
    at the fork; the first line a node logs would then wait on that lock for ever.
    The attempt's process hands each relayed line to those handlers itself.
    """
    manager = logging.Logger.manager
    loggers = [logging.getLogger(), *manager.loggerDict.values()]
    for logger in loggers:
        if not isinstance(logger, logging.Logger):
            continue  # a placeholder: it holds no handler
        for handler in list(logger.handlers):
            if not isinstance(handler, _SinkHandler):
                logger.removeHandler(handler)
    for proxy in (sys.stdout, sys.stderr):
        if isinstance(proxy, _StreamProxy):
            proxy.fresh_passage()


def _masking_factory(
    make: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """Log records made while a node runs carry its secrets masked, for every handler.

    The sink masks what it stores, but a record also goes to the process's other
    handlers (the console of `figway serve`, Prefect's): the record itself must hold
    no secret. Records made outside a node are left alone.
    """

    def masked(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        sink = _current_sink.get()
        if sink is None or not sink.redactor.active():
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it later, as usual
            return record
        record.msg, record.args = sink.redactor.redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = sink.redactor.redact(
                "".join(traceback.format_exception(*record.exc_info)).rstrip()
            )
        return record

    masked.figway_masks = True  # type: ignore[attr-defined]
    return masked


@contextmanager
def _capturing(sink: _LogSink) -> Iterator[None]:
    token = _current_sink.set(sink)
    try:
        yield
    finally:
        _current_sink.reset(token)
