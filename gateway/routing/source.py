"""Where the rules in force come from, and putting a changed file in force while serving.

The file is polled (size and modification time, then a content hash), so an
edit, a ``mv`` over it or a ConfigMap update is picked up within
``FIGWAY_ROUTING_RELOAD_SECONDS`` with no signal and no restart. A file that
fails its checks is refused whole; the version in force stays and the refusal
is shown on ``GET /routing/rules`` and in the log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backends.errors import FigwayError
from backends.store import utcnow
from backends.store.routing import RoutingRecords
from gateway.routing.loading import (
    RulesDocument,
    RulesInvalid,
    RulesProblem,
    parse_rules,
    rules_version,
)
from gateway.routing.router import Router

__all__ = ["DEFAULT_RULES_FILE", "RulesRefusal", "RulesSource", "builtin_rules"]

log = logging.getLogger(__name__)

#: Read from the working directory when FIGWAY_ROUTING_RULES is not set.
DEFAULT_RULES_FILE = Path("routing_rules.yaml")


def builtin_rules(default_backend: str) -> RulesDocument:
    """The rules in force when there is no file: every run to ``default_backend``."""
    phase = 1 if default_backend == "rq" else 2
    content = f"phase: {phase}\ndefault: {default_backend}\nrules: []\n"
    return parse_rules(content, source="built-in (no routing rules file)")


@dataclass(frozen=True)
class RulesRefusal:
    """The last file refused: which version, when, and every problem in it."""

    version: str
    at: datetime
    problems: tuple[RulesProblem, ...]


class RulesSource:
    """Keeps ``router`` on the latest good version of the rules file."""

    def __init__(
        self,
        *,
        router: Router,
        records: RoutingRecords,
        path: Path | None,
    ) -> None:
        self.router = router
        self.records = records
        self.path = path
        self.applied_at: datetime = utcnow()
        self.refusal: RulesRefusal | None = None
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read
        self._lock = threading.Lock()  # one reload at a time (the poller and POST /reload)

    @classmethod
    def start(
        cls,
        *,
        records: RoutingRecords,
        configured: Path | None,
        default_backend: str,
    ) -> RulesSource:
        """Load the rules at start-up; raises when there is no good version to serve.

        A configured file must exist. If the file is bad but a gateway applied a
        good version before, that version is served (and the refusal shown).
        """
        if configured is not None and not configured.is_file():
            raise FigwayError(
                f"FIGWAY_ROUTING_RULES points at {configured}, which is not a file; "
                "fix the path or unset it to use ./routing_rules.yaml"
            )
        path = configured or (DEFAULT_RULES_FILE if DEFAULT_RULES_FILE.is_file() else None)
        if path is None:
            document = builtin_rules(default_backend)
            source = cls(router=Router(document), records=records, path=None)
            source._record(document)
            return source
        content = path.read_text()
        try:
            document = parse_rules(content, source=str(path))
        except RulesInvalid as refused:
            latest = records.latest_applied()
            if latest is None:
                raise
            version, last_good = latest
            log.error("%s\nserving the rules last applied, version %s", refused, version)
            source = cls(
                router=Router(parse_rules(last_good, source=f"{path} (version {version})")),
                records=records,
                path=path,
            )
            source.refusal = RulesRefusal(rules_version(content), utcnow(), refused.problems)
            source._seen = _stat(path)
            return source
        source = cls(router=Router(document), records=records, path=path)
        source._seen = _stat(path)
        source._record(document)
        log.info(
            "routing rules version %s in force (phase %d, %d rules) from %s",
            document.version,
            document.rules.phase,
            len(document.rules.rules),
            path,
        )
        return source

    def reload_if_changed(self) -> bool:
        """Read the file again if it changed; True when a new version went into force."""
        if self.path is None:
            return False
        with self._lock:
            try:
                seen = _stat(self.path)
            except OSError as exc:
                # Mid-rename, or removed by mistake: keep serving what is in force.
                log.warning("cannot read routing rules %s: %s", self.path, exc)
                return False
            if seen == self._seen:
                return False
            self._seen = seen
            return self._reload()

    def reload(self) -> bool:
        """Read the file now, changed or not (``POST /routing/reload``)."""
        if self.path is None:
            return False
        with self._lock:
            self._seen = _stat(self.path)
            return self._reload()

    def _reload(self) -> bool:
        assert self.path is not None
        content = self.path.read_text()
        try:
            document = parse_rules(content, source=str(self.path))
        except RulesInvalid as refused:
            self.refusal = RulesRefusal(rules_version(content), utcnow(), refused.problems)
            log.error("%s\nthe rules in force stay at version %s", refused, self.version)
            return False
        self.refusal = None
        if document.version == self.version:
            return False
        self.router.install(document)
        self.applied_at = utcnow()
        self._record(document)
        log.info(
            "routing rules version %s in force (phase %d, %d rules) from %s",
            document.version,
            document.rules.phase,
            len(document.rules.rules),
            self.path,
        )
        return True

    @property
    def version(self) -> str:
        return self.router.table.version

    @property
    def document(self) -> RulesDocument:
        return self.router.table.document

    def _record(self, document: RulesDocument) -> None:
        try:
            self.records.record_applied(
                version=document.version,
                content=document.content,
                phase=document.rules.phase,
                source=document.source,
            )
        except FigwayError as exc:  # the rules are in force; only the history misses this one
            log.warning("could not record rules version %s: %s", document.version, exc)


def _stat(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size
