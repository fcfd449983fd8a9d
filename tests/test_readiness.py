"""Probes and faults: the service answers 503, never hangs or leaks, and recovers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url

from apikeys.api.app import create_app
from apikeys.api.health import READY_TIMEOUT_SECONDS
from apikeys.config import Settings
from tests.conftest import World, empty_postgres, random_master_key


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app started with `settings`, and a client that calls it in process."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield app, client


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose server accepts TCP connections and then never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/nothing"


async def test_readyz_is_503_within_bounds_when_the_database_never_answers(
    silent_database: str,
) -> None:
    # A database timeout far above the probe's own bound, so only the probe's bound can
    # explain a prompt 503: within it + 0.5 s, plus a second for a loaded test machine.
    settings = Settings(
        database_url=silent_database, master_key=random_master_key(), database_timeout=30
    )
    async with serving(settings) as (_app, client):
        started = time.monotonic()
        ready = await client.get("/readyz")
        elapsed = time.monotonic() - started
        healthy = await client.get("/healthz")

    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    assert "retry-after" in ready.headers
    assert elapsed <= READY_TIMEOUT_SECONDS + 0.5 + 1.0
    assert healthy.status_code == 200


class SwitchableProxy:
    """A TCP proxy to PostgreSQL that can be cut (every connection dropped) and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def test_the_service_answers_503_while_postgres_is_gone_and_recovers_by_itself(
    postgres_database_url: str,
) -> None:
    await empty_postgres(postgres_database_url)
    target = make_url(postgres_database_url)
    proxy = SwitchableProxy(target.port or 5432)
    await proxy.start()
    through_proxy = target.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    settings = Settings(
        database_url=through_proxy, master_key=random_master_key(), database_timeout=2
    )
    async with serving(settings) as (app, client):
        world = World(app.state.services, client)
        await world.setup()
        owner = await world.mint()
        assert (await world.request(owner, "GET", "/me")).status_code == 200

        await proxy.cut()
        # The listing reads the database even while the caller's key is still cached.
        during = [await world.request(owner, "GET", "/accounts/10/api-keys") for _ in range(3)]
        ready_during = await client.get("/readyz")

        await proxy.start()
        after = await world.request(owner, "GET", "/me")
        created = await world.request(owner, "POST", "/accounts/10/api-keys", {"name": "k"})

    assert [response.status_code for response in during] == [503, 503, 503]
    assert all("retry-after" in response.headers for response in during)
    assert all("Traceback" not in r.text and "SELECT" not in r.text for r in during)
    assert ready_during.status_code == 503
    assert after.status_code == 200
    assert created.status_code == 201
