"""The ``http_request`` node type: one HTTP request, its answer as the node's output.

A node calls an HTTP API and hands the answer downstream: the status, the
content type, and the body parsed as JSON (or as text). With ``as_table`` the
answer, a JSON array of objects, is written as a table artifact instead and
the output is its reference, so a downstream SQL node can read it.

.. code-block:: yaml

    orders:
      type: http_request
      config:
        method: GET
        url: https://api.example.com/v1/orders
        headers: {Authorization: "secret:orders-api-token"}  # holds "Bearer …"
        query: {since: "2024-01-01", limit: 500}
        as_table: true

Credentials never sit in a definition: the URL and each header value may be a
secret reference (``secret:NAME``), resolved on the worker while the node runs.
Error messages name the method and the URL without its query string (or the
secret reference, when the URL is one), never a resolved value.

Side effects follow the method: GET, HEAD and OPTIONS read (``none``), every
other method is taken to write (``unsafe``), so a workflow that POSTs cannot
shadow unless its node says ``side_effects: none`` (the call only reads, like
a search API) or ``sandboxed`` (in a shadow run the request is not sent and the
output is ``{"status": None, "sent": False}``).

Every failure (an unexpected status, a timeout, a refused connection, an
answer too large) raises :class:`NodeFailedError`, so the node's ``retries``
policy decides whether it is tried again.
"""

from __future__ import annotations

import codecs
import ipaddress
import json
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
import pyarrow as pa
from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from backends.model.errors import NodeCancelledError, NodeFailedError
from backends.nodes.base import (
    Admission,
    NodeConfig,
    NodeContext,
    NodeType,
    SideEffects,
    within_operator_cap,
)
from backends.nodes.policy import NodePolicy
from backends.runtime.secrets import (
    Redactor,
    checked_secret_name,
    secret_name,
)

__all__ = ["HTTP_REQUEST", "HttpRequestConfig", "run_http_request"]

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

#: Methods that only read: their nodes have no side effects unless they declare some.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Methods whose redirects are followed (see ``_follows_redirects``).
REDIRECTED_METHODS = frozenset({"GET", "HEAD"})
#: Longest URL accepted; servers commonly refuse longer ones anyway.
MAX_URL_LENGTH = 8_192
MAX_HEADERS = 100
MAX_HEADER_NAME_LENGTH = 256
MAX_HEADER_VALUE_LENGTH = 8_192
MAX_QUERY_PARAMETERS = 100
#: A request body is part of the definition, which is stored with every run.
MAX_BODY_CHARS = 1_000_000
MAX_TIMEOUT_SECONDS = 3_600.0
DEFAULT_MAX_RESPONSE_BYTES = 10 * 2**20
MAX_RESPONSE_BYTES = 2**30
#: How much of an unexpected answer's body its error message quotes.
ERROR_BODY_CHARS = 300
#: Headers whose value is a credential: in a definition, only as ``secret:NAME``.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "x-api-key", "api-key",
        "apikey", "x-auth-token", "x-access-token", "private-token", "x-amz-security-token",
    }
)  # fmt: skip
#: Query parameters whose value is a credential: in a definition, only inside a secret URL.
CREDENTIAL_PARAMETERS = frozenset(
    {
        "access_token", "api_key", "apikey", "api-key", "auth", "client_secret", "key",
        "password", "secret", "sig", "signature", "token", "x-amz-signature",
    }
)  # fmt: skip
#: Rows per record batch when an answer is written as a table.
TABLE_BATCH_ROWS = 50_000

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# Visible ASCII, space and tab. Anything else either breaks the request (a line break
# would start a new header) or is encoded differently by each server.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
# httpx sets these from the body it sends; a different value would corrupt the request.
_BODY_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
_JSON_CONTENT_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")


def _check_secret_reference(value: str) -> str:
    checked_secret_name(value)
    return value


def _check_header_value(value: str) -> str:
    if secret_name(value) is not None:
        return _check_secret_reference(value)
    if _HEADER_VALUE.fullmatch(value) is None:
        raise ValueError("a header value is printable ASCII, without line breaks")
    return value


