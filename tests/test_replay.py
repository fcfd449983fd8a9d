"""One signature, one request: bound to the method of its first use, a signed change accepted
once, a signed read repeatable; remembered until Expires plus the skew, and no longer."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select

from apikeys import metrics
from apikeys.api.deps import Services
from apikeys.config import Settings
from apikeys.domain import KeyType
from apikeys.errors import Unauthenticated
from apikeys.service.replay import ReplayGuard
from apikeys.storage.models import UsedSignature
from apikeys.storage.redis_state import RedisSharedState
from apikeys.storage.shared_state import CLEANUP_SECONDS, DatabaseSharedState
from tests import stores
from tests.conftest import ACCOUNT_ID, World
from tests.stores import store_settings

# Every test on each store: the database, and Redis.
store = stores.store

KEYS_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
SIGNATURE = "ab" * 32


def replay_refusals() -> float:
    return metrics.REGISTRY.get_sample_value("apikeys_replay_refusals_total") or 0.0


@pytest.fixture
def settings(database_url: str, store: str) -> Settings:
    return store_settings(database_url, store)


async def test_a_signed_get_replayed_as_delete_is_401_and_the_key_stays(world: World) -> None:
    owner = await world.mint(type=KeyType.REQUEST_SIGNING)
    victim = await world.mint()
    path = f"{KEYS_PATH}/{victim.key}"
    captured = owner.headers("GET", f"http://testserver{path}")
    refusals_before = replay_refusals()

    read = await world.client.get(path, headers=captured)
    replayed = await world.client.delete(path, headers=captured)
    after = await world.request(owner, "GET", path)

    assert read.status_code == 200
    assert replayed.status_code == 401
    assert "first used by a GET request" in replayed.json()["detail"]
    assert replayed.headers["www-authenticate"].startswith("Bearer")
    assert after.status_code == 200 and after.json()["revoked_at"] is None
    assert replay_refusals() == refusals_before + 1


async def test_one_signed_post_sent_three_times_creates_one_key(world: World) -> None:
    owner = await world.mint(type=KeyType.REQUEST_SIGNING)
    body = b'{"name": "made once", "type": "secretKey", "role": "browse"}'
    headers = owner.headers("POST", f"http://testserver{KEYS_PATH}", body)
    headers["Content-Type"] = "application/json"

    answers = [await world.client.post(KEYS_PATH, content=body, headers=headers) for _ in range(3)]
    listed = await world.request(owner, "GET", KEYS_PATH)

    assert [answer.status_code for answer in answers] == [201, 401, 401]
    assert "already used" in answers[1].json()["detail"]
    assert [key["name"] for key in listed.json()["data"]].count("made once") == 1


async def test_a_signed_get_may_be_repeated_with_the_same_method(world: World) -> None:
    owner = await world.mint(type=KeyType.REQUEST_SIGNING)
    captured = owner.headers("GET", "http://testserver/me")

    answers = [(await world.client.get("/me", headers=captured)).status_code for _ in range(3)]

    assert answers == [200, 200, 200]


async def test_a_request_that_fails_verification_does_not_use_up_the_signature(
    world: World,
) -> None:
    owner = await world.mint(type=KeyType.REQUEST_SIGNING)
    body = b'{"name": "still mine", "type": "secretKey", "role": "browse"}'
    headers = owner.headers("POST", f"http://testserver{KEYS_PATH}", body)
    headers["Content-Type"] = "application/json"

    tampered = await world.client.post(KEYS_PATH, content=body + b" ", headers=headers)
    other_path = await world.client.get("/me", headers=headers)
    genuine = await world.client.post(KEYS_PATH, content=body, headers=headers)

    assert tampered.status_code == 401 and "does not match" in tampered.json()["detail"]
    assert other_path.status_code == 401 and "does not match" in other_path.json()["detail"]
    assert genuine.status_code == 201


async def test_the_binding_holds_for_head_after_get_and_across_guards(
    world: World, services: Services
) -> None:
    expires = int(time.time()) + 30
    here = ReplayGuard(services.shared_state, clock_skew=60)
    there = ReplayGuard(services.shared_state, clock_skew=60)

    await here.admit(SIGNATURE, "GET", expires)
    await there.admit(SIGNATURE.upper(), "GET", expires)
    refusals = []
    for guard, method in ((there, "HEAD"), (here, "HEAD"), (there, "DELETE")):
        with pytest.raises(Unauthenticated) as refused:
            await guard.admit(SIGNATURE, method, expires)
        refusals.append(refused.value.detail)

    assert all("first used by a GET request" in detail for detail in refusals)


async def test_concurrent_uses_of_one_signed_change_accept_exactly_one(
    world: World, services: Services
) -> None:
    expires = int(time.time()) + 30
    guards = [ReplayGuard(services.shared_state, clock_skew=60) for _ in range(8)]

    outcomes = await asyncio.gather(
        *(guard.admit(SIGNATURE, "POST", expires) for guard in guards), return_exceptions=True
    )

    assert outcomes.count(None) == 1
    assert all(isinstance(outcome, Unauthenticated) for outcome in outcomes if outcome)


async def _remembered(services: Services, signature: str) -> bool:
    state = services.shared_state
    if isinstance(state, RedisSharedState):
        key = f"{services.settings.redis_key_prefix}sig:{signature}"
        return bool(await state._redis.exists(key))
    async with services.database.reads() as connection:
        query = select(UsedSignature.signature).where(UsedSignature.signature == signature)
        return await connection.scalar(query) is not None


async def test_a_used_signature_is_forgotten_once_expires_and_skew_have_passed(
    world: World, services: Services
) -> None:
    forget_at = int(time.time()) + 1
    now = [time.time()]
    ledger = services.shared_state
    if isinstance(ledger, DatabaseSharedState):
        ledger = DatabaseSharedState(services.database, clock=lambda: now[0])
    await ledger.claim(SIGNATURE, "POST", forget_at)
    assert await _remembered(services, SIGNATURE)

    if isinstance(ledger, RedisSharedState):
        # Redis expires the entry itself, at forget_at by its own clock.
        await asyncio.sleep(forget_at + 1.2 - time.time())
    else:
        # The next write after the periodic interval deletes what has expired.
        now[0] = forget_at + CLEANUP_SECONDS + 1
        await ledger.claim("cd" * 32, "GET", int(now[0]) + 60)

    assert not await _remembered(services, SIGNATURE)
    assert await ledger.claim(SIGNATURE, "POST", int(time.time()) + 60) == ("POST", True)
