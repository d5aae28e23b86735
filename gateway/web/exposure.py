"""Who may reach the gateway from where: Host names with access control off, WebSocket
origins, and the security state every start prints.

- **Host.** With access control off, a page on any website could reach a developer's
  gateway through DNS rebinding (a name of the attacker's that resolves to 127.0.0.1).
  The browser then sends that name as ``Host``: only loopback names (and those the
  operator lists in ``FIGWAY_ALLOWED_HOSTS``) are answered; any other gets 421.
- **Origin.** Browsers let any page open a WebSocket to any host, sending its own
  ``Origin``. Both WebSocket ports accept a browser's connection only from the origins in
  ``FIGWAY_CORS_ORIGINS``, and from loopback pages on the embedded default. A client
  that sends no ``Origin`` (not a browser) is not concerned.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from gateway.config import Settings

__all__ = ["HostGuard", "is_loopback", "origin_allowed", "security_lines"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, without port) is this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("app.localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("10.0.0.5"), is_loopback("evil.example")
    (False, False, False)
    """
    host = host.strip("[]").lower().rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host of a ``Host`` header value, without its port.

    >>> _host_of("127.0.0.1:8000"), _host_of("[::1]:8000"), _host_of("example.com")
    ('127.0.0.1', '::1', 'example.com')
    """
    if header.startswith("["):
        return header[1 : header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """ASGI middleware: with access control off, answer only loopback and listed hosts."""

    def __init__(self, app: App, *, settings: Settings) -> None:
        self.app = app
        self.active = not settings.access().required
        self.allowed = {host.lower() for host in settings.allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.active and scope["type"] in ("http", "websocket"):
            header = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            host = _host_of(header)
            if not (is_loopback(host) or host.lower() in self.allowed):
                await _refuse(scope, send, host)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, host: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accepting answers the handshake with 403.
        await send({"type": "websocket.close", "code": 1008})
        return
    body = (
        b'{"detail":"this gateway runs with access control off and answers only loopback '
        b"host names; name it as 127.0.0.1 or localhost, or an operator lists the name in "
        b'FIGWAY_ALLOWED_HOSTS","errors":[]}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 421,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def origin_allowed(origin: str | None, settings: Settings, *, host: str | None = None) -> bool:
    """Whether a WebSocket whose handshake sent ``origin`` may follow runs.

    ``host`` is the handshake's ``Host``: a page this gateway served itself (the
    console's run view) is of the same origin, and no other site's.

    >>> s = Settings(_env_file=None, cors_origins=["https://app.example.com"])
    >>> origin_allowed(None, s), origin_allowed("https://app.example.com", s)
    (True, True)
    >>> origin_allowed("https://evil.example", s), origin_allowed("http://127.0.0.1:3000", s)
    (False, True)
    >>> origin_allowed("https://figway.example", s, host="figway.example")
    True
    """
    if origin is None:
        return True  # not a browser: nothing it sends on a user's behalf
    if host is not None and urlsplit(origin).netloc.lower() == host.lower():
        return True  # same origin: the gateway's own console
    if origin in settings.cors_origins:
        return True
    host = urlsplit(origin).hostname or ""
    return settings.embedded and is_loopback(host)


def security_lines(settings: Settings) -> Iterator[str]:
    """The security state, one line each: for the start-up banner and the log."""
    access = settings.access()
    state = "API keys required" if access.required else "OFF: no key is asked for"
    yield f"access control {state} ({access.reason})"
    yield from settings.node_policy().describe()
    origins = ", ".join(settings.cors_origins) or "none"
    yield f"browser origins (CORS, WebSockets): {origins}" + (
        ", and loopback pages" if settings.embedded else ""
    )
