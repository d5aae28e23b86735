"""Secrets: ``secret:NAME`` in a node's config, resolved only while the node runs.

A definition names a credential and never holds it. The name is resolved on
the worker, at the moment a node asks for it (``context.secrets.reveal``),
from:

- the environment: ``FIGWAY_SECRET_<NAME>`` (dashes become underscores), on
  every backend, and first, so a worker can override anything;
- Prefect Secret blocks named ``figway-<name>``, on the Prefect backend
  (``figway setup prefect --secrets-from-env`` stores them).

Every value revealed to a node is masked (``***``) in the node's log lines and
in its error message, so a node that prints a password, or a driver error
that quotes a connection string, does not put the value in the database.
Values shorter than :data:`MIN_MASKED_LENGTH` are not masked: masking every
``a`` in a log would make it unreadable. What is masked, besides the value itself:
its parts (a URL's password and query values, a bearer token, each line of a
multi-line key) and their common encodings (base64 in any alignment, URL-encoding,
hex). See ``docs/nodes.md`` for what masking does and does not promise.

A secret is used only as its policy allows (:class:`SecretsPolicy`, from the file
``FIGWAY_SECRETS_POLICY`` names): by which workspaces, for what (a database
connection, an HTTP URL or header, BigQuery credentials) and, sent over HTTP, to
which hosts. Without a policy file every secret may be used anywhere, as before
policies existed; with one, a secret it does not declare may not be used at all.
"""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backends.model.errors import SecretMissingError, SecretRefusedError

__all__ = [
    "MIN_MASKED_LENGTH",
    "SECRET_PREFIX",
    "ChainedSecrets",
    "EnvironmentSecrets",
    "Redactor",
    "SecretPolicy",
    "SecretResolver",
    "SecretSource",
    "SecretUse",
    "SecretsPolicy",
    "block_name",
    "checked_secret_name",
    "encodings_of",
    "environment_variable",
    "names_in_environment",
    "secret_name",
    "secret_names_in",
    "valid_secret_name",
]

SECRET_PREFIX = "secret:"
MIN_MASKED_LENGTH = 4
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENV_PREFIX = "FIGWAY_SECRET_"
#: Authorization schemes whose token is masked on its own too.
_AUTH_SCHEMES = {"bearer", "basic", "token", "apikey", "key"}


def secret_names_in(value: Any) -> set[str]:
    """Every ``secret:NAME`` reference anywhere in a config (nested), normalised.

    >>> sorted(secret_names_in({"url": "secret:API", "headers": {"X": "secret:tok"}, "n": 3}))
    ['api', 'tok']
    """
    if isinstance(value, str):
        name = secret_name(value)
        return {name} if name is not None and valid_secret_name(name) else set()
    children: Iterable[Any] = ()
    if isinstance(value, Mapping):
        children = value.values()
    elif isinstance(value, list | tuple):
        children = value
    return {name for child in children for name in secret_names_in(child)}


def secret_name(value: str) -> str | None:
    """The secret a config value refers to (normalised), or None for a plain value.

    >>> secret_name("secret:PG_sales"), secret_name("SECRET:pg"), secret_name("postgresql://h/db")
    ('pg-sales', 'pg', None)
    """
    if value[: len(SECRET_PREFIX)].lower() != SECRET_PREFIX:
        return None
    return value[len(SECRET_PREFIX) :].strip().lower().replace("_", "-")


def valid_secret_name(name: str) -> bool:
    """Names are what a Prefect block may be called: letters, digits and dashes."""
    return _NAME.fullmatch(name) is not None


def checked_secret_name(value: str) -> str | None:
    """The secret ``value`` refers to, or None for a plain value; ValueError for a bad name.

    What every config field that may hold ``secret:NAME`` checks when a workflow is defined.

    >>> checked_secret_name("secret:pg-sales"), checked_secret_name("https://h/x")
    ('pg-sales', None)
    """
    name = secret_name(value)
    if name is not None and not valid_secret_name(name):
        raise ValueError(
            f"secret name {name!r}: a reference is `secret:NAME`, NAME being letters, digits "
            "and dashes (at most 63)"
        )
    return name


