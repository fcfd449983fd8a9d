"""Real database faults: every one is a 503 problem with Retry-After, within the database
timeout, never a 500 or a traceback, and the service recovers by itself once it ends.

PostgreSQL runs in a cluster of this module's own (tests/pgcluster.py), stopped, restarted,
frozen and filled at will; SQLite sits on a small file system mounted here and filled up.

Bounds: the service promises an answer within its timeout + 0.5 s. LOAD_MARGIN adds a
second on top for a loaded two-core test machine; a wait the deadline did not cut short is
a multiple of the timeout, far past either.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from apikeys.api.health import READY_TIMEOUT_SECONDS
from apikeys.config import Settings, async_database_url
from apikeys.storage.migrations import upgrade_to_head
from tests import pgcluster, servers
from tests.conftest import ACCOUNT_ID, Credential, World, random_master_key, run_now
from tests.signing import bearer_headers
from tests.test_readiness import serving

pytestmark = pytest.mark.full

TIMEOUT = 3.0  # APIKEYS_DATABASE_TIMEOUT for these tests: short, and apart from /readyz's 2 s
PROMISED_MARGIN = 0.5
LOAD_MARGIN = 1.0
MAX_CONNECTIONS = 12
KEYS = f"/accounts/{ACCOUNT_ID}/api-keys"


def assert_unavailable(response: httpx.Response, elapsed: float, bound: float = TIMEOUT) -> None:
    """A 503 problem a client can act on, in time, with nothing of the driver in it."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["status"] == 503 and body["detail"]
    for leak in ("Traceback", "SELECT", "INSERT", "asyncpg", "sqlite3", "postgresql://"):
        assert leak not in response.text
    assert elapsed <= bound + PROMISED_MARGIN + LOAD_MARGIN, f"{elapsed:.2f} s"


@pytest.fixture(scope="module")
def cluster() -> Iterator[pgcluster.Cluster]:
    with pgcluster.cluster(max_connections=MAX_CONNECTIONS) as own:
        yield own


@pytest.fixture
def cluster_database(cluster: pgcluster.Cluster) -> str:
    """A migrated database of the test's own on the module's cluster."""
    url = cluster.create_database()
    run_now(upgrade_to_head(async_database_url(url)))
    return url


