"""API keys: created with a secret shown once, checked by hash, revoked, listed.

A key reads ``fgw_<key id>_<secret>``. The id is public (it names the key in
records and lists); the secret is 32 random bytes, kept only as its SHA-256.
A fast hash is enough here: the secret is random and long, not a password a
person chose, so there is nothing to guess from the hash. Comparing uses
``hmac.compare_digest``, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from backends.store.models import ApiKey
from backends.store.transactions import Transactions, utcnow

__all__ = ["SCOPES", "ApiKeys", "KeyView", "NewKey"]

#: What a key may do: runs (workflow_runs and live status), workflows (definitions),
#: code (python nodes), admin (routing rules, guards), metrics (/metrics and the API docs
#: only: what a Prometheus server is given).
SCOPES = ("runs", "workflows", "code", "admin", "metrics")
_PREFIX = "fgw"


@dataclass(frozen=True)
class KeyView:
    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    #: The workspaces the key is limited to; None: every workspace.
    workspaces: frozenset[str] | None = None

    def reaches(self, workspace_id: str) -> bool:
        """Whether this key may see and act on runs and workflows of ``workspace_id``."""
        return self.workspaces is None or workspace_id in self.workspaces


@dataclass(frozen=True)
class NewKey:
    key: KeyView
    token: str  # shown once, never stored


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: ApiKey) -> KeyView:
    return KeyView(
        key_id=row.key_id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        workspaces=None if row.workspaces is None else frozenset(row.workspaces.split()),
    )


class ApiKeys(Transactions):
    def create(
        self,
        *,
        name: str,
        scopes: Collection[str],
        created_by: str,
        workspaces: Collection[str] = (),
    ) -> NewKey:
        """A new key; ``workspaces`` limits it to those (none: every workspace)."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(
                f"unknown scope(s) {', '.join(unknown)}" if unknown else "a key needs a scope"
            )
        odd = sorted(ws for ws in workspaces if not ws or ws != ws.strip() or " " in ws)
        if odd:
            raise ValueError(f"a workspace id has no spaces and is not empty: {odd!r}")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiKey(
            key_id=key_id,
            name=name,
            scopes=" ".join(scope for scope in SCOPES if scope in scopes),
            secret_hash=_hash(secret),
            created_at=utcnow(),
            created_by=created_by,
            workspaces=" ".join(sorted(set(workspaces))) if workspaces else None,
        )
        with self._transaction() as session:
            session.add(row)
            session.flush()
            view = _view(row)
        return NewKey(view, f"{_PREFIX}_{key_id}_{secret}")

    def verify(self, token: str) -> KeyView | None:
        """The key a token is, if it is one and not revoked."""
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != _PREFIX or not key_id or not secret:
            return None
        with self._transaction() as session:
            row = session.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_hash, _hash(secret)):
                return None
            return _view(row)

    def in_force(self, key_id: str) -> KeyView | None:
        """The key ``key_id`` if it exists and is not revoked (for a redeemed ticket)."""
        with self._transaction() as session:
            row = session.get(ApiKey, key_id)
            return None if row is None or row.revoked_at is not None else _view(row)

    def revoke(self, *, key_id: str, revoked_by: str) -> bool:
        """True if the key existed and was in force; a revoked key stays revoked."""
        with self._transaction() as session:
            result = session.execute(
                update(ApiKey)
                .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow(), revoked_by=revoked_by)
            )
            return bool(getattr(result, "rowcount", 0))

    def all(self) -> list[KeyView]:
        with self._transaction() as session:
            return [
                _view(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at))
            ]
