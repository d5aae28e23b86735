"""Request input refused at the edge with a reason: JSON bodies decoded once, off the
event loop, and ids with control characters.

Every JSON body (``Content-Type`` absent or ``…json``) of a POST, PUT or PATCH is read
whole (``BodyLimit`` has capped its size already) and decoded in a worker thread, so a
large body never holds up the requests around it. What cannot be a request is answered
422 naming what is wrong, before any route sees it:

- bytes that are not UTF-8;
- text that is not JSON (with the line and column);
- nesting deeper than ``MAX_DEPTH`` levels (a definition needs a handful);
- an integer of more than ``MAX_INT_DIGITS`` digits.

The decoded value is kept for the routes that take the whole document
(:func:`decoded_json`), and the raw bytes are handed on unchanged for the others.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request

from backends.model.ids import PRINTABLE_PATTERN, control_character_problem

__all__ = [
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "JsonBodies",
    "decoded_json",
    "document_printable_parameters",
    "json_problem",
    "refuse_control_characters",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Deepest nesting of arrays and objects accepted in a request body.
MAX_DEPTH = 64
#: Longest integer accepted in a request body (a 64-bit integer has 20 digits).
MAX_INT_DIGITS = 40

_STATE_KEY = "figway_json_body"
_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _Refused(ValueError):
    pass


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"an integer has {len(text.lstrip('-'))} digits; at most {MAX_INT_DIGITS}")
    return int(text)


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iteratively: no recursion to exhaust).

    >>> _depth_over({"a": [1, {"b": 2}]}, 3), _depth_over({"a": [1, {"b": 2}]}, 2)
    (False, True)
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def json_problem(raw: bytes) -> tuple[Any, str | None]:
    """(the decoded value, None), or (None, what is wrong with ``raw`` as a JSON body).

    >>> json_problem(b'{"a": [1]}')
    ({'a': [1]}, None)
    >>> json_problem(b'{"a": ')[1]
    'the body is not valid JSON: Expecting value (line 1, column 7)'
    >>> json_problem(b'[' * 100 + b']' * 100)[1]
    'the body nests arrays and objects more than 64 levels deep'
    >>> json_problem(b'{"a": \\xff}')[1]
    'the body is not UTF-8 text (byte 0xff at position 6)'
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (
            f"the body is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position {exc.start})"
        )
    try:
        value = json.loads(text, parse_int=_int)
    except _Refused as exc:
        return None, f"the body is refused: {exc}"
    except json.JSONDecodeError as exc:
        return (
            None,
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        )
    except RecursionError:
        return None, f"the body nests arrays and objects more than {MAX_DEPTH} levels deep"
    if _depth_over(value, MAX_DEPTH):
        return None, f"the body nests arrays and objects more than {MAX_DEPTH} levels deep"
    return value, None


def _is_json(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
    return not content_type or "json" in content_type


class JsonBodies:
    """ASGI middleware: decode JSON bodies off the loop; 422 for one that is not a request."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left (or BodyLimit answered 413 already)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        if raw:
            value, problem = await run_in_threadpool(json_problem, raw)
            if problem is not None:
                await _refuse(send, problem)
                return
            scope.setdefault("state", {})[_STATE_KEY] = value
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def decoded_json(request: Request) -> Any:
    """The request's JSON body as :class:`JsonBodies` decoded it (None when it had none)."""
    return request.scope.get("state", {}).get(_STATE_KEY)


async def _refuse(send: Send, problem: str) -> None:
    body = json.dumps({"detail": problem, "errors": [{"field": "body", "message": problem}]})
    encoded = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(encoded)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": encoded})


def refuse_control_characters(connection: HTTPConnection) -> None:
    """An app-wide dependency: a control character in any path or query parameter is a
    422 naming the parameter, before a route hands it to the database (PostgreSQL
    refuses NUL in text) or writes it to a log."""
    if connection.scope["type"] != "http":
        return  # the WebSocket handler checks its run id itself
    errors = []
    for where, items in (
        ("path", connection.path_params.items()),
        ("query", connection.query_params.multi_items()),
    ):
        for name, value in items:
            problem = control_character_problem(str(value))
            if problem is not None:
                errors.append(
                    {"type": "value_error", "loc": (where, name), "msg": problem, "input": value}
                )
    if errors:
        raise RequestValidationError(errors)


def document_printable_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """Add :func:`refuse_control_characters`'s rule to the OpenAPI ``schema``: every
    string path or query parameter without a pattern of its own gets the printable one."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") not in ("path", "query"):
                    continue
                for variant in _string_schemas(parameter.get("schema", {})):
                    variant.setdefault("pattern", PRINTABLE_PATTERN)
    return schema


def _string_schemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    if schema.get("type") == "string":
        return [schema]
    if schema.get("type") == "array":
        return _string_schemas(schema.get("items", {}))
    return [found for variant in schema.get("anyOf", []) for found in _string_schemas(variant)]
