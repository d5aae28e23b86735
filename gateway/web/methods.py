"""``405 Method Not Allowed`` answers that list every method the path serves.

Starlette answers a method a path does not serve with the ``Allow`` header of the one
route it matched first, and FastAPI makes a route per method: ``OPTIONS
/workflow_runs/run-1`` was told ``Allow: GET`` although ``DELETE`` works too. This
middleware rewrites the header of every 405 with all the methods the API documents for
the path (and ``HEAD`` wherever ``GET`` is served).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["AllowedMethods"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _pattern(template: str) -> re.Pattern[str]:
    """``/workflow_runs/{job_run_id}`` -> a regex matching its concrete paths.

    >>> bool(_pattern("/workflow_runs/{job_run_id}/logs").fullmatch("/workflow_runs/r-1/logs"))
    True
    """
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


class AllowedMethods:
    """ASGI middleware: the ``Allow`` header of a 405 lists every method of the path
    (of its most specific template, when several match).

    ``paths`` maps each path template to its methods (the OpenAPI schema's ``paths``),
    read when the first 405 is answered, so routes added after the middleware count.
    """

    def __init__(self, app: App, *, paths: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self._paths = paths
        self._table: list[tuple[re.Pattern[str], set[str]]] | None = None

    def _allowed(self, path: str) -> str | None:
        if self._table is None:
            self._table = [
                (_pattern(template), {m.upper() for m in operations})
                for template, operations in self._paths().items()
            ]
        matches = [
            (pattern.pattern.count("[^/]+"), found)
            for pattern, found in self._table
            if pattern.fullmatch(path)
        ]
        if not matches:
            return None
        # The most specific templates: /workflow_runs/stats is its own resource, although
        # it also matches /workflow_runs/{job_run_id}.
        fewest = min(count for count, _ in matches)
        methods = set().union(*(found for count, found in matches if count == fewest))
        if "GET" in methods:
            methods.add("HEAD")
        return ", ".join(sorted(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def rewriting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = self._allowed(scope["path"])
                if allowed is not None:
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"
                    ]
                    message = {**message, "headers": [*headers, (b"allow", allowed.encode())]}
            await send(message)

        await self.app(scope, receive, rewriting_send)
