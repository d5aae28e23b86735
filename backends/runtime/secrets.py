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
``a`` in a log would make it unreadable.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from backends.model.errors import SecretMissingError

__all__ = [
    "MIN_MASKED_LENGTH",
    "SECRET_PREFIX",
    "ChainedSecrets",
    "EnvironmentSecrets",
    "Redactor",
    "SecretResolver",
    "SecretSource",
    "block_name",
    "checked_secret_name",
    "environment_variable",
    "names_in_environment",
    "secret_name",
    "valid_secret_name",
]

SECRET_PREFIX = "secret:"
MIN_MASKED_LENGTH = 4
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENV_PREFIX = "FIGWAY_SECRET_"
#: Authorization schemes whose token is masked on its own too.
_AUTH_SCHEMES = {"bearer", "basic", "token", "apikey", "key"}


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
        with self._lock:
            for candidate in candidates:
                if len(candidate) >= MIN_MASKED_LENGTH and candidate not in self._values:
                    self._values.append(candidate)
            self._values.sort(key=len, reverse=True)  # longest first: no partial leftovers

    def active(self) -> bool:
        """True once a value was revealed: before that there is nothing to mask."""
        with self._lock:
            return bool(self._values)

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


class SecretResolver:
    """What a running node uses to turn ``secret:NAME`` into its value."""

    def __init__(self, source: SecretSource, redactor: Redactor | None = None) -> None:
        self.source = source
        self.redactor = redactor or Redactor()

    def reveal(self, value: str) -> str:
        """The value itself, or the secret it names; raises :class:`SecretMissingError`."""
        name = secret_name(value)
        if name is None:
            return value
        secret = self.source.get(name)
        if secret is None:
            raise SecretMissingError(
                f"secret {name!r} is not set: looked in {self.source.describe(name)} "
                "on the worker that ran this node"
            )
        self.redactor.add(secret)
        return secret
