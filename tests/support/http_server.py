"""A real HTTP server on loopback whose answers a test sets, and which keeps what it saw."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Answer", "Seen", "Server", "serve"]


@dataclass
class Answer:
    """What the server answers on one path."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Send Content-Length; without it the body ends when the connection closes.
    content_length: bool = True
    #: Seconds to wait before answering (cut short when the test ends).
    delay: float = 0.0
    #: Answer with the value of this request header as the body.
    echo_header: str | None = None


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Server:
    port: int = 0
    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    host: str = "127.0.0.1"

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def answer_json(self, path: str, value: Any, **fields: Any) -> None:
        self.answers[path] = Answer(body=json.dumps(value).encode(), **fields)


def _handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            server.seen.append(Seen(self.command, self.path, headers, body))
            answer = server.answers.get(
                urlsplit(self.path).path, Answer(404, b"no such path", "text/plain")
            )
            if answer.delay and server.release.wait(answer.delay):
                return  # the test is over: nobody waits for this answer any more
            payload = answer.body
            if answer.echo_header is not None:
                payload = headers.get(answer.echo_header.lower(), "").encode()
            try:
                self.send_response(answer.status)
                if answer.content_type is not None:
                    self.send_header("Content-Type", answer.content_type)
                if answer.content_length:
                    self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading on purpose (too large, timed out)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output to the tests

    return Handler


@contextmanager
def serve(host: str = "127.0.0.1") -> Iterator[Server]:
    """An HTTP/1.0 server on a free port of ``host`` (a loopback address), stopped and
    closed on exit."""
    state = Server(host=host)
    httpd = ThreadingHTTPServer((host, 0), _handler_for(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()  # joins the handler threads
        thread.join()