def environment_variable(name: str) -> str:
    """Where the environment holds a secret.

    >>> environment_variable("pg-sales")
    'FIGWAY_SECRET_PG_SALES'
    """
    return _ENV_PREFIX + name.upper().replace("-", "_")


def block_name(name: str) -> str:
    """The Prefect Secret block that holds a secret.

    >>> block_name("pg-sales")
    'figway-pg-sales'
    """
    return f"figway-{name}"


def names_in_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Every secret the environment holds, by name (for storing them in Prefect)."""
    environ = dict(os.environ) if environ is None else environ
    return {
        variable[len(_ENV_PREFIX) :].lower().replace("_", "-"): value
        for variable, value in environ.items()
        if variable.startswith(_ENV_PREFIX) and len(variable) > len(_ENV_PREFIX)
    }


class SecretSource(Protocol):
    """Somewhere secrets live. ``get`` returns None when it does not hold ``name``."""

    def get(self, name: str) -> str | None: ...

    def describe(self, name: str) -> str:
        """Where this source looks for ``name``: the message when no source holds it."""
        ...


class EnvironmentSecrets:
    def get(self, name: str) -> str | None:
        return os.environ.get(environment_variable(name))

    def describe(self, name: str) -> str:
        return f"the environment variable {environment_variable(name)}"


class ChainedSecrets:
    """The first source that holds a secret wins."""

    def __init__(self, sources: Iterable[SecretSource]) -> None:
        self.sources = tuple(sources)

    def get(self, name: str) -> str | None:
        for source in self.sources:
            value = source.get(name)
            if value is not None:
                return value
        return None

    def describe(self, name: str) -> str:
        return " and ".join(source.describe(name) for source in self.sources)


class Redactor:
    """Masks every revealed value in text that leaves a node (logs, errors)."""

    MASK = "***"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: list[str] = []

    def add(self, value: str) -> None:
        candidates = {value}
        # A connection URL's password also appears on its own (and percent-decoded) in
        # driver errors and in what a node might print.
        try:
            parts = urlsplit(value)
            password = parts.password
            query_values = [v for values in parse_qs(parts.query).values() for v in values]
        except ValueError:
            password, query_values = None, []
        if password:
            candidates |= {password, unquote(password)}
        # An API key in a URL's query string, or the token of "Bearer <token>", is what a
        # server echoes back in an error.
        candidates |= set(query_values)
        words = value.split()
        if len(words) == 2 and words[0].lower() in _AUTH_SCHEMES:
            candidates.add(words[1])
        # Output is masked line by line (a node's stdout is split into lines), so a value
        # spanning lines (a private key) is also masked one line at a time.
        candidates |= {line.strip() for c in list(candidates) for line in c.splitlines()}
        # A server or a node may hand a value back encoded (an echoed header in base64,
        # a URL-encoded query value, a hex dump): those forms are masked too.
        candidates |= {
            encoded
            for candidate in list(candidates)
            if len(candidate) >= MIN_MASKED_LENGTH
            for encoded in encodings_of(candidate)
        }
        with self._lock:
            for candidate in candidates:
                if len(candidate) >= MIN_MASKED_LENGTH and candidate not in self._values:
                    self._values.append(candidate)
            self._values.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def after_fork(self) -> None:
        """In a forked process: a lock of its own (the forking process's may be held there)."""
        self._lock = threading.Lock()

    def active(self) -> bool:
        """True once a value was revealed: before that there is nothing to mask."""
        with self._lock:
            return bool(self._values)

    def redact_value(self, value: Any) -> Any:
        """A JSON-like value with every revealed secret masked in its strings and keys.
        String by string, not on the JSON text: a secret like ``2024`` must not break the
        JSON, and one with a quote must not hide behind its escaping.

        >>> r = Redactor(); r.add("hunter22")
        >>> r.redact_value({"said": ["pw hunter22", 3], "hunter22": None})
        {'said': ['pw ***', 3], '***': None}
        """
        if not self.active():
            return value  # nothing revealed: no need to walk a large answer
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact(str(k)): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(item) for item in value]
        return value

    def redact(self, text: str) -> str:
        """``text`` with every revealed value masked.

        >>> r = Redactor(); r.add("postgresql://etl:hunter22@db/sales")
        >>> r.redact("login failed for etl:hunter22@db")
        'login failed for etl:***@db'
        """
        with self._lock:
            values = list(self._values)
        for value in values:
            if value in text:
                text = text.replace(value, self.MASK)
        return text


