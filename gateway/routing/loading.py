"""Reading and checking a rules file before it may take effect.

Every problem is reported at once, each with its line, so one edit fixes a
file. A file with any problem is refused whole: the rules in force stay.
"""

from __future__ import annotations

import fnmatch
import hashlib
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike as _PathLike
from typing import Any

import yaml
from pydantic import ValidationError

from backends.model.backend_names import BACKEND_NAMES, LEGACY_BACKEND
from backends.model.errors import RulesInvalidError, RulesProblem
from gateway.routing.rules import (
    PATTERN_FIELDS,
    BackendSwitch,
    Guard,
    Match,
    Promote,
    Rule,
    RulesFile,
    is_literal,
)

__all__ = [
    "RulesDocument",
    "backend_references",
    "parse_rules",
    "read_rules",
    "rules_version",
]

PathLike = str | _PathLike[str]

# libyaml's loader when PyYAML was built with it: ten times faster on a long file.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class RulesDocument:
    """A checked rules file: its rules, where each rule starts, and its version."""

    rules: RulesFile
    version: str  # the first 12 hex digits of the content's SHA-256
    content: str
    source: str
    rule_lines: tuple[int, ...]


def rules_version(content: str) -> str:
    """The version figway records for a rules file: a hash of its exact content.

    >>> rules_version("phase: 1\\ndefault: rq\\n")
    '453e3998d4a6'
    """
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def read_rules(path: PathLike, *, known_backends: Sequence[str] = BACKEND_NAMES) -> RulesDocument:
    """Read and check a rules file; an unreadable file is refused like a bad one."""
    try:
        content = pathlib.Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        problem = RulesProblem(None, "file", f"cannot read it: {exc.strerror or exc}")
        raise RulesInvalidError(str(path), [problem]) from None
    except UnicodeDecodeError as exc:
        problem = RulesProblem(None, "file", f"not UTF-8 text (byte {exc.start} of the file)")
        raise RulesInvalidError(str(path), [problem]) from None
    return parse_rules(content, source=str(path), known_backends=known_backends)


def parse_rules(
    content: str, *, source: str, known_backends: Sequence[str] = BACKEND_NAMES
) -> RulesDocument:
    """Parse and check a rules file; raises :class:`RulesInvalidError` with every problem.

    >>> parse_rules("phase: 3\\ndefault: rq\\n", source="example").rules.default
    Traceback (most recent call last):
    ...
    backends.model.errors.RulesInvalidError: example: 1 problem(s), nothing applied:
      line 2: default: phase 3 (full migration) routes nothing to rq
    """
    try:
        return _parse(content, source, known_backends)
    except RulesInvalidError as refused:
        refused.version = rules_version(content)
        raise


def _parse(content: str, source: str, known_backends: Sequence[str]) -> RulesDocument:
    try:
        root = yaml.compose(content, Loader=_Loader)
        raw = yaml.load(content, Loader=_Loader)  # a safe loader, C or Python
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesInvalidError(
            source, [RulesProblem(line, "file", f"not valid YAML: {problem}")]
        ) from None
    if not isinstance(root, yaml.MappingNode):
        raise RulesInvalidError(
            source, [RulesProblem(1, "file", "expected a mapping with phase, default and rules")]
        )
    lines = _LineFinder(root)
    problems = list(_duplicate_keys(root))
    # Each rule is checked on its own, so one bad rule does not hide the others' problems.
    raw_rules = raw.get("rules") or []  # `rules:` with every rule commented out is no rules
    top: RulesFile | None = None
    try:
        top = RulesFile.model_validate({**raw, "rules": []})
    except ValidationError as exc:
        problems.extend(_schema_problems(exc, (), raw, lines))
    valid: list[tuple[int, Rule]] = []
    if not isinstance(raw_rules, list):
        problems.append(RulesProblem(lines.line_of(("rules",)), "rules", "expected a list"))
        raw_rules = []
    for index, raw_rule in enumerate(raw_rules):
        try:
            valid.append((index, Rule.model_validate(raw_rule)))
        except ValidationError as exc:
            problems.extend(_schema_problems(exc, ("rules", index), raw, lines))
            problems.extend(
                _unknown_backends_in(raw_rule, ("rules", index), raw, lines, known_backends)
            )
    if top is None:  # the whole-file checks cannot run; at least name unknown backends
        for index, _ in valid:
            problems.extend(
                _unknown_backends_in(raw_rules[index], ("rules", index), raw, lines, known_backends)
            )
    else:
        checked = top.model_copy(update={"rules": [rule for _, rule in valid]})
        for path, message in _whole_file_problems(checked, known_backends):
            if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
                path = ("rules", valid[path[1]][0], *path[2:])
            problems.append(RulesProblem(lines.line_of(path), _field(path, raw), message))
    if problems or top is None:
        raise RulesInvalidError(source, sorted(problems, key=lambda p: p.line or 0))
    rules = top.model_copy(update={"rules": [rule for _, rule in valid]})
    return RulesDocument(
        rules=rules,
        version=rules_version(content),
        content=content,
        source=source,
        rule_lines=tuple(lines.line_of(("rules", i)) or 0 for i in range(len(rules.rules))),
    )


