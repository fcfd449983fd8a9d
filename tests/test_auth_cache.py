"""The in-process cache of looked-up keys: bounded, never trusted past a key's expiry, and
never holding on to a key's state from before its revocation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apikeys.domain import KeyType, Role
from apikeys.errors import Unauthenticated
from apikeys.service import keys
from apikeys.service.authentication import (
    Authenticator,
    BearerCredentials,
    CredentialCache,
)
from apikeys.service.replay import ReplayGuard
from apikeys.service.usage import UsageRecorder
from apikeys.services import Services
from apikeys.storage.repository import StoredCredential
from tests.conftest import ACCOUNT_ID, World
from tests.factories import key_info


def _stored(key: str) -> StoredCredential:
    info = key_info(key=key, name="cached")
    return StoredCredential(info, None)


class Loads:
    """Counts lookups, and can hold one open until released."""

    def __init__(self) -> None:
        self.count = 0
        self.gate: asyncio.Event | None = None

    def of(
        self, stored: StoredCredential | None
    ) -> Callable[[], Awaitable[StoredCredential | None]]:
        async def load() -> StoredCredential | None:
            self.count += 1
            if self.gate is not None:
                await self.gate.wait()
            return stored

        return load


async def test_a_cached_key_is_looked_up_once_until_its_time_runs_out() -> None:
    now = [100.0]
    cache = CredentialCache(ttl=0.5, max_keys=10, clock=lambda: now[0])
    loads = Loads()
    stored = _stored("k1")

    first = await cache.get(("key", "k1"), loads.of(stored))
    again = await cache.get(("key", "k1"), loads.of(stored))
    now[0] += 0.5
    later = await cache.get(("key", "k1"), loads.of(stored))

    assert first is again is later is stored
    assert loads.count == 2


async def test_concurrent_misses_on_one_key_share_a_single_lookup() -> None:
    cache = CredentialCache(ttl=0.5, max_keys=10)
    loads = Loads()
    loads.gate = asyncio.Event()
    waiting = [
        asyncio.create_task(cache.get(("key", "k1"), loads.of(_stored("k1")))) for _ in range(5)
    ]
    await asyncio.sleep(0)
    loads.gate.set()

    results = await asyncio.gather(*waiting)

    assert loads.count == 1
    assert all(result is results[0] for result in results)


async def test_the_cache_holds_at_most_its_limit_and_drops_the_least_recently_used() -> None:
    cache = CredentialCache(ttl=60, max_keys=3)
    loads = Loads()
    for name in ("a", "b", "c"):
        await cache.get(("key", name), loads.of(_stored(name)))
    await cache.get(("key", "a"), loads.of(_stored("a")))  # a is now the most recent
    await cache.get(("key", "d"), loads.of(_stored("d")))  # b goes
    count_before = loads.count

    for name in ("a", "c", "d"):
        await cache.get(("key", name), loads.of(_stored(name)))
    assert loads.count == count_before
    await cache.get(("key", "b"), loads.of(_stored("b")))
    assert loads.count == count_before + 1


async def test_unknown_keys_are_not_kept() -> None:
    cache = CredentialCache(ttl=60, max_keys=10)
    loads = Loads()

    assert await cache.get(("key", "nope"), loads.of(None)) is None
    assert await cache.get(("key", "nope"), loads.of(None)) is None
    assert loads.count == 2


async def test_a_forgotten_key_is_looked_up_again() -> None:
    cache = CredentialCache(ttl=60, max_keys=10)
    loads = Loads()
    await cache.get(("digest", b"d1"), loads.of(_stored("k1")))

    cache.forget("k1")
    await cache.get(("digest", b"d1"), loads.of(_stored("k1")))

    assert loads.count == 2


async def test_a_lookup_in_flight_when_the_key_is_forgotten_is_neither_shared_nor_kept() -> None:
    cache = CredentialCache(ttl=60, max_keys=10)
    old, new = _stored("k1"), _stored("k1")
    slow, fresh, last = Loads(), Loads(), Loads()
    slow.gate = asyncio.Event()
    before = asyncio.create_task(cache.get(("key", "k1"), slow.of(old)))
    await asyncio.sleep(0)  # the lookup has read the row as it was before the revocation

    cache.forget("k1")
    after = await cache.get(("key", "k1"), fresh.of(new))
    slow.gate.set()
    await before
    kept = await cache.get(("key", "k1"), last.of(None))

    assert (slow.count, fresh.count, last.count) == (1, 1, 0)
    assert after is new and kept is new


async def test_a_cached_key_is_refused_once_its_expiry_passes(
    world: World, services: Services
) -> None:
    now = [time.time()]
    authenticator = Authenticator(
        services.database,
        services.keeper,
        secret_key_prefix=services.prefixes.secret_key,
        signature_max_age=900,
        clock_skew=60,
        usage=UsageRecorder(services.database),
        replay=ReplayGuard(services.shared_state, clock_skew=60),
        cache_ttl=0.9,
        clock=lambda: now[0],
    )
    request = keys.KeyRequest(
        name="short-lived",
        type=KeyType.SECRET_KEY,
        role=Role.BROWSE,
        project_ids=None,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    issued = await services.keys.create_bootstrap(ACCOUNT_ID, request)
    credentials = BearerCredentials(issued.secret)
    assert (await authenticator.authenticate(credentials, method="GET")).key == issued.info.key

    now[0] += 2 * 3600  # past expires_at, while the cache entry is still fresh
    refused = None
    try:
        await authenticator.authenticate(credentials, method="GET")
    except Unauthenticated as error:
        refused = error

    assert refused is not None
    assert "expired" in refused.detail
    await authenticator.close()


async def test_a_revoked_key_is_refused_by_the_revoking_process_on_the_next_request(
    world: World,
) -> None:
    owner = await world.mint()
    victim = await world.mint(role=Role.BROWSE)
    assert (await world.request(victim, "GET", "/me")).status_code == 200  # now cached

    revoked = await world.request(owner, "DELETE", f"/accounts/{ACCOUNT_ID}/api-keys/{victim.key}")

    assert revoked.status_code == 204
    assert (await world.request(victim, "GET", "/me")).status_code == 401