def encodings_of(value: str) -> set[str]:
    """The common encodings of ``value`` a server or a node might hand back, each long
    enough to mask: base64 (standard and URL-safe, as the start, middle or end of a
    longer encoded text, in each of its three alignments), URL-encoding and hex.

    >>> sorted(encodings_of("s3cr3t!"))
    ['73336372337421', 'MzY3IzdC', 'czNjcjN0I', 's3cr3t%21', 'zM2NyM3Qh']
    """
    raw = value.encode()
    found: set[str] = {quote(value, safe=""), quote_plus(value), raw.hex(), raw.hex().upper()}
    for offset in range(3):
        # With `offset` bytes before it, the value's own characters start after the
        # characters those bytes touch, and end before the last, partial group.
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = (offset * 4 + 2) // 3
        end = len(encoded) - (1 if (offset + len(raw)) % 3 else 0) - encoded.count("=")
        for text in (encoded, encoded.replace("+", "-").replace("/", "_")):
            core = text[start:end]
            if len(core) >= 2 * MIN_MASKED_LENGTH:
                found.add(core)
    found.discard(value)
    return {text for text in found if len(text) >= MIN_MASKED_LENGTH}


#: What a secret may fill.
SecretUse = Literal["connection", "http_url", "http_header", "bigquery_credentials", "code"]