def _schema_problems(
    exc: ValidationError, prefix: Path, raw: Any, lines: _LineFinder
) -> Iterator[RulesProblem]:
    for error in exc.errors():
        tags = [part for part in error["loc"] if _is_union_tag(part)]
        # A pattern may be a string or a list: pydantic reports why the value fails as
        # the other shape too, which only confuses.
        if tags and error["type"] in ("string_type", "list_type"):
            continue
        path = (*prefix, *(part for part in error["loc"] if not _is_union_tag(part)))
        yield RulesProblem(lines.line_of(path), _field(path, raw), _message(error, path))


def _message(error: Any, path: Path) -> str:
    """pydantic's message, said for a rules file: the keys allowed, no "Value error, "."""
    if error["type"] == "extra_forbidden":
        allowed = _ALLOWED_KEYS.get(_model_at(path[:-1]))
        listing = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"unknown key {path[-1]!r}{listing}"
    return str(error["msg"]).removeprefix("Value error, ")


def _model_at(path: Path) -> str:
    """Which part of the file a path is in: top, rule, match, guard or backend switch."""
    names = [part for part in path if isinstance(part, str)]
    if names[-1:] in (["match"], ["guard"], ["promote"]):
        return names[-1]
    if names == ["rules"]:
        return "rule"
    if names[:1] == ["backends"]:
        return "backend"
    return "top" if not names else ""


_ALLOWED_KEYS = {
    "top": tuple(RulesFile.model_fields),
    "rule": tuple(Rule.model_fields),
    "match": tuple(Match.model_fields),
    "guard": tuple(Guard.model_fields),
    "promote": tuple(Promote.model_fields),
    "backend": tuple(BackendSwitch.model_fields),
}


def _is_union_tag(part: object) -> bool:
    """pydantic names the branch of a union in an error's location: ``list[constrained-str]``."""
    return isinstance(part, str) and (part == "str" or "[" in part or "-" in part)


def _unknown_backends_in(
    raw_rule: Any, here: Path, raw: Any, lines: _LineFinder, known_backends: Sequence[str]
) -> Iterator[RulesProblem]:
    """Backend names in a rule that failed its schema, so its other problems are not hidden."""
    if not isinstance(raw_rule, dict):
        return
    for option in ("backend", "otherwise", "shadow", "fallback"):
        value = raw_rule.get(option)
        if isinstance(value, str) and value not in known_backends:
            path = (*here, option)
            yield RulesProblem(
                lines.line_of(path), _field(path, raw), _unknown(value, known_backends)
            )


# -- checks that need the whole file -----------------------------------------------------

Path = tuple[str | int, ...]