class Service:
    """An app in process, with an account and an owner key, and a timer for requests."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client
        self.world = World(app.state.services, client)
        self.owner: Credential | None = None

    async def call(
        self, method: str, path: str, body: Any = None, *, after: float = 0.0
    ) -> tuple[httpx.Response, float]:
        await asyncio.sleep(after)
        started = time.monotonic()
        if path == "/readyz":
            response = await self.client.get(path)
        else:
            assert self.owner is not None
            response = await self.world.request(self.owner, method, path, body)
        return response, time.monotonic() - started

    async def key_names(self) -> set[str]:
        async with self.app.state.services.database.sessions() as session:
            return set((await session.scalars(text("SELECT name FROM api_keys"))).all())

    async def recovered(self, within: float = 15.0) -> None:
        """Wait until the service is ready again by itself, then check it serves."""
        deadline = time.monotonic() + within
        while (await self.client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the service did not recover by itself"
            await asyncio.sleep(0.2)
        me, _ = await self.call("GET", "/me")
        created, _ = await self.call("POST", KEYS, {"name": "after the fault"})
        assert me.status_code == 200, me.text
        assert created.status_code == 201, created.text


@asynccontextmanager
async def service(
    url: str, *, setup: bool = True, master_key: str | None = None
) -> AsyncIterator[Service]:
    # No authentication cache: every request asks the database.
    settings = Settings(
        database_url=url,
        master_key=master_key or random_master_key(),
        database_timeout=TIMEOUT,
        auth_cache_ttl=0,
    )
    async with serving(settings) as (app, client):
        running = Service(app, client)
        if setup:
            await running.world.setup()
            running.owner = await running.world.mint()
        yield running


async def test_a_frozen_postgres_answers_503_within_the_timeout_and_leaves_no_key_behind(
    cluster: pgcluster.Cluster, cluster_database: str
) -> None:
    async with service(cluster_database) as running:
        calls = [
            # More at once than the pool holds, so some wait for a connection first.
            *(running.call("GET", "/me") for _ in range(24)),
            *(running.call("POST", KEYS, {"name": f"frozen {n}"}) for n in range(10)),
            # Sent while the first creates still wait: they must not queue behind them.
            *(running.call("POST", KEYS, {"name": f"late {n}"}, after=TIMEOUT) for n in range(5)),
            running.call("GET", f"{KEYS}?limit=5"),
            running.call("GET", "/readyz"),
            running.call("GET", "/readyz", after=1.0),
        ]
        with cluster.frozen():
            answers = await asyncio.gather(*calls)
        await running.recovered()
        names = await running.key_names()

    for response, elapsed in answers:
        is_probe = response.request.url.path == "/readyz"
        assert_unavailable(response, elapsed, READY_TIMEOUT_SECONDS if is_probe else TIMEOUT)
    # Nobody who got a 503 was given a key committed once the database woke up.
    assert not {name for name in names if name.startswith(("frozen", "late"))}


async def test_restarts_and_crash_recovery_are_503_never_500_and_recover(
    cluster: pgcluster.Cluster, cluster_database: str
) -> None:
    async with service(cluster_database) as running:
        answers: list[tuple[httpx.Response, float]] = []
        restarting = True

        async def traffic() -> None:
            count = 0
            while restarting:
                count += 1
                if count % 2:
                    answers.append(await running.call("GET", "/me"))
                else:
                    answers.append(await running.call("POST", KEYS, {"name": f"r{count}"}))

        async def restarts() -> None:
            await asyncio.sleep(0.5)
            # Fast: sessions are ended and the server refuses new ones while it shuts down.
            # Immediate: the next start replays the log first, refusing connections meanwhile.
            for mode in ("fast", "immediate", "fast"):
                await asyncio.to_thread(cluster.stop, mode)
                await asyncio.to_thread(cluster.start, wait=False)
                await asyncio.sleep(1.0)

        loops = [asyncio.create_task(traffic()) for _ in range(4)]
        try:
            await restarts()
            await asyncio.to_thread(pgcluster.wait_until, cluster.is_running)
        finally:
            restarting = False
            await asyncio.gather(*loops)
        await running.recovered()

    statuses = {response.status_code for response, _ in answers}
    assert statuses <= {200, 201, 503}, statuses
    assert 503 in statuses
    for response, elapsed in answers:
        if response.status_code == 503:
            assert_unavailable(response, elapsed)


async def test_a_server_not_accepting_connections_yet_is_503_and_recovers(
    cluster: pgcluster.Cluster, cluster_database: str
) -> None:
    async with service(cluster_database) as running:
        with cluster.in_recovery(readable=False):
            await asyncio.to_thread(pgcluster.wait_until, lambda: _refuses_as_starting(cluster))
            answers = [
                await running.call("GET", "/me"),
                await running.call("POST", KEYS, {"name": "while starting"}),
                await running.call("GET", "/readyz"),
            ]
        await running.recovered()

    for response, elapsed in answers:
        assert_unavailable(response, elapsed)


def _refuses_as_starting(cluster: pgcluster.Cluster) -> bool:
    async def attempt() -> bool:
        try:
            connection = await asyncpg.connect(cluster.url, timeout=2)
        except asyncpg.CannotConnectNowError:
            return True
        except OSError:
            return False
        await connection.close()
        return False

    return asyncio.run(attempt())


async def test_a_database_that_answers_reads_but_takes_no_writes_is_not_ready(
    cluster: pgcluster.Cluster, cluster_database: str
) -> None:
    async with service(cluster_database) as running:
        with cluster.in_recovery(readable=True):
            # Pooled connections died with the restart; the pool replaces them by itself.
            me, _ = await running.call("GET", "/me")
            if me.status_code != 200:
                me, _ = await running.call("GET", "/me")
            created = await running.call("POST", KEYS, {"name": "on a standby"})
            ready = await running.call("GET", "/readyz")
        await running.recovered()

    assert me.status_code == 200
    assert_unavailable(*created)
    assert "no writes" in created[0].json()["detail"]
    assert_unavailable(*ready, bound=READY_TIMEOUT_SECONDS)
    assert "no writes" in ready[0].json()["detail"]


async def test_at_max_connections_requests_are_503_not_500_and_recover(
    cluster: pgcluster.Cluster, cluster_database: str
) -> None:
    master_key = random_master_key()
    async with service(cluster_database, master_key=master_key) as first:
        owner = first.owner
    held: list[asyncpg.Connection] = []
    try:
        with pytest.raises(asyncpg.TooManyConnectionsError):
            for _ in range(MAX_CONNECTIONS + 1):
                held.append(await asyncpg.connect(cluster.url))
        async with service(cluster_database, setup=False, master_key=master_key) as running:
            running.owner = owner
            answers = [
                await running.call("GET", "/me"),
                await running.call("POST", KEYS, {"name": "no slot"}),
                await running.call("GET", "/readyz"),
            ]
            for connection in held:
                await connection.close()
            held.clear()
            await running.recovered()
    finally:
        for connection in held:
            await connection.close()

    for response, elapsed in answers:
        assert_unavailable(response, elapsed)


@contextmanager
def small_file_system(size: str = "24m") -> Iterator[Path]:
    mount_point = Path(tempfile.mkdtemp(prefix="apikeys-small-fs-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        check=True,
        timeout=30,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=30)
        mount_point.rmdir()


def fill(directory: Path) -> Path:
    """A file that takes every free byte of the file system."""
    filler = directory / "filler"
    with filler.open("wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    return filler


async def test_sqlite_on_a_full_disk_is_503_saying_so_not_ready_and_recovers(
    sqlite_template: Path,
) -> None:
    with small_file_system() as directory:
        database = directory / "apikeys.db"
        shutil.copy(sqlite_template, database)
        async with service(f"sqlite:///{database}") as running:
            assert (await running.call("GET", "/readyz"))[0].status_code == 200
            filler = fill(directory)
            created = [await running.call("POST", KEYS, {"name": f"full {n}"}) for n in range(3)]
            ready = await running.call("GET", "/readyz")
            filler.unlink()
            ready_after = await running.call("GET", "/readyz")
            # Space freed stays free for writes: the log does not eat it up again.
            after = [await running.call("POST", KEYS, {"name": f"after {n}"}) for n in range(200)]
            names = await running.key_names()

    for response, elapsed in created:
        assert_unavailable(response, elapsed)
        assert "full" in response.json()["detail"]
    assert_unavailable(*ready, bound=READY_TIMEOUT_SECONDS)
    assert "full" in ready[0].json()["detail"]
    assert ready_after[0].status_code == 200
    assert [response.status_code for response, _ in after] == [201] * 200
    assert not {name for name in names if name.startswith("full")}


# The CLI and the server, as processes.

START_WAIT = 3  # APIKEYS_STARTUP_TIMEOUT for these tests
# Starting the interpreter and importing the service takes seconds on a loaded machine.
PROCESS_START_MARGIN = 8.0


@contextmanager
def database_state(cluster: pgcluster.Cluster, state: str) -> Iterator[str]:
    """The cluster down, frozen, or refusing connections as when starting up."""
    if state == "down":
        cluster.stop()
        try:
            yield cluster.url
        finally:
            cluster.start()
    elif state == "frozen":
        with cluster.frozen():
            yield cluster.url
    else:
        with cluster.in_recovery(readable=False):
            pgcluster.wait_until(lambda: _refuses_as_starting(cluster))
            yield cluster.url


# What the one line names as the cause: the driver's own error, never the cancellation a
# timeout is raised from.
CAUSE_NAMED = {
    "down": "ConnectionRefusedError",
    "frozen": "TimeoutError",
    "starting": "CannotConnectNowError",
}


@pytest.mark.parametrize("state", ["down", "frozen", "starting"])
def test_serve_gives_up_on_an_unavailable_database_in_time_with_one_line(
    cluster: pgcluster.Cluster, state: str, tmp_path: Path
) -> None:
    with database_state(cluster, state) as url:
        env = servers.environment(url, random_master_key(), APIKEYS_STARTUP_TIMEOUT=str(START_WAIT))
        started = time.monotonic()
        done = subprocess.run(
            [servers.APIKEYS, "serve", "--port", str(servers.free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started

    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"did not answer within {START_WAIT} s ({CAUSE_NAMED[state]})" in done.stderr
    assert "Traceback" not in done.stderr
    assert START_WAIT <= elapsed <= START_WAIT + PROCESS_START_MARGIN


def test_serve_started_before_the_database_waits_for_it(
    cluster: pgcluster.Cluster, cluster_database: str, tmp_path: Path
) -> None:
    cluster.stop()
    try:
        env = servers.environment(
            cluster_database, random_master_key(), APIKEYS_STARTUP_TIMEOUT="60"
        )
        server = servers.start(env, tmp_path / "server.log")
        try:
            # Long enough for the process to start and find the database down.
            time.sleep(PROCESS_START_MARGIN)
            assert server.process.poll() is None, server.logs()
            cluster.start()
            servers.wait_ready(server)
        finally:
            servers.stop(server)
    finally:
        if not cluster.is_running():
            cluster.start()
    assert "Traceback" not in server.logs()


@contextmanager
def live_server(url: str, log: Path, **extra: str) -> Iterator[tuple[servers.Server, str]]:
    """`apikeys serve` with an account and an owner key's secret."""
    env = servers.environment(url, random_master_key(), **extra)
    servers.cli(["accounts", "create", "--name", "Acme", "--id", str(ACCOUNT_ID), "--json"], env)
    owner = servers.cli(
        [
            *("keys", "create", "--account", str(ACCOUNT_ID), "--name", "owner"),
            *("--type", "secretKey", "--role", "owner", "--json"),
        ],
        env,
    )
    with servers.running(env, log) as server:
        yield server, owner["secret"]


