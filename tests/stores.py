"""The two places the shared state can live: the test's database, or Redis under a key
prefix of the test's own (every key it writes expires by itself)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from apikeys.config import Settings
from tests.conftest import random_master_key

REDIS_URL = os.environ.get("APIKEYS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
STORES = ("database", "redis")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def store_environment(store: str) -> dict[str, str]:
    """The APIKEYS_* variables that put a server's shared state in `store`."""
    if store == "database":
        return {}
    return {
        "APIKEYS_REDIS_URL": REDIS_URL,
        "APIKEYS_REDIS_KEY_PREFIX": f"apikeys-test:{uuid.uuid4().hex}:",
    }


def store_settings(database_url: str, store: str, **extra: Any) -> Settings:
    options: dict[str, Any] = {"database_url": database_url, "master_key": random_master_key()}
    if store == "redis":
        options["redis_url"] = REDIS_URL
        options["redis_key_prefix"] = f"apikeys-test:{uuid.uuid4().hex}:"
    return Settings(**options, **extra)