def _whole_file_problems(
    rules: RulesFile, known_backends: Sequence[str]
) -> Iterator[tuple[Path, str]]:
    for backend in rules.backends:
        if backend not in known_backends:
            yield ("backends", backend), _unknown(backend, known_backends)
    seen: set[str] = set()
    for path, backend in backend_references(rules):
        if backend not in known_backends:
            yield path, _unknown(backend, known_backends)
        elif not rules.enabled(backend):
            yield path, f"backend {backend!r} is disabled under `backends`"
        elif rules.phase == 3 and backend == LEGACY_BACKEND:
            if path[-1] == "rollback_to":
                yield (
                    path,
                    (
                        "phase 3 (full migration) routes nothing to rq, and a guard rolls back "
                        "to rq unless `rollback_to` says otherwise: drop the guard"
                    ),
                )
            else:
                yield path, "phase 3 (full migration) routes nothing to rq"
    if rules.phase == 1 and rules.default in known_backends and rules.default != LEGACY_BACKEND:
        yield (
            ("default",),
            "phase 1 (parallel deployment) keeps `default: rq`; "
            "move the default in phase 2 or later",
        )
    earlier_rules = _EarlierRules()
    for index, rule in enumerate(rules.rules):
        here: Path = ("rules", index)
        if rule.id in seen:
            yield (*here, "id"), f"rule id {rule.id!r} is used by an earlier rule too"
        seen.add(rule.id)
        yield from _rule_problems(rules, rule, here)
        covering = next(
            (
                earlier
                for earlier in earlier_rules.that_may_cover(rule)
                if _covers(earlier.match, rule.match)
            ),
            None,
        )
        if covering is not None:
            yield (
                (*here, "match"),
                f"unreachable: rule {covering.id!r} comes first and matches every run "
                "this rule matches",
            )
        earlier_rules.add(rule)


class _EarlierRules:
    """The rules seen so far, indexed so a long file is not checked pair by pair.

    A rule naming exact workflow ids can only cover a later rule naming some of
    the same ids; only rules without exact ids must be tried against every rule.
    """

    def __init__(self) -> None:
        self._by_workflow: dict[str, list[Rule]] = {}
        self._wide: list[Rule] = []
        self._order: dict[str, int] = {}

    def add(self, rule: Rule) -> None:
        self._order.setdefault(rule.id, len(self._order))
        workflows = rule.match.patterns("workflow_id")
        if workflows is not None and all(is_literal(w) for w in workflows):
            for workflow_id in workflows:
                self._by_workflow.setdefault(workflow_id, []).append(rule)
        else:
            self._wide.append(rule)

    def that_may_cover(self, rule: Rule) -> list[Rule]:
        workflows = rule.match.patterns("workflow_id") or ()
        if not all(is_literal(w) for w in workflows):
            workflows = ()  # a glob is covered only by globs or by no constraint at all
        candidates = {id(r): r for w in workflows for r in self._by_workflow.get(w, ())}
        candidates.update((id(r), r) for r in self._wide)
        return sorted(candidates.values(), key=lambda r: self._order.get(r.id, 0))


def _rule_problems(rules: RulesFile, rule: Rule, here: Path) -> Iterator[tuple[Path, str]]:
    if not rule.split:
        for option in ("otherwise", "sticky_by", "salt"):
            if getattr(rule, option) is not None:
                yield (*here, option), f"`{option}` only applies with `percent` or `steps`"
    elif (rule.otherwise or rules.default) == rule.backend:
        yield (
            (*here, "steps" if rule.steps is not None else "percent"),
            f"both sides of the split are {rule.backend!r}; set `otherwise` to the other backend",
        )
    yield from _step_problems(rule, here)
    if rule.shadow is not None and rule.shadow == rule.backend:
        yield (*here, "shadow"), "the shadow backend must differ from `backend`"
    if rule.fallback is not None and rule.fallback == rule.backend:
        yield (*here, "fallback"), "the fallback must differ from `backend`"
    if rule.guard is not None and rule.guard.rollback_to == rule.backend:
        yield (
            (*here, "guard", "rollback_to"),
            f"the guard rolls back to {rule.backend!r}, which is already this rule's backend",
        )


