"""Tests that use the database run against a real SQLite file and a real PostgreSQL database.

SQLite: a schema migrated once per session is copied into each test's own directory.
PostgreSQL: one database per session, migrated once, every table emptied before each test.
A test marked `one_backend` uses the app but reads nothing a backend could change, and runs
on SQLite only.

Tests marked `full` start processes (servers, the CLI, nginx, Chromium, clusters of their
own); `pytest -m "not full"` is the fast tier. A test that uses a live server is marked so
here, by its fixture.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from apikeys.api.app import create_app
from apikeys.config import Settings, async_database_url
from apikeys.domain import KeyType, Role
from apikeys.service import accounts, keys
from apikeys.services import Services
from apikeys.storage.migrations import upgrade_to_head
from apikeys.storage.models import Base
from tests.signing import bearer_headers, signed_headers

# An administrative connection to the PostgreSQL server the tests may create databases on.
POSTGRES_ADMIN_URL = os.environ.get(
    "APIKEYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")

ACCOUNT_ID = 10
OTHER_ACCOUNT_ID = 20
PROJECTS = (1, 2, 3)  # projects of ACCOUNT_ID
OTHER_PROJECT = 4  # a project of OTHER_ACCOUNT_ID


def run_now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion from anywhere, even inside a running event loop."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def random_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def _admin(statement: str) -> None:
    engine = create_async_engine(
        async_database_url(POSTGRES_ADMIN_URL), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "apikeys.db"
    run_now(upgrade_to_head(async_database_url(f"sqlite:///{path}")))
    return path


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own (no schema), dropped afterwards."""
    name = f"apikeys_test_{uuid.uuid4().hex[:12]}"
    run_now(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        run_now(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    with new_postgres_database() as url:
        run_now(upgrade_to_head(async_database_url(url)))
        yield url


async def empty_postgres(url: str) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    engine = create_async_engine(async_database_url(url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated backends the database tests run on (default: all)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--backends").split(",")
        if metafunc.definition.get_closest_marker("one_backend") is not None:
            chosen = chosen[:1]
        metafunc.parametrize("backend", chosen, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "live" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.full)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty database of the test's backend."""
    if backend == "sqlite":
        path = tmp_path / "apikeys.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database_url")
    await empty_postgres(url)
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, master_key=random_master_key())


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def services(app: FastAPI) -> Services:
    result: Services = app.state.services
    return result


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass(frozen=True)
class Credential:
    """A key made for a test, and how to present it."""

    key: str
    secret: str
    type: KeyType
    body: dict[str, Any]

    def headers(self, method: str, url: str, body: bytes = b"") -> dict[str, str]:
        if self.type is KeyType.SECRET_KEY:
            return bearer_headers(self.secret)
        return signed_headers(self.key, self.secret, url, body)


class World:
    """Accounts, projects and a way to mint keys directly, as the CLI does."""

    def __init__(self, services: Services, client: httpx.AsyncClient) -> None:
        self.services = services
        self.client = client

    async def setup(self) -> None:
        async with self.services.database.transaction() as session:
            await accounts.create_account(session, "Acme", ACCOUNT_ID)
            await accounts.create_account(session, "Other", OTHER_ACCOUNT_ID)
            for project in PROJECTS:
                await accounts.create_project(session, ACCOUNT_ID, f"Project {project}", project)
            await accounts.create_project(session, OTHER_ACCOUNT_ID, "Theirs", OTHER_PROJECT)

    async def mint(
        self,
        *,
        type: KeyType = KeyType.SECRET_KEY,
        role: Role = Role.OWNER,
        projects: frozenset[int] | None = None,
        account_id: int = ACCOUNT_ID,
        name: str = "test key",
    ) -> Credential:
        request = keys.KeyRequest(
            name=name, type=type, role=role, project_ids=projects, expires_at=None
        )
        issued = await self.services.keys.create_bootstrap(account_id, request)
        return Credential(issued.info.key, issued.secret, type, {})

    async def request(
        self,
        credential: Credential,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request authenticated with `credential`, signed over the exact bytes sent."""
        content = raw
        extra = dict(headers or {})
        if json_body is not None:
            content = httpx.Request("POST", "http://x", json=json_body).content
            extra.setdefault("Content-Type", "application/json")
        url = str(self.client.base_url.join(path))
        auth = credential.headers(method, url, content or b"")
        return await self.client.request(method, path, content=content, headers={**extra, **auth})


@pytest.fixture
async def world(services: Services, client: httpx.AsyncClient) -> World:
    result = World(services, client)
    await result.setup()
    return result