class SecretPolicy(BaseModel):
    """One secret's policy: who may use it, for what, and where it may be sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspaces: list[str] = Field(
        min_length=1, description="Workspaces whose workflows may use it (globs: `team-*`)."
    )
    uses: list[SecretUse] = Field(
        min_length=1,
        description="What it may fill: connection, http_url, http_header, "
        "bigquery_credentials, or code (what a python node's own code asks for).",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Sent over HTTP (http_url, http_header): the hosts it may go to (globs). "
        "Required for those uses.",
    )


class SecretsPolicy(BaseModel):
    """Every secret's policy, from ``FIGWAY_SECRETS_POLICY`` (``secrets.yaml``).

    ``declared`` is False when there is no policy file: then every secret may be used
    anywhere.

    >>> policy = SecretsPolicy.model_validate({"secrets": {"pg-sales": {
    ...     "workspaces": ["ws1"], "uses": ["connection"]}}})
    >>> policy.refusal("pg-sales", workspace_id="ws1", use="connection") is None
    True
    >>> print(policy.refusal("pg-sales", workspace_id="ws2", use="connection"))
    secret 'pg-sales' may not be used by workspace 'ws2' (its policy allows: ws1)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    secrets: dict[str, SecretPolicy] = Field(default_factory=dict)
    declared: bool = Field(default=True, exclude=True)

    @classmethod
    def undeclared(cls) -> SecretsPolicy:
        return cls(declared=False)

    @classmethod
    def load(cls, path: Path | None) -> SecretsPolicy:
        """The policy in ``path``; no path: no policy. Raises ValueError naming the problem."""
        if path is None:
            return cls.undeclared()
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            policy = cls.model_validate(document)
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read the secrets policy {path}: {exc}") from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"the secrets policy {path} is invalid: {problems}") from exc
        bad = [name for name in policy.secrets if not valid_secret_name(name)]
        web = [
            name
            for name, entry in policy.secrets.items()
            if {"http_url", "http_header"} & set(entry.uses) and not entry.hosts
        ]
        if bad or web:
            raise ValueError(
                f"the secrets policy {path} is invalid: "
                + "; ".join(
                    [f"secrets.{n}: not a secret name (letters, digits, dashes)" for n in bad]
                    + [f"secrets.{n}: sent over HTTP, it needs `hosts`" for n in web]
                )
            )
        return policy

    def refusal(
        self, name: str, *, workspace_id: str, use: SecretUse, host: str | None = None
    ) -> str | None:
        """Why ``name`` may not be used so, or None. ``host`` None: not known yet (a URL
        that is itself a secret); it is checked when the request is sent."""
        if not self.declared:
            return None
        entry = self.secrets.get(name)
        if entry is None:
            return f"secret {name!r} is not declared in the secrets policy, so it may not be used"
        if not any(fnmatch.fnmatchcase(workspace_id, w) for w in entry.workspaces):
            return (
                f"secret {name!r} may not be used by workspace {workspace_id!r} "
                f"(its policy allows: {', '.join(entry.workspaces)})"
            )
        if use not in entry.uses:
            return (
                f"secret {name!r} may not fill {_USE_TEXT[use]} "
                f"(its policy allows: {', '.join(entry.uses)})"
            )
        if host is not None and use in ("http_url", "http_header"):
            host = host.lower().rstrip(".")
            if not any(fnmatch.fnmatchcase(host, h.lower()) for h in entry.hosts):
                return (
                    f"secret {name!r} may not be sent to {host!r} "
                    f"(its policy allows: {', '.join(entry.hosts)})"
                )
        return None

    def describe(self) -> str:
        if not self.declared:
            return "secrets policy: none (FIGWAY_SECRETS_POLICY unset): any workflow may use any secret"
        return f"secrets policy: {len(self.secrets)} secret(s) declared; others may not be used"


_USE_TEXT: Mapping[str, str] = {
    "connection": "a database connection",
    "http_url": "an HTTP URL",
    "http_header": "an HTTP header",
    "bigquery_credentials": "BigQuery credentials",
    "code": "a python node's code",
}


class SecretResolver:
    """What a running node uses to turn ``secret:NAME`` into its value, as its policy allows."""

    def __init__(
        self,
        source: SecretSource,
        redactor: Redactor | None = None,
        *,
        policy: SecretsPolicy | None = None,
        workspace_id: str = "",
    ) -> None:
        self.source = source
        self.redactor = redactor or Redactor()
        self.policy = policy or SecretsPolicy.undeclared()
        self.workspace_id = workspace_id

    def mask_too(self, names: Iterable[str]) -> None:
        """Mask these secrets' values too (those other nodes of the run use), without
        handing them to the node; a secret this worker does not hold is skipped."""
        for name in names:
            try:
                value = self.source.get(name)
            except Exception:  # a source that cannot answer now: nothing to mask from it
                continue
            if value is not None:
                self.redactor.add(value)

    def reveal(self, value: str, *, use: SecretUse = "code", host: str | None = None) -> str:
        """The value itself, or the secret it names; raises :class:`SecretMissingError`,
        or :class:`SecretRefusedError` when its policy does not allow this use."""
        name = secret_name(value)
        if name is None:
            return value
        refusal = self.policy.refusal(name, workspace_id=self.workspace_id, use=use, host=host)
        if refusal is not None:
            raise SecretRefusedError(refusal)
        secret = self.source.get(name)
        if secret is None:
            raise SecretMissingError(
                f"secret {name!r} is not set: looked in {self.source.describe(name)} "
                "on the worker that ran this node"
            )
        self.redactor.add(secret)
        return secret