HeaderName = Annotated[
    str, Field(min_length=1, max_length=MAX_HEADER_NAME_LENGTH, pattern=_HEADER_NAME)
]
HeaderValue = Annotated[
    str, Field(max_length=MAX_HEADER_VALUE_LENGTH), AfterValidator(_check_header_value)
]
QueryValue = (
    Annotated[str, Field(max_length=MAX_HEADER_VALUE_LENGTH)]
    | bool
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
)


class HttpRequestConfig(NodeConfig):
    """What to send, what counts as success, and what to do with the answer.

    >>> config = HttpRequestConfig(method="post", url="https://api.example.com/v1/orders")
    >>> config.method, config.side_effects()
    ('POST', 'unsafe')
    """

    method: HttpMethod = Field(
        default="GET",
        description="The HTTP method, in any case: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS.",
    )
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="An http:// or https:// URL without credentials, or `secret:NAME` "
        "when the URL itself is a secret (it may then carry user:password).",
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description="Request headers; a value may be `secret:NAME`, resolved on the worker.",
    )
    query: dict[
        Annotated[str, Field(min_length=1, max_length=MAX_HEADER_NAME_LENGTH)], QueryValue
    ] = Field(
        default_factory=dict,
        max_length=MAX_QUERY_PARAMETERS,
        description="Query parameters, added to those the URL already has (a name in "
        "both is sent once, with the value given here); booleans are sent as `true`/`false`.",
    )
    # `body` comes before `json_body` so that the check that they exclude each other,
    # on `json_body`, sees it: the error is then placed on a field, not on the config.
    body: str | None = Field(
        default=None,
        max_length=MAX_BODY_CHARS,
        description="A request body sent as is (UTF-8); set `Content-Type` in `headers`. "
        "Excludes `json_body`.",
    )
    json_body: Any | None = Field(
        default=None,
        description="A request body sent as JSON, with `Content-Type: application/json`. "
        "Excludes `body`.",
    )
    expected_status: int | Annotated[list[int], Field(max_length=100)] | None = Field(
        default=None,
        description="The status, or statuses, that count as success (each 100..599); "
        "any 2xx when absent.",
    )
    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="How long the request may take, from connecting to the last byte.",
    )
    max_response_bytes: int = Field(
        default=DEFAULT_MAX_RESPONSE_BYTES,
        gt=0,
        le=MAX_RESPONSE_BYTES,
        description="The node fails, and stops reading, once the (decompressed) answer "
        "is larger than this.",
    )

    @field_validator("max_response_bytes")
    @classmethod
    def _capped(cls, value: int, info: ValidationInfo) -> int:
        return within_operator_cap(value, info)

    as_table: bool = Field(
        default=False,
        description="Write the answer, which must be a JSON array of objects, as a table "
        "artifact (one row per object, one column per key) and output its reference.",
    )
    side_effects_: SideEffects | None = Field(
        default=None,
        alias="side_effects",
        description="What the request does outside figway. Derived from the method when "
        "absent: GET, HEAD and OPTIONS `none`, the others `unsafe`. Say `none` for a POST "
        "that only reads, or `sandboxed` to have a shadow run skip the request.",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper_case_method(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        if secret_name(value) is not None:
            # Its host is known only on the worker, where the policy is checked again.
            Admission.of(info).check_secret(value, use="http_url")
            return _check_secret_reference(value)
        problem = _url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        credential = _credential_parameter(value)
        if credential is not None:
            raise ValueError(
                f"the URL carries a credential in its query ({credential}=…), and definitions "
                "are stored and shown in clear: keep the whole URL in a secret "
                "(url: secret:NAME) or send the credential in a header whose value is "
                "secret:NAME"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        admission = Admission.of(info)
        url = info.data.get("url")
        host = httpx.URL(url).host if url and secret_name(url) is None else None
        seen: set[str] = set()
        for name, header_value in value.items():
            lowered = name.lower()
            if secret_name(header_value) is not None:
                admission.check_secret(header_value, use="http_header", host=host)
            elif lowered in CREDENTIAL_HEADERS:
                raise ValueError(
                    f"header {name!r} holds a credential, and definitions are stored and "
                    "shown in clear: make its value secret:NAME (the secret holding, for "
                    'example, "Bearer <token>")'
                )
            if lowered in _BODY_FRAMING_HEADERS:
                raise ValueError(f"{name!r} is set from the body; leave it out")
            if lowered in seen:
                raise ValueError(f"{name!r} is given twice (header names ignore case)")
            seen.add(lowered)
        return value

    @field_validator("query", mode="before")
    @classmethod
    def _query_values_are_scalars(cls, value: object) -> object:
        # One problem naming the parameter, not one per type the union could have taken.
        if isinstance(value, Mapping):
            for name, item in value.items():
                if not isinstance(item, str | bool | int | float):
                    raise ValueError(
                        f"parameter {name!r} is a {type(item).__name__}; a query value is "
                        "a string, number or boolean"
                    )
        return value

    @field_validator("json_body")
    @classmethod
    def _check_json_body(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if info.data.get("body") is not None:
            raise ValueError("give either `json_body` or `body`, not both")
        try:
            encoded = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"is not JSON: {exc}") from None
        if len(encoded) > MAX_BODY_CHARS:
            raise ValueError(f"is longer than {MAX_BODY_CHARS} characters as JSON")
        return value

    @field_validator("expected_status", mode="before")
    @classmethod
    def _statuses_are_integers(cls, value: object) -> object:
        # As for query: one clear problem rather than one per member of the union.
        items = value if isinstance(value, list) else [value]
        if value is not None and not all(
            isinstance(item, int) and not isinstance(item, bool) for item in items
        ):
            raise ValueError("give a status (200) or a list of statuses ([200, 204])")
        return value

    @field_validator("expected_status")
    @classmethod
    def _check_expected_status(cls, value: int | list[int] | None) -> int | list[int] | None:
        if value is None:
            return None
        statuses = [value] if isinstance(value, int) else value
        if not statuses:
            raise ValueError("give at least one status, or leave it out to accept any 2xx")
        wrong = [status for status in statuses if not 100 <= status <= 599]
        if wrong:
            raise ValueError(f"{wrong[0]} is not an HTTP status (100..599)")
        return value

    def side_effects(self) -> SideEffects:
        if self.side_effects_ is not None:
            return self.side_effects_
        return "none" if self.method in READ_ONLY_METHODS else "unsafe"


def _credential_parameter(url: str) -> str | None:
    """The first query parameter of ``url`` that carries a credential, or None.

    >>> _credential_parameter("https://h/x?since=1&API_KEY=abc"), _credential_parameter("https://h/x?q=1")
    ('API_KEY', None)
    """
    for name, _ in httpx.URL(url).params.multi_items():
        if name.lower() in CREDENTIAL_PARAMETERS:
            return name
    return None


def _url_problem(url: str, *, secret: bool = False) -> str | None:
    """What makes ``url`` unusable, or None. Never quotes the URL: it may be a secret.

    Credentials are refused in a plain URL, where the definition would hold them,
    and accepted in a ``secret`` one, which is what such a secret is for.
    """
    if any(character.isspace() or not character.isprintable() for character in url):
        return "a URL has no spaces or control characters (percent-encode them)"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "is not a URL"
    if parsed.scheme not in ("http", "https"):
        return "use an http:// or https:// URL (or `secret:NAME`)"
    if not parsed.host:
        return "the URL names no host"
    if parsed.port is not None and not 0 < parsed.port < 65_536:
        return "the URL's port is not 1..65535"
    if parsed.userinfo and not secret:
        return (
            "the URL carries credentials (user:password@); put them in a secret: the whole "
            "URL as `url: secret:NAME`, or a header whose value is `secret:NAME`"
        )
    return None


# -- running ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """A request with its secrets resolved. Never logged or put in a message."""

    url: str
    headers: dict[str, str]
    #: Headers whose value is a secret: not forwarded when a redirect leaves the origin.
    secret_headers: frozenset[str]
    #: Every resolved value, to scrub from the quoted body of an unexpected answer.
    revealed: tuple[str, ...]


def run_http_request(config: HttpRequestConfig, context: NodeContext) -> object:
    """Send the request and return the answer (or its table's reference); see the module."""
    request_line = f"{config.method} {_target(config.url)}"
    effects = config.side_effects()
    if context.sandboxed and effects == "sandboxed":
        context.logger.info("shadow run: request not sent (%s)", request_line)
        return {"status": None, "sent": False}
    if context.sandboxed and effects == "unsafe":
        # shadow_refusal keeps such workflows from shadowing; this guards any other path.
        raise NodeFailedError(
            f"{request_line} was not sent: a shadow run may not send a request "
            "whose side effects are `unsafe`"
        )
    # Checked before anything is sent, so a misconfigured runtime does not POST for nothing.
    store = context.table_store() if config.as_table else None
    request = _resolve(config, context)
    if context.cancelled():
        raise NodeCancelledError(f"{request_line} was not sent: the run was cancelled")
    body, status, content_type, encoding = _exchange(config, request, request_line, context)
    context.logger.info("%s answered %d (%d bytes)", request_line, status, len(body))
    if store is not None:
        # An answer that echoes a secret must not carry it into the table either.
        rows = context.secrets.redactor.redact_value(_rows(body, content_type, request_line))
        if context.cancelled():
            raise NodeCancelledError(
                f"{request_line}: the run was cancelled before the table was written"
            )
        table = _table(rows, request_line)
        with store.new_table(table.schema) as writer:
            for batch in table.to_batches(max_chunksize=TABLE_BATCH_ROWS):
                writer.write(batch)
            reference = writer.finish()
        return reference.to_output()
    headers = {"content-type": content_type}
    if _is_json(content_type):
        return {"status": status, "headers": headers, "json": _parsed(body, request_line)}
    return {"status": status, "headers": headers, "text": body.decode(encoding, errors="replace")}


def _target(url: str) -> str:
    """The URL as messages name it: without query and fragment, or the secret's reference."""
    if secret_name(url) is not None:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _resolve(config: HttpRequestConfig, context: NodeContext) -> _Request:
    revealed: list[str] = []
    url = context.reveal(config.url, use="http_url")
    url_secret = secret_name(config.url)
    if url_secret is not None:
        revealed.append(url)
        problem = _url_problem(url, secret=True)
        if problem is not None:
            raise NodeFailedError(f"the URL in {config.url} is unusable: {problem}")
    host = httpx.URL(url).host
    if url_secret is not None:
        # Its host was not known when the workflow was defined: the secret's own policy
        # decides now whether it may be sent there.
        context.reveal(config.url, use="http_url", host=host)
    headers: dict[str, str] = {}
    secret_headers: set[str] = set()
    for name, value in config.headers.items():
        resolved = context.reveal(value, use="http_header", host=host)
        if secret_name(value) is not None:
            revealed.append(resolved)
            secret_headers.add(name)
            # httpx and h11 quote a bad value in their errors; say what is wrong without it.
            if _HEADER_VALUE.fullmatch(resolved) is None:
                raise NodeFailedError(
                    f"the secret in header {name!r} ({value}) holds characters a header "
                    "cannot carry: line breaks, or other than printable ASCII"
                )
        headers[name] = resolved
    return _Request(url, headers, frozenset(secret_headers), tuple(revealed))


def _follows_redirects(method: str) -> bool:
    # A redirected GET or HEAD asks the same question elsewhere. Any other method would
    # be re-sent (307/308, writing twice if the first server acted) or silently turned
    # into a GET (301/302/303, dropping the body): the 3xx is the honest answer there.
    return method in REDIRECTED_METHODS


def _exchange(
    config: HttpRequestConfig, request: _Request, request_line: str, context: NodeContext
) -> tuple[bytes, int, str | None, str]:
    """Send the request and read the answer: body, status, content type and text encoding."""
    origin = _origin(httpx.URL(request.url))

    def keep_secrets_at_origin(outgoing: httpx.Request) -> None:
        # httpx drops only `Authorization` when a redirect leaves the origin; an API key
        # in any other header would be handed to whichever host the redirect names.
        if _origin(outgoing.url) != origin:
            for name in request.secret_headers:
                if outgoing.headers.pop(name, None) is not None:
                    context.logger.info(
                        "%s redirected to %s; header %r (a secret) not sent there",
                        request_line,
                        "://".join(_origin(outgoing.url)[:2]),
                        name,
                    )

    # The timeout applies to each step (connect, each read); the deadline to the whole.
    deadline = time.monotonic() + config.timeout_seconds
    try:
        with (
            httpx.Client(
                transport=_guarded_transport(context.policy),
                timeout=config.timeout_seconds,
                follow_redirects=_follows_redirects(config.method),
                event_hooks={"request": [keep_secrets_at_origin]},
                # No proxy from the environment: every connection goes through the guard.
                trust_env=False,
            ) as client,
            client.stream(
                config.method,
                # Merged here: httpx 0.28's `params=` replaces the URL's own query string.
                httpx.URL(request.url).copy_merge_params(config.query),
                headers=request.headers,
                json=config.json_body,
                content=config.body,
            ) as response,
        ):
            status = response.status_code
            if not _expected(status, config.expected_status):
                quoted = _scrub(_beginning(response), request.revealed)
                raise NodeFailedError(
                    f"{request_line} answered {status}, expected "
                    f"{_describe_expected(config.expected_status)}"
                    + (f"; the answer began: {quoted}" if quoted else "")
                )
            body = _read(response, config, request_line, deadline, context)
            content_type = response.headers.get("content-type")
            return body, status, content_type, _text_encoding(response)
    except httpx.TimeoutException as exc:
        raise NodeFailedError(
            f"{request_line} timed out after {config.timeout_seconds:g}s "
            f"{_TIMEOUT_STEPS.get(type(exc), 'waiting for the server')}"
        ) from exc
    except httpx.ConnectError as exc:
        raise NodeFailedError(
            f"{request_line} failed: could not connect ({str(exc) or 'no reason given'})"
        ) from exc
    except httpx.RequestError as exc:
        raise NodeFailedError(f"{request_line} failed: {type(exc).__name__}: {exc}") from exc


class _GuardedBackend(httpcore.SyncBackend):
    """Connects only where the policy allows: each host is resolved here, every address
    is checked, and the socket connects to the address that was checked, so a second
    resolution (DNS rebinding) cannot move it. Every connection goes through here: the
    first request's and each redirect hop's."""

    def __init__(self, policy: NodePolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(entry[4][0]) for entry in found))
        for address in addresses:
            refusal = self.policy.http_address_refusal(host, address)
            if refusal is not None:
                # Refused before any packet is sent: the answer is the same whether a
                # port there is open or closed.
                raise NodeFailedError(
                    f"destination {host!r} refused: it resolves to {refusal}, which "
                    "http_request may not reach; an operator can open a host or network "
                    "with FIGWAY_HTTP_ALLOW"
                )
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)


def _guarded_transport(policy: NodePolicy) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx builds its httpcore pool without a way to pass a network backend; the pool
    # keeps it in this attribute. tests/nodes/test_node_http.py fails if that changes.
    transport._pool._network_backend = _GuardedBackend(policy)
    return transport


_TIMEOUT_STEPS: dict[type[Exception], str] = {
    httpx.ConnectTimeout: "connecting",
    httpx.ReadTimeout: "waiting for the answer",
    httpx.WriteTimeout: "sending the request",
    httpx.PoolTimeout: "waiting for a free connection",
}


def _origin(url: httpx.URL) -> tuple[str, str, str]:
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, str(url.port or default_port)


def _expected(status: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return 200 <= status <= 299
    return status in ([expected] if isinstance(expected, int) else expected)


def _describe_expected(expected: int | list[int] | None) -> str:
    """
    >>> _describe_expected(None), _describe_expected([200, 201, 204])
    ('2xx', '200, 201 or 204')
    """
    if expected is None:
        return "2xx"
    statuses = [str(status) for status in ([expected] if isinstance(expected, int) else expected)]
    return statuses[0] if len(statuses) == 1 else f"{', '.join(statuses[:-1])} or {statuses[-1]}"


def _beginning(response: httpx.Response) -> str:
    """The start of an unexpected answer's body, on one line: what an API says went wrong."""
    collected = b""
    try:
        for chunk in response.iter_bytes():
            collected += chunk
            if len(collected) >= ERROR_BODY_CHARS * 4:  # enough for 300 characters of UTF-8
                break
    except httpx.HTTPError:
        pass  # the status is the news; a body that breaks off is not worth another error
    text = " ".join(collected.decode(_text_encoding(response), errors="replace").split())
    return text[:ERROR_BODY_CHARS] + ("…" if len(text) > ERROR_BODY_CHARS else "")


def _scrub(text: str, revealed: Sequence[str]) -> str:
    # The runtime masks revealed values too (and their parts: a URL's query values, a
    # bearer token); a server echoing a token back (httpbin and many error pages do)
    # must not depend on it.
    redactor = Redactor()
    for value in revealed:
        redactor.add(value)
    return redactor.redact(text)


def _read(
    response: httpx.Response,
    config: HttpRequestConfig,
    request_line: str,
    deadline: float,
    context: NodeContext,
) -> bytes:
    """The whole body, decompressed, failing as soon as it is too large or too late."""
    limit = context.policy.capped("max_response_bytes", config.max_response_bytes)
    declared = response.headers.get("content-length", "")
    # A HEAD answer announces the length of a body it does not send.
    if config.method != "HEAD" and declared.isdigit() and int(declared) > limit:
        raise NodeFailedError(
            f"{request_line} answered {int(declared)} bytes, more than "
            f"max_response_bytes ({limit}); not read"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise NodeFailedError(
                f"{request_line} answered more than max_response_bytes ({limit}); stopped reading"
            )
        chunks.append(chunk)
        if context.cancelled():
            raise NodeCancelledError(f"{request_line}: stopped reading after the run was cancelled")
        if time.monotonic() > deadline:
            raise NodeFailedError(
                f"{request_line} timed out after {config.timeout_seconds:g}s reading the answer"
            )
    return b"".join(chunks)


def _text_encoding(response: httpx.Response) -> str:
    charset = response.charset_encoding
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass  # an unknown charset label: UTF-8 is the likeliest truth
    return "utf-8"


def _is_json(content_type: str | None) -> bool:
    """
    >>> _is_json("application/problem+json; charset=utf-8"), _is_json("text/json")
    (True, False)
    """
    if content_type is None:
        return False
    return _JSON_CONTENT_TYPE.fullmatch(content_type.split(";")[0].strip().lower()) is not None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parsed(body: bytes, request_line: str) -> Any:
    """The body as JSON; an empty body (a HEAD, a 204) is ``None``."""
    if not body.strip():
        return None
    try:
        # NaN and Infinity are not JSON; Python would accept them, and the runtime could
        # then not store the output as JSON.
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise NodeFailedError(f"{request_line} answered JSON that does not parse: {exc}") from exc


def _json_kind(value: Any) -> str:
    """
    >>> _json_kind({}), _json_kind(True), _json_kind(1.5), _json_kind(None)
    ('object', 'boolean', 'number', 'null')
    """
    kinds: Sequence[tuple[type | tuple[type, ...], str]] = (
        (dict, "object"),
        (list, "array"),
        (str, "string"),
        (bool, "boolean"),  # before int: a bool is an int to isinstance
        ((int, float), "number"),
    )
    return next((kind for types, kind in kinds if isinstance(value, types)), "null")


def _rows(body: bytes, content_type: str | None, request_line: str) -> list[Mapping[str, Any]]:
    """The answer as rows: it must be a JSON array of objects, whatever its content type."""
    needed = "as_table needs a JSON array of objects"
    try:
        data = _parsed(body, request_line)
    except NodeFailedError:
        raise NodeFailedError(
            f"{request_line} answered {content_type or 'no content type'} that is not JSON; "
            + needed
        ) from None
    if not isinstance(data, list):
        raise NodeFailedError(f"{request_line} answered a JSON {_json_kind(data)}; {needed}")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise NodeFailedError(
                f"{request_line} answered an array whose item {index} is a JSON "
                f"{_json_kind(item)}; {needed}"
            )
    return data


def _table(rows: Sequence[Mapping[str, Any]], request_line: str) -> Any:
    # Not pa.Table.from_pylist: it takes the columns from the first object alone and
    # silently drops keys that only later objects have. Here every key is a column,
    # in the order keys first appear, null where an object lacks it.
    names = list(dict.fromkeys(key for row in rows for key in row))
    try:
        return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names})
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise NodeFailedError(
            f"{request_line} answered rows that do not make a table: {exc}"
        ) from exc


HTTP_REQUEST = NodeType(
    "http_request",
    HttpRequestConfig,
    run_http_request,
    "Sends one HTTP request; outputs the answer as JSON or text, or as a table (`as_table`).",
)
