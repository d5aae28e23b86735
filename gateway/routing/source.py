"""Where the rules in force come from, and putting a changed file in force while serving.

The file is read and hashed every poll (it is small), so an edit, a ``mv``
over it or a ConfigMap update is picked up within
``FIGWAY_ROUTING_RELOAD_SECONDS`` with no signal and no restart. A file that
fails its checks is refused whole; the version in force stays and the refusal
is shown on ``GET /routing/rules`` and in the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backends.model.backend_names import LEGACY_BACKEND
from backends.model.errors import FigwayError, RulesInvalidError, RulesProblem
from backends.store import utcnow
from backends.store.routing_records import RoutingRecords
from gateway.routing.loading import RulesDocument, parse_rules, read_rules
from gateway.routing.router import Router

__all__ = ["DEFAULT_RULES_FILE", "RulesRefusal", "RulesSource", "builtin_rules"]

log = logging.getLogger(__name__)

#: Read from the working directory when FIGWAY_ROUTING_RULES is not set.
DEFAULT_RULES_FILE = Path("routing_rules.yaml")


def builtin_rules(default_backend: str) -> RulesDocument:
    """The rules in force when there is no file: every run to ``default_backend``."""
    phase = 1 if default_backend == LEGACY_BACKEND else 2
    content = f"phase: {phase}\ndefault: {default_backend}\nrules: []\n"
    return parse_rules(content, source="built-in (no routing rules file)")


@dataclass(frozen=True)
class RulesRefusal:
    """The last file refused: which version, when, and every problem in it."""

    version: str | None  # None: the file could not be read
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
        on_reload: Callable[[bool], object] | None = None,
    ) -> None:
        self.router = router
        self.records = records
        self.path = path
        # Told of each file read while serving: True applied, False refused.
        self.on_reload = on_reload
        self.applied_at: datetime = utcnow()
        self.refusal: RulesRefusal | None = None
        self._seen: str | None = None  # the version of the content last read
        self._lock = threading.Lock()  # one reload at a time (the poller and POST /reload)

    @classmethod
    def start(
        cls,
        *,
        records: RoutingRecords,
        configured: Path | None,
        default_backend: str,
        on_reload: Callable[[bool], object] | None = None,
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
            source = cls(router=Router(document), records=records, path=None, on_reload=on_reload)
            source._record(document)
            return source
        try:
            document = read_rules(path)
        except RulesInvalidError as refused:
            latest = records.latest_applied()
            if latest is None:
                raise
            version, last_good = latest
            log.error("%s\nserving the rules last applied, version %s", refused, version)
            source = cls(
                router=Router(parse_rules(last_good, source=f"{path} (version {version})")),
                records=records,
                path=path,
                on_reload=on_reload,
            )
            source._seen = refused.version
            source._refuse(refused)
            return source
        source = cls(router=Router(document), records=records, path=path, on_reload=on_reload)
        source._seen = document.version
        source._record(document)
        source._log_applied(document)
        return source

    def reload_if_changed(self) -> bool:
        """Read the file; put it in force if its content changed. True when it did.

        The file is small, so it is read and hashed every time: an edit that keeps
        its size and modification time (within the clock's resolution) is still seen.
        """
        return self._reload(only_if_changed=True)

    def reload(self, *, by: str | None = None) -> bool:
        """Read the file now, changed or not (``POST /routing/reload``); ``by`` (an API
        key's id) is recorded with the version it puts in force."""
        return self._reload(only_if_changed=False, by=by)

    def _reload(self, *, only_if_changed: bool, by: str | None = None) -> bool:
        if self.path is None:
            return False
        with self._lock:
            try:
                document = read_rules(self.path)
            except RulesInvalidError as refused:
                if only_if_changed and self.refusal is not None and refused.version == self._seen:
                    return False  # the same bad file, or still unreadable: said already
                self._seen = refused.version
                self._refuse(refused)
                self._tell(applied=False)
                return False
            self._seen = document.version
            self.refusal = None
            if document.version == self.version:
                return False
            self.router.install(document)
            self.applied_at = utcnow()
            self._record(document, by=by)
            self._log_applied(document)
            self._tell(applied=True)
            return True

    def _tell(self, *, applied: bool) -> None:
        if self.on_reload is not None:
            self.on_reload(applied)

    def _refuse(self, refused: RulesInvalidError) -> None:
        self.refusal = RulesRefusal(refused.version, utcnow(), refused.problems)
        log.error("%s\nthe rules in force stay at version %s", refused, self.version)

    def _log_applied(self, document: RulesDocument) -> None:
        log.info(
            "routing rules version %s in force (phase %d, %d rules) from %s",
            document.version,
            document.rules.phase,
            len(document.rules.rules),
            document.source,
        )

    @property
    def version(self) -> str:
        return self.router.table.version

    @property
    def document(self) -> RulesDocument:
        return self.router.table.document

    def _record(self, document: RulesDocument, *, by: str | None = None) -> None:
        source = document.source if by is None else f"{document.source} (reloaded by {by})"
        try:
            self.records.record_applied(
                version=document.version,
                content=document.content,
                phase=document.rules.phase,
                source=source[:500],
            )
        except FigwayError as exc:  # the rules are in force; only the history misses this one
            log.warning("could not record rules version %s: %s", document.version, exc)
