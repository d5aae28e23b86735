"""One-use tickets that open a WebSocket: a browser cannot send a header on a WebSocket,
and a key in the URL would end up in logs and browser history.

A client with a key asks for a ticket (``POST /live/tickets``) and opens the socket with
``?ticket=…``. A ticket is 32 random bytes, kept only as its SHA-256, valid for a few
seconds and deleted when it is redeemed, so it opens exactly one socket, on any gateway
that shares the database. What it opens is decided by the key that asked for it, checked
again (revoked, scopes, workspaces) when it is redeemed.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete

from backends.store.models import LiveTicket
from backends.store.transactions import Transactions, utcnow

__all__ = ["LiveTickets"]

_PREFIX = "fgt_"


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class LiveTickets(Transactions):
    def issue(self, *, key_id: str, ttl_seconds: float) -> str:
        """A new ticket for ``key_id``, valid ``ttl_seconds``; expired ones are dropped."""
        ticket = _PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        with self._transaction() as session:
            session.execute(delete(LiveTicket).where(LiveTicket.expires_at < now))
            session.add(
                LiveTicket(
                    ticket_hash=_hash(ticket),
                    key_id=key_id,
                    expires_at=now + timedelta(seconds=ttl_seconds),
                )
            )
        return ticket

    def redeem(self, ticket: str) -> str | None:
        """The key id ``ticket`` was issued to, if it is valid; it is used up either way."""
        if not ticket.startswith(_PREFIX):
            return None
        with self._transaction() as session:
            # DELETE … RETURNING: of two sockets opened with one ticket, one gets it.
            row = session.execute(
                delete(LiveTicket)
                .where(LiveTicket.ticket_hash == _hash(ticket))
                .returning(LiveTicket.key_id, LiveTicket.expires_at)
            ).first()
        if row is None or row.expires_at < utcnow():
            return None
        return str(row.key_id)
