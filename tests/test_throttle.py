"""Failed authentications are throttled per client address; valid credentials never are."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from apikeys.config import Settings
from apikeys.errors import TooManyRequests
from apikeys.service.throttle import WINDOW_SECONDS, FailureThrottle
from tests.conftest import World, random_master_key
from tests.signing import bearer_headers

LIMIT = 3


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, master_key=random_master_key(), auth_failure_limit=LIMIT
    )


async def test_failures_past_the_limit_get_429_but_valid_credentials_still_pass(
    world: World, app: FastAPI
) -> None:
    owner = await world.mint()
    bad = bearer_headers("cvsk_" + "x" * 49)

    answers = [(await world.client.get("/me", headers=bad)).status_code for _ in range(LIMIT + 2)]
    refused = await world.client.get("/me", headers=bad)
    valid = await world.request(owner, "GET", "/me")

    assert answers == [401] * LIMIT + [429, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_SECONDS
    assert refused.headers["content-type"] == "application/problem+json"
    assert valid.status_code == 200
    elsewhere = httpx.ASGITransport(app=app, client=("198.51.100.9", 4000))
    async with httpx.AsyncClient(transport=elsewhere, base_url="http://testserver") as other:
        assert (await other.get("/me", headers=bad)).status_code == 401


def test_failures_age_out_of_the_window() -> None:
    now = [1000.0]
    throttle = FailureThrottle(limit=2, clock=lambda: now[0])
    for _ in range(3):
        throttle.record_failure("client")
    with pytest.raises(TooManyRequests):
        throttle.check("client")

    now[0] += WINDOW_SECONDS + 1

    throttle.check("client")
