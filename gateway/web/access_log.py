"""The gateway's access log: one line per request and per WebSocket, never holding a key.

figway writes it itself, on the ``figway.access`` logger, instead of leaving it to
uvicorn: Prefect configures logging when it first runs a flow in-process and resets every
``uvicorn.*`` logger to WARNING, which silenced uvicorn's access log for good. No part of
Prefect's configuration names ``figway.access``, and ``figway serve`` gives it its level
explicitly, so it keeps logging whatever ran before.

Query values that carry credentials (``token``, ``ticket``) are replaced by ``***`` in
these lines, and in the lines uvicorn still logs itself (a WebSocket's ``[accepted]``).

A line reads like uvicorn's::

    127.0.0.1:51234 - "GET /workflow_runs/run-1 HTTP/1.1" 401
    127.0.0.1:51240 - "WebSocket /run-1?ticket=***" accepted, closed 1000
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ACCESS_LOGGER", "AccessLog", "RedactCredentials", "redact", "redact_uvicorn_logs"]

ACCESS_LOGGER = "figway.access"
log = logging.getLogger(ACCESS_LOGGER)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_CREDENTIAL = re.compile(r"([?&](?:token|ticket|access_token)=)[^&\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the values of credential query parameters replaced by ``***``.

    >>> redact('"WebSocket /run-1?token=fgw_abc_def&x=1" [accepted]')
    '"WebSocket /run-1?token=***&x=1" [accepted]'
    >>> redact("/ws/workflow_runs/r?ticket=fgt_xyz")
    '/ws/workflow_runs/r?ticket=***'
    """
    return _CREDENTIAL.sub(r"\1***", text)


class RedactCredentials(logging.Filter):
    """Rewrites a record whose message would show a credential query value."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact_uvicorn_logs() -> None:
    """Put :class:`RedactCredentials` on uvicorn's loggers (once). A logger's filters
    survive Prefect's logging set-up, which resets only levels and handlers."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())


def _target(scope: Scope) -> str:
    path = scope.get("root_path", "") + scope.get("path", "")
    query = scope.get("query_string", b"")
    return redact(f"{path}?{query.decode('latin-1')}") if query else path


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class AccessLog:
    """ASGI middleware: logs each request's status and each WebSocket's outcome."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        outcome: list[str] = []

        async def watching_send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                outcome.append(str(message["status"]))
            elif kind == "websocket.accept":
                outcome.append("accepted")
            elif kind == "websocket.close":
                outcome.append(f"closed {message.get('code', 1000)}")
            elif kind == "websocket.http.response.start":
                outcome.append(f"refused {message['status']}")
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            if log.isEnabledFor(logging.INFO):
                if scope["type"] == "http":
                    request = f"{scope['method']} {_target(scope)} HTTP/{scope.get('http_version', '1.1')}"
                else:
                    request = f"WebSocket {_target(scope)}"
                log.info('%s - "%s" %s', _client(scope), request, ", ".join(outcome) or "no answer")
