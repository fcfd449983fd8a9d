"""The service as it is deployed: several `apikeys serve` processes on one database, started
together, scaled out, stopped with SIGTERM, and behind a reverse proxy."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from apikeys.config import async_database_url
from apikeys.storage.migrations import alembic_config
from tests.conftest import new_postgres_database, random_master_key, run_now
from tests.servers import Server, cli, environment, free_port, start, stop, wait_ready
from tests.signing import bearer_headers, signed_headers

pytestmark = pytest.mark.full

ACCOUNT_ID = 7
REPLICAS = 3
CLIENTS = 16
CREATES_PER_CLIENT = 50
START_TIMEOUT_SECONDS = 60.0
# After draining, uvicorn re-raises the SIGTERM it caught, so a clean stop ends by that signal
# (as PID 1 of a container, which ignores it, the process exits 0 instead).
CLEAN_STOP = -signal.SIGTERM


def server_environment(database_url: str, **extra: str) -> dict[str, str]:
    return environment(database_url, random_master_key(), APIKEYS_LOG_LEVEL="WARNING", **extra)


def bootstrap_owner(env: dict[str, str], account_id: int, key_type: str) -> dict[str, Any]:
    """An account with one project, and an owner key for it, made with the CLI."""
    cli(["accounts", "create", "--name", "Acme", "--id", str(account_id), "--json"], env)
    project = ["projects", "create", "--account", str(account_id), "--name", "Web", "--id", "1"]
    cli([*project, "--json"], env)
    owner: dict[str, Any] = cli(
        ["keys", "create", "--account", str(account_id), "--name", "owner", "--type", key_type,
         "--role", "owner", "--json"],
        env,
    )  # fmt: skip
    return owner


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of the test's backend that nothing has touched yet: no schema at all."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with new_postgres_database() as url:
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """Scale-out means replicas sharing one PostgreSQL database; SQLite serves a single host."""
    with new_postgres_database() as url:
        yield url


async def _query(url: str, statement: str) -> list[Any]:
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(statement))).all())
    finally:
        await engine.dispose()


def _start(count: int, env: dict[str, str], tmp_path: Path) -> list[Server]:
    return [start(env, tmp_path / f"server-{index}.log") for index in range(count)]


def _stop_all(servers: list[Server]) -> list[int]:
    """SIGTERM each, as an orchestrator does; their exit codes (CLEAN_STOP when drained)."""
    for server in servers:
        stop(server)
    return [server.process.returncode for server in servers]


WAITING_FOR_LOCKS = text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def _start_in_step_on_postgres(
    count: int, url: str, env: dict[str, str], tmp_path: Path
) -> list[Server]:
    """Start the servers while an open transaction creates the table Alembic begins with, so
    every one of them blocks at its first migration step; then roll back, releasing them at
    the same instant. Without serialisation, they would then race through the same DDL."""
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.connect() as gate, engine.connect() as observer:
            await gate.execute(text("CREATE TABLE alembic_version (version_num varchar(32))"))
            servers = _start(count, env, tmp_path)
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            waiting = 0
            while waiting < count and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                waiting = (await observer.execute(WAITING_FOR_LOCKS)).scalar_one()
                await observer.rollback()  # activity is read once per transaction
            await gate.rollback()
    finally:
        await engine.dispose()
    return servers


def test_three_servers_started_at_once_on_an_empty_database_all_come_up_at_head(
    backend: str, empty_database_url: str, tmp_path: Path
) -> None:
    env = server_environment(empty_database_url)
    if backend == "postgresql":
        servers = asyncio.run(_start_in_step_on_postgres(3, empty_database_url, env, tmp_path))
    else:
        servers = _start(3, env, tmp_path)
    try:
        for server in servers:
            wait_ready(server, START_TIMEOUT_SECONDS)
        running = [server.process.poll() is None for server in servers]
    finally:
        exit_codes = _stop_all(servers)

    logs = "\n".join(server.logs() for server in servers)
    assert running == [True, True, True], logs
    assert exit_codes == [CLEAN_STOP] * 3, logs
    assert "Traceback" not in logs
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert run_now(_query(empty_database_url, "SELECT version_num FROM alembic_version")) == [
        (head,)
    ]


async def _create_keys(servers: list[Server], owner_secret: str) -> list[httpx.Response]:
    """CLIENTS concurrent clients, each sending its creates round-robin over the replicas."""

    async def client(number: int) -> list[httpx.Response]:
        replicas = itertools.islice(itertools.cycle(servers), number, None)
        responses = []
        async with httpx.AsyncClient(timeout=30, headers=bearer_headers(owner_secret)) as http:
            for index, server in zip(range(CREATES_PER_CLIENT), replicas, strict=False):
                key_type = "secretKey" if index % 2 else "requestSigning"
                responses.append(
                    await http.post(
                        f"{server.base_url}/accounts/{ACCOUNT_ID}/api-keys",
                        json={"name": f"client {number} key {index}", "type": key_type},
                    )
                )
        return responses

    batches = await asyncio.gather(*(client(number) for number in range(CLIENTS)))
    return [response for batch in batches for response in batch]


async def _authenticate_everywhere(
    servers: list[Server], created: list[dict[str, Any]]
) -> list[tuple[int, str | None]]:
    """GET /me with every created key on every replica; (status, key named) per request."""
    work = [(body, server) for body in created for server in servers]
    results: list[tuple[int, str | None]] = []

    async def worker(http: httpx.AsyncClient) -> None:
        while work:
            body, server = work.pop()
            url = f"{server.base_url}/me"
            if body["type"] == "secretKey":
                headers = bearer_headers(body["secret"])
            else:
                headers = signed_headers(body["key"], body["secret"], url)
            response = await http.get(url, headers=headers)
            named = response.json().get("key") if response.status_code == 200 else None
            results.append((response.status_code, named))

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(worker(http) for _ in range(CLIENTS)))
    return results


def test_keys_created_concurrently_across_replicas_are_unique_and_work_on_every_replica(
    empty_postgres_url: str, tmp_path: Path
) -> None:
    env = server_environment(empty_postgres_url)
    owner = bootstrap_owner(env, ACCOUNT_ID, "secretKey")
    servers = _start(REPLICAS, env, tmp_path)
    try:
        for server in servers:
            wait_ready(server, START_TIMEOUT_SECONDS)
        started = time.perf_counter()
        responses = asyncio.run(_create_keys(servers, owner["secret"]))
        create_seconds = time.perf_counter() - started
        created = [response.json() for response in responses if response.status_code == 201]
        started = time.perf_counter()
        checks = asyncio.run(_authenticate_everywhere(servers, created))
        check_seconds = time.perf_counter() - started
    finally:
        exit_codes = _stop_all(servers)

    print(
        f"\n{len(responses)} creates by {CLIENTS} clients over {REPLICAS} replicas: "
        f"{create_seconds:.1f} s ({len(responses) / create_seconds:.0f}/s); "
        f"{len(checks)} authentications: {check_seconds:.1f} s "
        f"({len(checks) / check_seconds:.0f}/s)"
    )
    assert sorted({response.status_code for response in responses}) == [201]
    assert len(created) == CLIENTS * CREATES_PER_CLIENT
    assert len({body["key"] for body in created}) == len(created)
    assert len({body["secret"] for body in created}) == len(created)
    assert sorted(status for status, _ in checks) == [200] * len(created) * REPLICAS
    assert sorted(named or "" for _, named in checks) == sorted(
        body["key"] for body in created for _ in servers
    )
    stored = run_now(
        _query(
            empty_postgres_url,
            f"SELECT public_id FROM api_keys WHERE account_id = {ACCOUNT_ID} "
            f"AND public_id <> '{owner['key']}'",
        )
    )
    assert sorted(row[0] for row in stored) == sorted(body["key"] for body in created)
    assert exit_codes == [CLEAN_STOP] * REPLICAS


def _read_response(connection: socket.socket) -> bytes:
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_sigterm_lets_an_in_flight_request_finish_and_refuses_new_connections(
    empty_database_url: str, tmp_path: Path
) -> None:
    env = server_environment(empty_database_url)
    owner = bootstrap_owner(env, ACCOUNT_ID, "secretKey")
    (server,) = _start(1, env, tmp_path)
    try:
        wait_ready(server, START_TIMEOUT_SECONDS)
        body = b'{"name": "made while stopping", "type": "secretKey"}'
        head = (
            f"POST /accounts/{ACCOUNT_ID}/api-keys HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {owner['secret']}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
            # Half the body: the request is in flight, the handler waiting for the rest.
            connection.sendall(head + body[:10])
            time.sleep(0.5)
            server.process.terminate()
            refused = False
            deadline = time.monotonic() + 10
            while not refused and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                    time.sleep(0.05)
                except ConnectionRefusedError:
                    refused = True
            still_running = server.process.poll() is None
            connection.sendall(body[10:])
            response = _read_response(connection)
        exit_code = server.process.wait(30)
    finally:
        stop(server)

    assert refused, server.logs()
    assert still_running, server.logs()
    assert response.startswith(b"HTTP/1.1 201 "), server.logs()
    assert exit_code == CLEAN_STOP, server.logs()


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for `localhost`, so the proxy can speak https while the service does not."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "proxy.crt", directory / "proxy.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path


NGINX_CONF = """
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server {{
        listen 127.0.0.1:{public_port} ssl;
        server_name localhost;
        ssl_certificate {certificate};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{internal_port};
            proxy_http_version 1.1;
            # The service sees another host, port and scheme than the client used.
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground, every file of it under one directory."""

    def __init__(self, directory: Path, public_port: int, internal_port: int) -> None:
        executable = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin")
        assert executable, "nginx is not installed: run .ci/ensure-nginx"
        certificate, key = _self_signed_certificate(directory)
        (directory / "tmp").mkdir()
        self.port = public_port
        self.certificate = certificate
        config = directory / "nginx.conf"
        config.write_text(
            NGINX_CONF.format(
                public_port=self.port,
                internal_port=internal_port,
                certificate=certificate,
                key=key,
            )
        )
        self.directory = directory
        self.process = subprocess.Popen(
            [executable, "-p", directory, "-c", config, "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=(directory / "nginx.out").open("wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError((directory / "nginx.out").read_text())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def test_behind_a_proxy_requests_signed_against_the_public_url_verify(
    database_url: str, tmp_path: Path
) -> None:
    public_port = free_port()
    public_url = f"https://localhost:{public_port}"
    env = server_environment(database_url, APIKEYS_PUBLIC_URL=public_url)
    owner = bootstrap_owner(env, ACCOUNT_ID, "requestSigning")

    def owner_signature(url: str, body: bytes) -> dict[str, str]:
        return signed_headers(owner["key"], owner["secret"], url, body)

    server = start(env, tmp_path / "server.log")
    path = f"/accounts/{ACCOUNT_ID}/api-keys"
    body = b'{"name": "made through the proxy"}'
    json_type = {"Content-Type": "application/json"}
    try:
        wait_ready(server, START_TIMEOUT_SECONDS)
        proxy_directory = tmp_path / "nginx"
        proxy_directory.mkdir()
        proxy = Nginx(proxy_directory, public_port, server.port)
        trust = ssl.create_default_context(cafile=str(proxy.certificate))
        try:
            with httpx.Client(base_url=public_url, verify=trust, timeout=10) as http:
                public = http.post(
                    path,
                    content=body,
                    headers=json_type | owner_signature(public_url + path, body),
                )
                internal = http.post(
                    path,
                    content=body,
                    headers=json_type | owner_signature(server.base_url + path, body),
                )
                me = http.get("/me", headers=owner_signature(public_url + "/me", b""))
        finally:
            proxy.stop()
    finally:
        stop(server)

    assert public.status_code == 201, public.text
    assert public.headers["location"] == f"{path}/{public.json()['key']}"
    assert internal.status_code == 401
    assert f"{public_url}{path}" in internal.json()["detail"]
    assert me.status_code == 200 and me.json()["key"] == owner["key"]
