"""A fake BigQuery REST API on loopback, for driving the real google-cloud-bigquery client.

It answers what a query job needs, the way BigQuery's v2 REST API does:

- ``POST /bigquery/v2/projects/P/jobs`` (jobs.insert) records the job;
- ``GET  /bigquery/v2/projects/P/jobs/ID`` (jobs.get) returns it;
- ``POST /bigquery/v2/projects/P/jobs/ID/cancel`` (jobs.cancel) stops it;
- ``GET  /bigquery/v2/projects/P/queries/ID`` (jobs.getQueryResults) returns the
  result ``maxResults`` rows at a time, the next page named by ``pageToken``.

Every request is kept in :attr:`FakeBigQuery.received`, so a test checks what
the client really sent. Use it as a context manager; :meth:`FakeBigQuery.client`
has the signature of ``backends.nodes.bigquery._client``, for monkeypatching.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeBigQuery", "Received"]

_PREFIX = "/bigquery/v2/projects/"


@dataclass(frozen=True)
class Received:
    """One request the fake server answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class _Job:
    resource: dict[str, Any]
    state: str
    polls_left: int | None  # jobs.get answers still RUNNING; None: until cancelled


class FakeBigQuery:
    """BigQuery's REST API for one result: ``schema`` (BigQuery fields) and ``rows``.

    Change how it behaves by setting attributes before the client calls it:
    ``done_after_polls`` (a job is RUNNING when inserted and DONE from that
    jobs.get on; 0: DONE at once; None: RUNNING until cancelled),
    ``insert_error`` (``(status, reason, message)``: jobs.insert fails),
    ``job_error`` (``(reason, message)``: the job ends failed), ``on_page``
    (called with each page's offset before it is served).
    """

    def __init__(self, *, schema: list[dict[str, Any]], rows: list[list[Any]]) -> None:
        self.schema = schema
        self.rows = rows
        self.done_after_polls: int | None = 1
        self.insert_error: tuple[int, str, str] | None = None
        self.job_error: tuple[str, str] | None = None
        self.on_page: Callable[[int], None] | None = None
        self.received: list[Received] = []
        self.credentials_given: list[object] = []
        self.clients: list[Any] = []
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeBigQuery:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def client(self, project: str, credentials: object, location: str | None) -> Any:
        """A real ``bigquery.Client`` pointed at this server, without credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        self.credentials_given.append(credentials)
        client = bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            location=location,
            client_options={"api_endpoint": self.endpoint},
        )
        self.clients.append(client)
        return client

    def requests_to(self, method: str, suffix: str) -> list[Received]:
        """The requests received with ``method`` whose path ends with ``suffix``."""
        return [r for r in self.received if r.method == method and r.path.endswith(suffix)]

    def inserted(self) -> dict[str, Any]:
        """The body of the one jobs.insert received."""
        (insert,) = [r for r in self.received if r.method == "POST" and r.path.endswith("/jobs")]
        body: dict[str, Any] = insert.body
        return body

    def page_requests(self) -> list[Received]:
        """Every jobs.getQueryResults received, oldest first."""
        return [r for r in self.received if "/queries/" in r.path]

    # -- serving ---------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_POST(self) -> None:
                fake._serve(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with self._lock:
            self.received.append(Received(method, url.path, parse_qs(url.query), body))
        status, payload = self._answer(method, url.path, parse_qs(url.query), body)
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict[str, Any]]:
        if not path.startswith(_PREFIX):
            return _error(404, "notFound", f"no such API: {path}")
        project, _, rest = path[len(_PREFIX) :].partition("/")
        parts = rest.split("/")
        if method == "POST" and parts == ["jobs"]:
            return self._insert(project, body)
        if method == "GET" and len(parts) == 2 and parts[0] == "jobs":
            return self._job(parts[1], self._get)
        if method == "POST" and len(parts) == 3 and parts[0] == "jobs" and parts[2] == "cancel":
            return self._job(parts[1], self._cancel)
        if method == "GET" and len(parts) == 2 and parts[0] == "queries":
            return self._job(parts[1], lambda job: self._results(job, query))
        return _error(404, "notFound", f"no such API: {method} {path}")

    def _insert(self, project: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.insert_error is not None:
            status, reason, message = self.insert_error
            return _error(status, reason, message)
        reference = dict(body["jobReference"])
        reference.setdefault("projectId", project)
        reference.setdefault("location", "US")
        job_id = reference["jobId"]
        resource = {
            "kind": "bigquery#job",
            "id": f"{project}:{reference['location']}.{job_id}",
            "jobReference": reference,
            "configuration": body["configuration"],
            "statistics": {
                "creationTime": "1764288000000",
                "startTime": "1764288000100",
                "totalBytesProcessed": "1234",
                "query": {
                    "totalBytesProcessed": "1234",
                    "totalBytesBilled": "10485760",
                    "statementType": "SELECT",
                },
            },
        }
        polls = self.done_after_polls
        job = _Job(resource, "DONE" if polls == 0 else "RUNNING", polls)
        if self.job_error is not None:
            reason, message = self.job_error
            resource["status"] = {
                "errorResult": {"reason": reason, "message": message},
                "errors": [{"reason": reason, "message": message}],
            }
        with self._lock:
            self._jobs[job_id] = job
        return 200, self._resource(job)

    def _job(
        self, job_id: str, answer: Callable[[_Job], tuple[int, dict[str, Any]]]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return _error(404, "notFound", f"Not found: Job {job_id}")
        return answer(job)

    def _get(self, job: _Job) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if job.polls_left is not None:
                job.polls_left = max(job.polls_left - 1, 0)
                if job.polls_left == 0:
                    job.state = "DONE"
        return 200, self._resource(job)

    def _resource(self, job: _Job) -> dict[str, Any]:
        status = dict(job.resource.get("status", {}))
        status["state"] = job.state
        return {**job.resource, "status": status}

    def _cancel(self, job: _Job) -> tuple[int, dict[str, Any]]:
        job.state = "DONE"
        stopped = {"reason": "stopped", "message": "Job execution was cancelled: User requested"}
        job.resource["status"] = {"errorResult": stopped, "errors": [stopped]}
        return 200, {"kind": "bigquery#jobCancelResponse", "job": self._resource(job)}

    def _results(self, job: _Job, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        reference = job.resource["jobReference"]
        if job.state != "DONE":
            return 200, {
                "kind": "bigquery#getQueryResultsResponse",
                "jobReference": reference,
                "jobComplete": False,
            }
        offset = int(query.get("pageToken", ["0"])[0])
        size = int(query.get("maxResults", [str(len(self.rows))])[0])
        if self.on_page is not None and size > 0:
            self.on_page(offset)
        page = self.rows[offset : offset + size]
        answer: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": reference,
            "schema": {"fields": self.schema},
            "totalRows": str(len(self.rows)),
            "jobComplete": True,
            "totalBytesProcessed": "1234",
            "cacheHit": False,
        }
        if page:
            answer["rows"] = [{"f": [{"v": _cell(value)} for value in row]} for row in page]
        if offset + len(page) < len(self.rows):
            answer["pageToken"] = str(offset + len(page))
        return 200, answer


def _cell(value: Any) -> Any:
    """A value as BigQuery's JSON rows carry it: text, or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(status: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": "INVALID_ARGUMENT" if status == 400 else "NOT_FOUND",
        }
    }
