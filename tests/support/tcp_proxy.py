"""A TCP proxy on 127.0.0.1 that a test can use to break a database connection.

It forwards every connection to ``target`` byte for byte, in two threads per
connection. :meth:`TcpProxy.drop_connections` cuts every open connection at
once (both sides see it closed, as when a network path or the server dies);
:meth:`TcpProxy.stop` also stops listening, so new connections are refused.

>>> import socket
>>> with socket.create_server(("127.0.0.1", 0)) as server:
...     with TcpProxy(server.getsockname()) as proxy:
...         client = socket.create_connection(("127.0.0.1", proxy.port))
...         accepted, _ = server.accept()
...         _ = client.sendall(b"ping")
...         received = accepted.recv(4)
...         client.close(); accepted.close()
>>> received
b'ping'
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["TcpProxy"]


class _Link:
    """One proxied connection: the client's socket and the one to the target."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self._lock = threading.Lock()
        self._pumps_left = 2
        self.threads = [
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def cut(self) -> None:
        """Shut both sockets down: the pumps' recv() return and the peers see EOF."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=10)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65_536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # One side ending ends the link: a half-open database connection helps no test.
            self.cut()
            with self._lock:
                self._pumps_left -= 1
                last = self._pumps_left == 0
            if last:
                self.client.close()
                self.upstream.close()


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` until stopped."""

    def __init__(self, target: tuple[str, int], *, port: int = 0) -> None:
        self.target = target
        # A given port: a proxy stopped earlier comes back where its clients look for it.
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)  # accept() polls, so stop() is noticed
        self.port: int = self._listener.getsockname()[1]
        #: Local ports of the proxy's connections to the target (the server's client_port).
        self.upstream_ports: list[int] = []
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def drop_connections(self) -> int:
        """Cut every open connection; returns how many there were."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.cut()
        for link in links:
            link.join()
        return len(links)

    def stop(self) -> None:
        """Stop listening (connections are refused from now on) and cut every connection."""
        if not self._stopping.is_set():
            self._stopping.set()
            self._acceptor.join(timeout=10)
            self._listener.close()
        self.drop_connections()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
                self.upstream_ports.append(upstream.getsockname()[1])
            link.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
