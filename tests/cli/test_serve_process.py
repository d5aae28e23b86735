"""`figway serve` as a process: SIGTERM stops it, and nothing it started outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from tests.support.processes import LoggedProcess, free_port

FIGWAY = str(Path(sys.executable).with_name("figway"))
DEADLINE = 90.0


def processes_with(home: Path) -> list[int]:
    """Processes whose environment points PREFECT_HOME at ``home``."""
    found = []
    marker = f"PREFECT_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return found


@contextmanager
def serving(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client, Path]]:
    """``figway serve`` on a fresh data directory, every run going to Prefect in-process,
    once it answers /healthz; killed afterwards with anything Prefect-side it left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIGWAY_", "PREFECT_"))}
    env |= {"FIGWAY_DATA_DIR": str(tmp_path / "data"), "FIGWAY_DEFAULT_BACKEND": "prefect"}
    definition = tmp_path / "one.yaml"
    definition.write_text(
        "workflow_id: one\nworkspace_id: ws\nfolder_id: f\nnodes: {a: {type: noop}}\n"
    )
    loaded = subprocess.run(
        [FIGWAY, "workflows", "load", str(definition)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [FIGWAY, "serve", "--port", str(port), "--ws-port", str(free_port())],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    home = (tmp_path / "data" / "prefect").resolve()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
            yield serve, http, home
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        for pid in processes_with(home):  # never leave one behind, even when failing
            os.kill(pid, signal.SIGKILL)
        log.close()


def wait_until_succeeded(http: httpx.Client, job_run_id: str, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while http.get(f"/workflow_runs/{job_run_id}").json()["status"] != "succeeded":
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


BODY = {"workspace_id": "ws", "folder_id": "f", "job_id": "j", "workflow_id": "one"}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc (Linux)")
def test_sigterm_stops_the_gateway_and_the_ephemeral_prefect_server_it_started(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (serve, http, home):
        started = http.post("/workflow_runs/", json={**BODY, "job_run_id": "stop-1"})
        assert started.status_code == 201, started.text
        wait_until_succeeded(http, "stop-1", tmp_path / "serve.log")
        # The run went to Prefect in-process: its ephemeral API server is running.
        assert processes_with(home), "no ephemeral Prefect server was started"
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        deadline = time.monotonic() + 10
        while processes_with(home) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_with(home) == [], "the ephemeral Prefect server outlived figway serve"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (no network, no openssl)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "figway test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_serve_with_a_certificate_speaks_https_and_wss_on_both_ports(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIGWAY_", "PREFECT_"))}
    env |= {"FIGWAY_DATA_DIR": str(tmp_path / "data")}
    port, ws_port = free_port(), free_port()
    serve = LoggedProcess.start(
        "serve-tls",
        [
            *(FIGWAY, "serve", "--port", str(port), "--ws-port", str(ws_port)),
            *("--ssl-certfile", str(cert_file), "--ssl-keyfile", str(key_file)),
        ],
        env=env,
        log_dir=tmp_path,
    )
    try:
        trusted = ssl.create_default_context(cafile=str(cert_file))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trusted, timeout=10) as http:
            deadline = time.monotonic() + DEADLINE
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert serve.running(), serve.tail()
                assert time.monotonic() < deadline, serve.tail()
                time.sleep(0.2)
            assert http.get("/workflow_runs/stats").status_code == 200
        with pytest.raises(httpx.TransportError):  # no plain http beside it
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)

        async def close_code(url: str) -> int | None:
            async with websockets.connect(url, ssl=trusted) as socket:
                with contextlib.suppress(websockets.ConnectionClosed):
                    while True:
                        await socket.recv()
                return socket.close_code

        for url in (
            f"wss://127.0.0.1:{ws_port}/no-such-run",
            f"wss://127.0.0.1:{port}/ws/workflow_runs/no-such-run",
        ):
            assert asyncio.run(close_code(url)) == 4404, url
        assert f"figway API on https://127.0.0.1:{port}" in serve.tail(200)
        assert f"wss://127.0.0.1:{ws_port}/" in serve.tail(200)
    finally:
        serve.stop()


def test_prefect_starts_with_the_gateway_and_a_first_run_says_what_it_waits_for(
    tmp_path: Path,
) -> None:
    with serving(tmp_path) as (_, http, _home):
        # Started with the gateway, before any run: /readyz shows it coming (or up).
        startup = http.get("/readyz").json()["checks"]["prefect"]["startup"]
        assert startup["state"] in ("starting", "ready"), startup
        started = http.post("/workflow_runs/", json={**BODY, "job_run_id": "first-1"})
        assert started.status_code == 201, started.text
        waiting = started.json()["waiting_for"]
        after = http.get("/readyz").json()["checks"]["prefect"]
        if waiting is None:  # it came up before the run arrived: nothing to explain
            assert after["startup"]["state"] == "ready", after
        else:
            assert waiting.startswith("Prefect's temporary API, starting for"), waiting
            logs = http.get("/workflow_runs/first-1/logs").json()["lines"]
            line = next(x for x in logs if x["message"] == f"waiting for {waiting}")
            assert line["node"] is None  # the run's line, not a node's
        wait_until_succeeded(http, "first-1", tmp_path / "serve.log")
        assert http.get("/workflow_runs/first-1").json()["waiting_for"] is None
        assert http.get("/readyz").json()["checks"]["prefect"]["startup"]["state"] == "ready"
    banner = (tmp_path / "serve.log").read_text()
    assert "Prefect's temporary API is starting in the background" in banner
    assert "prefect: Prefect's temporary API is up after" in banner
