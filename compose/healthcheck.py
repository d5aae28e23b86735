#!/usr/bin/env python3
"""Container health checks of figway's compose stack, installed in the image as
``figway-healthcheck``. Exits 0 when healthy, 1 (with the reason on stderr) when not.

    figway-healthcheck http URL     URL answers 2xx within 5 s (the gateway's /readyz,
                                    a Prefect worker's /health)
    figway-healthcheck rq-worker    an RQ worker of this container is registered in
                                    Redis (FIGWAY_REDIS_URL); RQ drops a worker that
                                    stops heartbeating, so a hung one turns unhealthy
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request


def http(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = int(response.status)
    except OSError as exc:  # refused, timed out, or a 4xx/5xx (HTTPError is an OSError)
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if 200 <= status < 300 else 1


def rq_worker() -> int:
    from redis import Redis
    from rq import Worker

    host = socket.gethostname()  # the container's id: RQ records it with each worker
    try:
        redis = Redis.from_url(os.environ["FIGWAY_REDIS_URL"], socket_timeout=5)
        workers = Worker.all(connection=redis)
    except Exception as exc:  # any Redis or configuration error makes the check fail
        print(f"cannot list RQ workers: {exc}", file=sys.stderr)
        return 1
    if any(worker.hostname == host for worker in workers):
        return 0
    print(f"no RQ worker of host {host} is registered", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "http":
        return http(argv[1])
    if argv == ["rq-worker"]:
        return rq_worker()
    print("usage: figway-healthcheck http URL | figway-healthcheck rq-worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