def _step_problems(rule: Rule, here: Path) -> Iterator[tuple[Path, str]]:
    """A rollout in steps needs evidence to advance on, and owns the rule's percentage."""
    if rule.steps is None:
        if rule.promote is not None:
            yield (*here, "promote"), "`promote` only applies with `steps`"
        return
    if rule.percent is not None:
        yield (
            (*here, "percent"),
            "`percent` and `steps` both set the share: the rollout's step is the percentage, "
            "drop `percent`",
        )
    if rule.guard is None and rule.promote is None:
        yield (
            (*here, "steps"),
            "steps with no guard and no promote: nothing would judge a step; add `promote` "
            "(what advances it) or a `guard` (whose figures then do)",
        )


def backend_references(rules: RulesFile) -> Iterator[tuple[Path, str]]:
    """Every place the file names a backend, with its path (``("rules", 2, "fallback")``)."""
    yield ("default",), rules.default
    for index, rule in enumerate(rules.rules):
        here: Path = ("rules", index)
        yield (*here, "backend"), rule.backend
        for option in ("otherwise", "shadow", "fallback"):
            value = getattr(rule, option)
            if value is not None:
                yield (*here, option), value
        if rule.guard is not None:
            yield (*here, "guard", "rollback_to"), rule.guard.rollback_to


def _unknown(backend: str, known_backends: Sequence[str]) -> str:
    return f"unknown backend {backend!r}; use one of {', '.join(known_backends)}"


def _covers(first: Match, later: Match) -> bool:
    """True when every run ``later`` matches is matched by ``first`` (a provable subset)."""
    for name in PATTERN_FIELDS:
        wide, narrow = first.patterns(name), later.patterns(name)
        if wide is None:
            continue
        if narrow is None or not all(_pattern_covers(wide, p) for p in narrow):
            return False
    if not set(first.tags) <= set(later.tags):
        return False
    if first.registered_after is not None:
        return (
            later.registered_after is not None and later.registered_after >= first.registered_after
        )
    return True


def _pattern_covers(wide: Sequence[str], narrow: str) -> bool:
    return any(
        pattern == narrow
        or pattern == "*"
        or (is_literal(narrow) and fnmatch.fnmatchcase(narrow, pattern))
        for pattern in wide
    )


# -- locating problems in the file -------------------------------------------------------


class _LineFinder:
    """Maps a path of keys and indexes (as pydantic reports them) to a line of the file."""

    def __init__(self, root: yaml.MappingNode) -> None:
        self.root = root

    def line_of(self, path: Sequence[Any]) -> int | None:
        node: yaml.Node = self.root
        line = node.start_mark.line + 1
        for part in path:
            child = _child(node, part)
            if child is None:  # a missing key or a pydantic union tag: the parent's line
                break
            node, line = child
        return line


def _child(node: yaml.Node, part: Any) -> tuple[yaml.Node, int] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return value, key.start_mark.line + 1
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return item, item.start_mark.line + 1
    return None


def _duplicate_keys(node: yaml.Node, path: str = "") -> Iterator[RulesProblem]:
    """PyYAML keeps the last of two equal keys silently; in a rules file that hides a mistake."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            where = f"{path}.{key.value}" if path else str(key.value)
            if key.value in seen:
                yield RulesProblem(key.start_mark.line + 1, where, "this key is given twice")
            seen.add(key.value)
            yield from _duplicate_keys(value, where)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{index}]")


def _field(path: Sequence[Any], raw: Any) -> str:
    """``("rules", 2, "percent")`` -> ``rules[2] (canary).percent``: the index and the rule id."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
            if text == f"rules[{part}]":
                rule_id = _rule_id(raw, part)
                if rule_id:
                    text += f" ({rule_id})"
        else:
            text += f".{part}" if text else str(part)
    return text or "file"


def _rule_id(raw: Any, index: int) -> str | None:
    try:
        rule_id = raw["rules"][index]["id"]
    except (TypeError, KeyError, IndexError):
        return None
    return rule_id if isinstance(rule_id, str) else None
