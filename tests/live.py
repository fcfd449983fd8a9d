"""A running `apikeys serve` with an account, a project and two owner keys made by the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import servers
from tests.conftest import BACKENDS, empty_postgres, random_master_key, run_now

ACCOUNT_ID = 10
PROJECT_ID = 1  # the project the "Nightly Data Sync Script" example names


@dataclass(frozen=True)
class OwnerKey:
    key: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class LiveService:
    base_url: str
    account_id: int
    signing_owner: OwnerKey
    bearer_owner: OwnerKey
    env: dict[str, str] = field(repr=False)  # holds the master key

    @property
    def keys_url(self) -> str:
        return f"{self.base_url}/accounts/{self.account_id}/api-keys"


def _owner_key(env: dict[str, str], account_id: int, key_type: str) -> OwnerKey:
    body = servers.cli(
        [
            *("keys", "create", "--account", str(account_id), "--name", f"{key_type} owner"),
            *("--type", key_type, "--role", "owner", "--json"),
        ],
        env,
    )
    return OwnerKey(body["key"], body["secret"])


def database_for(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    """An empty migrated database of `backend` that a server may keep for a whole module."""
    if backend == "sqlite":
        path = directory / "apikeys.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database_url")
    run_now(empty_postgres(url))
    return url


@contextmanager
def live_service(database_url: str, directory: Path, **extra_env: str) -> Iterator[LiveService]:
    env = servers.environment(database_url, random_master_key(), **extra_env)
    account_id = ACCOUNT_ID
    servers.cli(["accounts", "create", "--name", "Acme", "--id", str(account_id), "--json"], env)
    servers.cli(
        [
            *("projects", "create", "--account", str(account_id), "--name", "Website"),
            *("--id", str(PROJECT_ID), "--json"),
        ],
        env,
    )
    signing_owner = _owner_key(env, account_id, "requestSigning")
    bearer_owner = _owner_key(env, account_id, "secretKey")
    with servers.running(env, directory / "server.log") as server:
        yield LiveService(server.base_url, account_id, signing_owner, bearer_owner, env)


@pytest.fixture(name="live", scope="module", params=BACKENDS)
def live_fixture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    """A server on each backend, shared by a module's tests (import it to use it)."""
    directory = tmp_path_factory.mktemp("live")
    with live_service(database_for(request.param, request, directory), directory) as service:
        yield service
