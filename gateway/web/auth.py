"""Access control: API keys with scopes, on every route but the health checks.

A request sends ``Authorization: Bearer fgw_…``; a WebSocket may send the
key as that header, or a one-use ticket as ``?ticket=fgt_…`` (browsers cannot set
headers on a WebSocket; ``POST /live/tickets`` gives the ticket), or, for older
clients, the key itself as ``?token=fgw_…`` (never logged). No key, or one figway does not know or has revoked: 401. A key
without the route's scope: 403. The check runs before the route does, so
neither answer says whether the run or workflow asked for exists.

Off in the embedded default and whenever ``FIGWAY_AUTH=off``; on when
``FIGWAY_AUTH=on``, and by default with a configured database (production).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from backends.model.errors import AccessDeniedError
from backends.store.api_keys import ApiKeys, KeyView
from backends.store.live_tickets import LiveTickets
from gateway.web.errors import access_denied_headers
from gateway.web.limits import RateLimiter

__all__ = ["AccessGate", "KeyCache", "acting_key", "key_for_websocket", "require_scope"]


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _address(connection: HTTPConnection) -> str | None:
    # The peer, or the client a trusted proxy names (uvicorn's --forwarded-allow-ips).
    return connection.client.host if connection.client else None


class KeyCache:
    """Keys verified in the last ``seconds``, so a busy client costs one database lookup
    per key every few seconds, not one per request. A revoked key is therefore refused
    within ``seconds`` (at most 5) on every gateway. Only keys that were found are kept,
    by the SHA-256 of the token; at most ``MAX_ENTRIES``, then it starts afresh.

    >>> now = [0.0]
    >>> cache = KeyCache(5, clock=lambda: now[0])
    >>> cache.put("fgw_a_b", "a key")  # a stand-in for a KeyView
    >>> cache.get("fgw_a_b"), cache.get("fgw_other")
    ('a key', None)
    >>> now[0] = 5.0
    >>> cache.get("fgw_a_b") is None
    True
    """

    MAX_ENTRIES = 10_000

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._entries: dict[bytes, tuple[KeyView, float]] = {}

    def get(self, token: str) -> KeyView | None:
        entry = self._entries.get(hashlib.sha256(token.encode()).digest())
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def put(self, token: str, key: KeyView) -> None:
        if self.seconds <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        digest = hashlib.sha256(token.encode()).digest()
        self._entries[digest] = (key, self._clock() + self.seconds)


#: What a refused key or ticket costs its client address, in requests: forging keys
#: runs out of the address's allowance ten times faster than using a good one.
REFUSED_COST = 10


class AccessGate:
    """What decides a request's access: the keys, whether they are required, the rates.

    The app builds one when it starts; every route and WebSocket asks it. The cheap
    checks come first: the client address's rate, then the cache of verified keys,
    and only then the database.
    """

    def __init__(
        self,
        keys: ApiKeys,
        tickets: LiveTickets,
        *,
        required: bool,
        limiter: RateLimiter,
        address_limiter: RateLimiter | None = None,
        key_cache_seconds: float = 5.0,
        ticket_seconds: float = 30.0,
    ) -> None:
        self.keys = keys
        self.tickets = tickets
        self.required = required
        self.limiter = limiter
        self.address_limiter = address_limiter or RateLimiter(0)
        self.cache = KeyCache(key_cache_seconds)
        self.ticket_seconds = ticket_seconds

    async def check(
        self,
        token: str | None,
        scope: str | None,
        *,
        ticket: str | None = None,
        client: str | None = None,
    ) -> KeyView | None:
        """The key ``token`` names (or that ``ticket`` was issued to), holding ``scope``;
        raises :class:`AccessDeniedError`. ``client``: the client's address."""
        if not self.required:
            return None
        address = client or "unknown"
        wait = self.address_limiter.wait_seconds(address)
        if wait:
            raise AccessDeniedError(
                429,
                f"{address} made more than {self.address_limiter.per_minute} requests this "
                f"minute (a refused key counts {REFUSED_COST}); retry in {wait} s",
                retry_after=wait,
            )
        if token is not None:
            key = self.cache.get(token) or await run_in_threadpool(self.keys.verify, token)
            if key is not None:
                self.cache.put(token, key)
        elif ticket is not None:
            key = await run_in_threadpool(self._redeem, ticket)
        else:
            raise AccessDeniedError(401, "an API key is required: send Authorization: Bearer <key>")
        if key is None:
            self.address_limiter.charge(address, REFUSED_COST - 1)
            raise AccessDeniedError(
                401, "unknown or revoked API key" if token else "unknown, used or expired ticket"
            )
        wait = self.limiter.wait_seconds(key.key_id)
        if wait:
            raise AccessDeniedError(
                429,
                f"key {key.key_id} made more than {self.limiter.per_minute} requests "
                f"this minute; retry in {wait} s",
                retry_after=wait,
            )
        if scope is not None and scope not in key.scopes:
            raise AccessDeniedError(
                403,
                f"this key ({key.key_id}) lacks the {scope!r} scope; it has: "
                + ", ".join(sorted(key.scopes)),
            )
        return key

    def _redeem(self, ticket: str) -> KeyView | None:
        key_id = self.tickets.redeem(ticket)
        return None if key_id is None else self.keys.in_force(key_id)

    async def issue_ticket(self, key: KeyView) -> str:
        """A one-use ticket that opens one WebSocket as ``key`` within ``ticket_seconds``."""
        return await run_in_threadpool(
            lambda: self.tickets.issue(key_id=key.key_id, ttl_seconds=self.ticket_seconds)
        )


def require_scope(scope: str | None) -> Callable[[Request], Awaitable[KeyView | None]]:
    """A dependency: the request's key, which must hold ``scope`` (None: any key)."""

    async def check(request: Request) -> KeyView | None:
        gate: AccessGate = request.app.state.access
        try:
            key = await gate.check(
                _bearer(request.headers.get("authorization")), scope, client=_address(request)
            )
        except AccessDeniedError as failed:
            raise HTTPException(
                status_code=failed.code, detail=failed.detail, headers=access_denied_headers(failed)
            ) from None
        request.state.key = key
        return key

    return check


def acting_key_view(request: Request) -> KeyView | None:
    """The key that made this request (None with access control off)."""
    key: KeyView | None = getattr(request.state, "key", None)
    return key


def acting_key(request: Request) -> str | None:
    """``key <id>`` of the key that made this request (None with access control off),
    for the records of what it changed."""
    key: KeyView | None = getattr(request.state, "key", None)
    return None if key is None else f"key {key.key_id}"


async def key_for_websocket(websocket: WebSocket, gate: AccessGate, scope: str) -> KeyView | None:
    """The WebSocket's key (header, ``ticket`` or ``token`` query parameter); raises
    AccessDeniedError."""
    token = _bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    return await gate.check(
        token, scope, ticket=websocket.query_params.get("ticket"), client=_address(websocket)
    )
