"""`Idempotency-Key` on create and roll: a retry gets the first answer and makes nothing;
what is kept to replay it is encrypted and erased once the 24 hours are over."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from apikeys.domain import KeyType, Role
from apikeys.service.idempotency import Claim, Idempotency, IdempotentRequest
from apikeys.service.keys import KeyRequest
from apikeys.storage.models import ApiKey, IdempotencyRecord
from tests.conftest import ACCOUNT_ID, Credential, World

KEYS = f"/accounts/{ACCOUNT_ID}/api-keys"
BODY = {"name": "Nightly sync", "role": "edit", "projects": [1, 2]}


async def create(
    world: World, caller: Credential, idempotency_key: str | bytes, body: Any = BODY
) -> Any:
    return await world.request(
        caller,
        "POST",
        KEYS,
        body,
        headers={"Idempotency-Key": idempotency_key},  # type: ignore[dict-item]
    )


async def count(world: World, model: Any) -> int:
    async with world.services.database.reads() as connection:
        return int((await connection.execute(select(func.count()).select_from(model))).scalar_one())


async def test_a_create_retried_with_the_same_key_gets_the_first_answer_and_makes_nothing(
    world: World,
) -> None:
    owner = await world.mint()

    first = await create(world, owner, "sync-2026-12-03")
    keys_after_first = await count(world, ApiKey)
    again = await create(world, owner, "sync-2026-12-03")

    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["cache-control"] == "no-store"
    assert await count(world, ApiKey) == keys_after_first


async def test_the_same_body_written_otherwise_is_the_same_request(world: World) -> None:
    owner = await world.mint()
    first = await create(world, owner, "k1")

    spelled_otherwise = await world.request(
        owner,
        "POST",
        KEYS,
        raw=b'{ "projects": [1, 2],\n  "role": "edit", "name": "Nightly sync" }',
        headers={"Idempotency-Key": "k1", "Content-Type": "application/json"},
    )

    assert spelled_otherwise.status_code == 201
    assert spelled_otherwise.json()["key"] == first.json()["key"]


async def test_the_same_key_with_another_body_is_422(world: World) -> None:
    owner = await world.mint()
    await create(world, owner, "k1")

    other = await create(world, owner, "k1", {**BODY, "name": "Another"})

    assert other.status_code == 422, other.text
    assert other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


async def test_keys_are_per_calling_key(world: World) -> None:
    owner = await world.mint()
    other_owner = await world.mint()

    mine = await create(world, owner, "shared-name")
    theirs = await create(world, other_owner, "shared-name")

    assert theirs.status_code == 201
    assert theirs.json()["key"] != mine.json()["key"]


@pytest.mark.parametrize("value", [b"", b"x" * 256, b"caf\xc3\xa9", b"a\x7fb"])
async def test_a_malformed_idempotency_key_is_422(world: World, value: bytes) -> None:
    owner = await world.mint()

    response = await create(world, owner, value)

    assert response.status_code == 422, response.text
    assert await count(world, IdempotencyRecord) == 0


async def test_while_the_first_request_is_in_flight_a_second_is_409(world: World) -> None:
    issued = await world.services.keys.create_bootstrap(
        ACCOUNT_ID, KeyRequest("owner", KeyType.SECRET_KEY, Role.OWNER, None, None)
    )
    owner = Credential(issued.info.key, issued.secret, KeyType.SECRET_KEY, {})
    body = json.dumps(BODY).encode()
    held = asyncio.Event()
    release = asyncio.Event()

    async def first_request_still_working(claim: Claim | None) -> None:
        held.set()
        await release.wait()
        raise RuntimeError("the first request fails in the end")

    first = asyncio.create_task(
        world.services.idempotency.run(
            issued.info,
            IdempotentRequest.of("k1", f"POST {KEYS}", body),
            first_request_still_working,
            lambda kept, key_id: None,
        )
    )
    await held.wait()
    meanwhile = await create(world, owner, "k1")
    release.set()
    with pytest.raises(RuntimeError):
        await first
    afterwards = await create(world, owner, "k1")

    assert meanwhile.status_code == 409, meanwhile.text
    assert afterwards.status_code == 201, afterwards.text


async def test_a_refused_create_keeps_nothing_so_a_corrected_retry_runs(world: World) -> None:
    owner = await world.mint()

    refused = await create(world, owner, "k1", {**BODY, "projects": [999]})
    kept = await count(world, IdempotencyRecord)
    corrected = await create(world, owner, "k1")

    assert refused.status_code == 422
    assert kept == 0
    assert corrected.status_code == 201


async def test_the_kept_answer_is_encrypted(world: World) -> None:
    owner = await world.mint()
    secret = (await create(world, owner, "k1")).json()["secret"]

    async with world.services.database.reads() as connection:
        row = (await connection.execute(select(IdempotencyRecord.__table__))).one()

    stored = repr(tuple(row)).encode() + b"".join(v for v in row if isinstance(v, bytes))
    assert secret.encode() not in stored
    assert secret[5:-6].encode() not in stored


async def test_once_the_window_closes_the_record_is_erased_and_the_key_may_be_used_anew(
    world: World,
) -> None:
    owner = await world.mint()
    first = await create(world, owner, "k1")
    async with world.services.database.transaction() as session:
        await session.execute(
            update(IdempotencyRecord).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    erased = await world.services.idempotency.erase_expired()
    left = await count(world, IdempotencyRecord)
    anew = await create(world, owner, "k1")

    assert erased == 1 and left == 0
    assert anew.status_code == 201
    assert anew.json()["key"] != first.json()["key"]


async def test_records_are_erased_by_the_background_eraser(world: World) -> None:
    owner = await world.mint()
    await create(world, owner, "k1")
    async with world.services.database.transaction() as session:
        await session.execute(
            update(IdempotencyRecord).values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )
    eraser = Idempotency(world.services.database, world.services.keeper)
    running = asyncio.create_task(eraser.erase_expired_forever(every=0.05))
    try:
        for _ in range(100):
            if await count(world, IdempotencyRecord) == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        running.cancel()
        with suppress(asyncio.CancelledError):
            await running

    assert await count(world, IdempotencyRecord) == 0


async def test_a_roll_retried_with_the_same_key_rolls_once(world: World) -> None:
    owner = await world.mint()
    old = (await world.request(owner, "POST", KEYS, {"name": "old"})).json()

    rolls = [
        await world.request(
            owner, "POST", f"{KEYS}/{old['key']}/roll", {"expires_in": 60},
            headers={"Idempotency-Key": "roll-1"},
        )
        for _ in range(2)
    ]  # fmt: skip
    trail = await world.request(owner, "GET", f"/accounts/{ACCOUNT_ID}/audit-events")

    assert [roll.status_code for roll in rolls] == [201, 201]
    assert rolls[0].json() == rolls[1].json()
    actions = [event["action"] for event in trail.json()["data"]]
    assert actions.count("api_key.rolled") == 1