async def _timed(send: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await send
    return response, time.monotonic() - started


def test_a_real_server_answers_a_frozen_database_in_time_and_recovers(
    cluster: pgcluster.Cluster, cluster_database: str, tmp_path: Path
) -> None:
    extra = {"APIKEYS_DATABASE_TIMEOUT": str(TIMEOUT), "APIKEYS_AUTH_CACHE_TTL": "0"}
    with live_server(cluster_database, tmp_path / "server.log", **extra) as (server, secret):
        auth = bearer_headers(secret)

        async def during() -> list[tuple[httpx.Response, float]]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                assert (await http.get("/me", headers=auth)).status_code == 200
                with cluster.frozen():
                    return await asyncio.gather(
                        *(_timed(http.get("/me", headers=auth)) for _ in range(8)),
                        *(
                            _timed(http.post(KEYS, json={"name": f"frozen {n}"}, headers=auth))
                            for n in range(8)
                        ),
                        _timed(http.get("/readyz")),
                    )

        answers = asyncio.run(during())
        pgcluster.wait_until(lambda: httpx.get(f"{server.base_url}/readyz").status_code == 200)
        after = httpx.post(f"{server.base_url}{KEYS}", json={"name": "after"}, headers=auth)
        listed = httpx.get(f"{server.base_url}{KEYS}?limit=200", headers=auth).json()["data"]
        logs = server.logs()

    for response, elapsed in answers:
        is_probe = response.request.url.path == "/readyz"
        assert_unavailable(response, elapsed, READY_TIMEOUT_SECONDS if is_probe else TIMEOUT)
    assert after.status_code == 201
    assert not [key for key in listed if key["name"].startswith("frozen")]
    assert "Traceback" not in logs


def test_requests_running_past_the_shutdown_grace_answer_503_and_log_no_traceback(
    cluster: pgcluster.Cluster, cluster_database: str, tmp_path: Path
) -> None:
    grace = 1
    # A database timeout far past the grace, so the grace is what ends the requests.
    extra = {"APIKEYS_DATABASE_TIMEOUT": "30", "APIKEYS_SHUTDOWN_GRACE": str(grace)}
    with live_server(cluster_database, tmp_path / "server.log", **extra) as (server, secret):
        auth = bearer_headers(secret)

        async def cut_short() -> tuple[list[httpx.Response], float]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                with cluster.frozen():
                    pending = [
                        asyncio.create_task(http.post(KEYS, json={"name": f"k{n}"}, headers=auth))
                        for n in range(5)
                    ]
                    await asyncio.sleep(1.0)
                    server.process.send_signal(signal.SIGTERM)
                    stopping = time.monotonic()
                    responses = await asyncio.gather(*pending)
                    return responses, time.monotonic() - stopping

        responses, elapsed = asyncio.run(cut_short())
        server.process.wait(timeout=60)
        logs = server.logs()

    for response in responses:
        assert_unavailable(response, elapsed, bound=grace)
        assert "shutting down" in response.json()["detail"]
    assert "Traceback" not in logs and "CancelledError" not in logs
