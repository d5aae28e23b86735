"""Limits on what one client can send or hold: request body size, requests per client
address and per key per minute, and live followers (WebSockets) per key and per gateway.

- **Body size.** A request whose body is larger than ``FIGWAY_MAX_BODY_BYTES``
  gets 413 before figway reads it into memory: declared (``Content-Length``)
  or counted as it arrives (chunked).
- **Rate.** Each client address may make ``FIGWAY_ADDRESS_RATE_LIMIT_PER_MINUTE``
  requests a minute, counted *before* its key is looked up, and a refused key costs
  it ten; each API key then ``FIGWAY_RATE_LIMIT_PER_MINUTE``. Token buckets with
  bursts up to the rate, per gateway. Past either: 429 with ``Retry-After`` (seconds
  until a request will be accepted).
- **Live followers.** ``FIGWAY_LIVE_FOLLOWERS_PER_KEY`` WebSockets per key and
  ``FIGWAY_LIVE_FOLLOWERS_MAX`` per gateway; past either, close code 1013.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyLimit", "FollowerCaps", "RateLimiter"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app: App, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not refused:
                    # Answer now; to the app the client has gone, so it stops reading.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the 413 is the answer; what the app says after is dropped
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"the request body is larger than {self.max_bytes} bytes "
                "(FIGWAY_MAX_BODY_BYTES)",
                "errors": [],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per name (a key, a client address): ``per_minute`` requests a
    minute, bursts up to as many. Buckets that have refilled are forgotten once there
    are more than ``MAX_BUCKETS``, so a flood of new names cannot grow it without end."""

    MAX_BUCKETS = 10_000

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self._lock = threading.Lock()

    def wait_seconds(self, name: str, cost: float = 1.0) -> int:
        """0 when the request may go ahead (and takes ``cost`` tokens), else the seconds to wait.

        >>> clock = iter([0.0, 0.0, 0.0]).__next__
        >>> limiter = RateLimiter(2, clock=clock)
        >>> [limiter.wait_seconds("k") for _ in range(3)]
        [0, 0, 30]
        """
        if self.per_minute <= 0:
            return 0
        now = self._clock()
        with self._lock:
            tokens = self._tokens(name, now)
            if tokens >= 1.0:
                self._buckets[name] = (max(0.0, tokens - cost), now)
                return 0
            self._buckets[name] = (tokens, now)
            if len(self._buckets) > self.MAX_BUCKETS:
                self._forget_full(now)
            return max(1, math.ceil((1.0 - tokens) / self._rate))

    def charge(self, name: str, cost: float) -> None:
        """Take ``cost`` more tokens from ``name``'s bucket (a refused key costs more)."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        with self._lock:
            self._buckets[name] = (max(0.0, self._tokens(name, now) - cost), now)

    def _tokens(self, name: str, now: float) -> float:
        tokens, at = self._buckets.get(name, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - at) * self._rate)

    def _forget_full(self, now: float) -> None:
        full = [name for name in self._buckets if self._tokens(name, now) >= self.per_minute]
        for name in full:
            del self._buckets[name]


class FollowerCaps:
    """How many WebSocket clients follow runs, per key and on this gateway, capped.

    Past a cap a new client is closed with 1013 ("try again later") and a message.
    """

    def __init__(self, *, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._by_key: dict[str, int] = {}
        self._count = 0

    def take(self, key_id: str | None) -> str | None:
        """None if the client may follow (and counts it), else why not. The caller
        gives the place back with :meth:`give_back` (on the event loop, no lock)."""
        if self._count >= self.total:
            return f"this gateway serves {self.total} live followers already; try again later"
        if key_id is not None and self._by_key.get(key_id, 0) >= self.per_key:
            return (
                f"key {key_id} follows {self.per_key} runs already "
                "(FIGWAY_LIVE_FOLLOWERS_PER_KEY); close one or try again later"
            )
        self._count += 1
        if key_id is not None:
            self._by_key[key_id] = self._by_key.get(key_id, 0) + 1
        return None

    def give_back(self, key_id: str | None) -> None:
        self._count -= 1
        if key_id is not None:
            left = self._by_key.get(key_id, 1) - 1
            if left:
                self._by_key[key_id] = left
            else:
                self._by_key.pop(key_id, None)
