"""Failed authentications are throttled per client address, across replicas, before any
key lookup; past the limit even valid credentials from that address are refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select

from apikeys.api.deps import Services
from apikeys.config import Settings
from apikeys.errors import TooManyRequests
from apikeys.service.throttle import WINDOW_SECONDS, FailureThrottle
from apikeys.storage.models import AuthFailure
from apikeys.storage.redis_state import RedisSharedState
from apikeys.storage.shared_state import CLEANUP_SECONDS, DatabaseSharedState
from tests import stores
from tests.conftest import World
from tests.signing import bearer_headers
from tests.stores import store_settings

# Every test on each store: the database, and Redis.
store = stores.store

LIMIT = 3
BAD = bearer_headers("cvsk_" + "x" * 49)


@pytest.fixture
def settings(database_url: str, store: str) -> Settings:
    return store_settings(database_url, store, auth_failure_limit=LIMIT)


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_failures_past_the_limit_get_429_and_so_do_valid_credentials_from_there(
    world: World, app: FastAPI
) -> None:
    owner = await world.mint()

    answers = [(await world.client.get("/me", headers=BAD)).status_code for _ in range(LIMIT + 2)]
    refused = await world.client.get("/me", headers=BAD)
    valid = await world.request(owner, "GET", "/me")
    health = await world.client.get("/healthz")

    assert answers == [401] * LIMIT + [429, 429]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_SECONDS + 1
    assert refused.headers["content-type"] == "application/problem+json"
    assert valid.status_code == 429
    assert health.status_code == 200
    async with client_from(app, "198.51.100.9") as other:
        assert (await other.get("/me", headers=BAD)).status_code == 401
        assert (await world.request(owner, "GET", "/me")).status_code == 429
        auth = owner.headers("GET", "http://testserver/me")
        assert (await other.get("/me", headers=auth)).status_code == 200


async def test_a_blocked_address_is_refused_before_any_key_lookup(
    world: World, services: Services
) -> None:
    owner = await world.mint()
    for _ in range(LIMIT + 1):
        await world.client.get("/me", headers=BAD)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = services.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        refused = await world.request(owner, "GET", "/me")
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert refused.status_code == 429
    assert statements == []


async def test_failures_age_out_of_the_sliding_minute(world: World, services: Services) -> None:
    now = [1_000_000.5]
    throttle = FailureThrottle(limit=2, ledger=services.shared_state, clock=lambda: now[0])
    for _ in range(2):
        await throttle.record_failure("192.0.2.1")
    now[0] += WINDOW_SECONDS / 2
    with pytest.raises(TooManyRequests):
        await throttle.record_failure("192.0.2.1")
    with pytest.raises(TooManyRequests):
        throttle.check("192.0.2.1")

    # The first two failures leave the window: one remains, within the limit.
    now[0] += WINDOW_SECONDS / 2 + 1.5
    throttle.check("192.0.2.1")
    await throttle.refresh()
    throttle.check("192.0.2.1")
    await throttle.record_failure("192.0.2.1")
    await throttle.close()


async def test_a_block_made_by_one_process_reaches_another_through_the_store(
    world: World, services: Services
) -> None:
    here = FailureThrottle(limit=2, ledger=services.shared_state)
    there = FailureThrottle(limit=2, ledger=services.shared_state)
    await here.record_failure("192.0.2.2")
    await there.record_failure("192.0.2.2")
    with pytest.raises(TooManyRequests):
        await here.record_failure("192.0.2.2")
    there.check("192.0.2.2")  # not reloaded yet

    await there.refresh()

    with pytest.raises(TooManyRequests):
        there.check("192.0.2.2")
    await here.close()
    await there.close()


async def _seed_failures(services: Services, first: int, end: int, second: int) -> None:
    """Addresses number `first` to `end` with one failure each, written in bulk."""
    state = services.shared_state
    names = [f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}" for n in range(first, end)]
    if isinstance(state, RedisSharedState):
        async with state._redis.pipeline(transaction=False) as pipeline:
            for name in names:
                key = f"{services.settings.redis_key_prefix}fail:{name}"
                pipeline.hset(key, str(second), 1)
                pipeline.expire(key, WINDOW_SECONDS + 1)
            await pipeline.execute()
        return
    rows = [{"address": name, "second": second, "failures": 1} for name in names]
    async with services.database.engine.begin() as connection:
        await connection.execute(insert(AuthFailure), rows)


async def _work_of_one_failure(services: Services, throttle: FailureThrottle, address: str) -> int:
    """Statements (database) or commands (Redis) that recording one failure sends."""
    state = services.shared_state
    sent = [0]
    if isinstance(state, RedisSharedState):
        execute = state._redis.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            sent[0] += 1
            return await execute(*args, **options)

        state._redis.execute_command = counted  # type: ignore[method-assign]
        try:
            await throttle.record_failure(address)
        finally:
            del state._redis.execute_command
        return sent[0]

    def count(*_: Any) -> None:
        sent[0] += 1

    engine = services.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        await throttle.record_failure(address)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return sent[0]


async def test_a_failure_costs_the_same_work_with_10_001_or_50_000_addresses_tracked(
    world: World, services: Services
) -> None:
    now = [2_000_000.0]
    throttle = FailureThrottle(limit=600, ledger=services.shared_state, clock=lambda: now[0])
    # Past the periodic clean-up, so both measured failures pay only their own work.
    await throttle.record_failure("192.0.2.200")

    await _seed_failures(services, 0, 10_001, int(now[0]))
    at_10_001 = await _work_of_one_failure(services, throttle, "192.0.2.201")
    await _seed_failures(services, 10_001, 50_000, int(now[0]))
    at_50_000 = await _work_of_one_failure(services, throttle, "192.0.2.202")

    for n in range(200):
        await throttle.record_failure(f"198.18.0.{n}")

    assert at_10_001 == at_50_000 <= 3
    # The process holds only blocked addresses: none of these hundreds.
    assert throttle.known_blocked == 0
    await throttle.close()


async def _stored_seconds(services: Services, address: str) -> int:
    state = services.shared_state
    if isinstance(state, RedisSharedState):
        key = f"{services.settings.redis_key_prefix}fail:{address}"
        return int(await state._redis.hlen(key))
    async with services.database.reads() as connection:
        query = select(func.count()).where(AuthFailure.address == address)
        return int(await connection.scalar(query) or 0)


async def test_one_address_keeps_at_most_a_minute_of_counts(
    world: World, services: Services
) -> None:
    now = [3_000_000.0]
    ledger = services.shared_state
    if isinstance(ledger, DatabaseSharedState):
        ledger = DatabaseSharedState(services.database, clock=lambda: now[0])
    throttle = FailureThrottle(limit=600, ledger=ledger, clock=lambda: now[0])
    for _ in range(3 * WINDOW_SECONDS):
        await throttle.record_failure("192.0.2.3")
        now[0] += 1

    counts = await ledger.record_failure("192.0.2.3", int(now[0]), WINDOW_SECONDS)

    assert len(counts) == WINDOW_SECONDS + 1
    assert await _stored_seconds(services, "192.0.2.3") <= WINDOW_SECONDS + 1 + CLEANUP_SECONDS
    await throttle.close()
