"""Group-committed key creation (apikeys.storage.writer): keys asked for together share a
transaction, yet each one that cannot be written fails alone and nobody waits for a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func, select

from apikeys import security
from apikeys.config import async_database_url
from apikeys.domain import KeyType, Role
from apikeys.errors import InvalidInput
from apikeys.service.keys import IssuedKey, KeyRequest
from apikeys.storage.database import Database
from apikeys.storage.models import ApiKey, ApiKeyProject, AuditEvent
from apikeys.storage.repository import NewKey, NewKeyRow
from apikeys.storage.writer import KeyRefused, KeyWriter, UnknownAccount, UnknownProjects
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, OTHER_PROJECT, World
from tests.factories import new_key_of

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"


def new_key(
    account_id: int = ACCOUNT_ID, projects: frozenset[int] | None = None, name: str = "k"
) -> NewKey:
    return new_key_of(
        NewKeyRow(
            key=security.generate_key(),
            account_id=account_id,
            name=name,
            type=KeyType.SECRET_KEY,
            role=Role.BROWSE,
            project_ids=projects,
            secret_digest=security.generate_key().encode().ljust(32, b"x"),
            secret_ciphertext=None,
            secret_hint="…abcd",
            created_by_id=None,
            created_at=datetime.now(UTC),
            expires_at=None,
        ),
    )


@pytest.fixture
async def commits(world: World) -> AsyncIterator[list[None]]:
    """One entry per transaction committed on the service's engine."""
    seen: list[None] = []

    def on_commit(_connection: Any) -> None:
        seen.append(None)

    engine = world.services.database.engine.sync_engine
    event.listen(engine, "commit", on_commit)
    yield seen
    event.remove(engine, "commit", on_commit)


async def count(world: World, model: Any) -> int:
    async with world.services.database.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_keys_asked_for_together_share_transactions_and_all_arrive(
    world: World, commits: list[None]
) -> None:
    writer = world.services.writer
    wanted = [new_key(projects=frozenset({1, 2}), name=f"key {n}") for n in range(30)]

    stored = await asyncio.gather(*(writer.add(key) for key in wanted))

    assert [info.name for info in stored] == [key.row.name for key in wanted]
    assert [info.key for info in stored] == [key.row.key for key in wanted]
    assert len({info.id for info in stored}) == 30
    assert all(info.project_ids == frozenset({1, 2}) for info in stored)
    # Thirty keys, not thirty transactions: all were asked for before the first one began.
    assert len(commits) <= 2
    assert await count(world, ApiKey) == 30
    assert await count(world, ApiKeyProject) == 60
    assert await count(world, AuditEvent) == 30


async def test_after_a_batch_of_several_the_next_waits_for_callers_arriving_over_a_few_turns(
    world: World, commits: list[None]
) -> None:
    writer = world.services.writer
    await asyncio.gather(*(writer.add(new_key()) for _ in range(3)))
    commits.clear()

    async def arriving(turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        await writer.add(new_key())

    await asyncio.gather(*(arriving(turns) for turns in range(5)))

    assert len(commits) == 1
    assert await count(world, ApiKey) == 8


async def test_a_key_asked_for_alone_is_written_without_waiting_for_company(
    world: World,
) -> None:
    info = await asyncio.wait_for(world.services.writer.add(new_key()), timeout=10)

    assert info.account_id == ACCOUNT_ID
    assert await count(world, ApiKey) == 1


async def test_a_key_naming_another_accounts_project_fails_alone(world: World) -> None:
    writer = world.services.writer
    keys = [new_key(), new_key(projects=frozenset({1, OTHER_PROJECT, 99})), new_key()]

    outcomes = await asyncio.gather(*(writer.add(key) for key in keys), return_exceptions=True)

    refused = outcomes[1]
    assert isinstance(refused, UnknownProjects)
    assert refused.project_ids == [OTHER_PROJECT, 99]
    assert [outcome.name for outcome in (outcomes[0], outcomes[2])] == ["k", "k"]  # type: ignore[union-attr]
    assert await count(world, ApiKey) == 2
    assert await count(world, AuditEvent) == 2


async def test_a_key_of_an_account_that_does_not_exist_fails_alone(world: World) -> None:
    writer = world.services.writer
    keys = [new_key(account_id=999), new_key(account_id=OTHER_ACCOUNT_ID)]

    outcomes = await asyncio.gather(*(writer.add(key) for key in keys), return_exceptions=True)

    assert isinstance(outcomes[0], UnknownAccount)
    assert not isinstance(outcomes[1], BaseException)
    assert outcomes[1].account_id == OTHER_ACCOUNT_ID
    assert await count(world, ApiKey) == 1


async def test_a_key_the_database_refuses_fails_alone_and_its_error_hides_the_values(
    world: World,
) -> None:
    writer = world.services.writer
    first = new_key(name="first")
    twin = new_key_of(replace(first.row, name="same public id"))
    # Valid in Python, but no UTC year in 1-9999: the driver cannot be given it.
    beyond = replace(
        new_key().row,
        expires_at=datetime(9999, 12, 31, 23, 30, tzinfo=timezone(-timedelta(hours=1))),
    )
    keys = [first, twin, new_key_of(beyond), new_key(name="last")]

    outcomes = await asyncio.gather(*(writer.add(key) for key in keys), return_exceptions=True)

    assert [getattr(outcome, "name", None) for outcome in outcomes] == [
        "first", None, None, "last",
    ]  # fmt: skip
    assert isinstance(outcomes[1], KeyRefused)
    assert isinstance(outcomes[2], KeyRefused)
    assert first.row.key not in str(outcomes[1])
    assert first.row.secret_digest.hex() not in str(outcomes[1])
    assert await count(world, ApiKey) == 2


def hostile_requests(backend: str) -> list[KeyRequest]:
    """Requests validation would refuse, each holding a value the database cannot store."""
    too_big = 2**31 if backend == "postgresql" else 2**63
    base = KeyRequest(
        name="hostile", type=KeyType.SECRET_KEY, role=Role.BROWSE, project_ids=None,
        expires_at=None,
    )  # fmt: skip
    return [
        replace(base, project_ids=frozenset({too_big})),
        replace(base, name="\ud800"),
        replace(base, name="x" * 500) if backend == "postgresql" else replace(base, name="\udfff"),
    ]


async def test_values_the_database_refuses_fail_their_own_creates_and_no_other(
    world: World, backend: str
) -> None:
    service = world.services.keys
    valid = KeyRequest(
        name="valid", type=KeyType.SECRET_KEY, role=Role.BROWSE,
        project_ids=frozenset({OTHER_PROJECT}), expires_at=None,
    )  # fmt: skip
    hostile = hostile_requests(backend)

    for _ in range(3):  # several rounds, so hostile keys land in batches of every shape
        creates = [service.create_bootstrap(OTHER_ACCOUNT_ID, valid) for _ in range(9)]
        creates[2:2] = [service.create_bootstrap(ACCOUNT_ID, request) for request in hostile]
        outcomes = await asyncio.gather(*creates, return_exceptions=True)

        refused = outcomes[2 : 2 + len(hostile)]
        created = outcomes[:2] + outcomes[2 + len(hostile) :]
        assert all(isinstance(outcome, InvalidInput) for outcome in refused), refused
        assert all(isinstance(outcome, IssuedKey) for outcome in created), created
    assert await count(world, ApiKey) == 27
    assert await count(world, AuditEvent) == 27
    assert await count(world, ApiKeyProject) == 27


async def test_a_caller_that_goes_away_leaves_the_others_their_keys(world: World) -> None:
    writer = world.services.writer
    tasks = [asyncio.create_task(writer.add(new_key(name=f"key {n}"))) for n in range(5)]
    await asyncio.sleep(0)  # every add() is queued
    tasks[2].cancel()

    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert [o.name for o in outcomes if not isinstance(o, BaseException)] == [
        "key 0", "key 1", "key 3", "key 4",
    ]  # fmt: skip
    # Gone before its transaction began, so never written: nobody could learn its secret.
    assert await count(world, ApiKey) == 4
    assert (await writer.add(new_key(name="after"))).name == "after"


async def test_an_unreachable_database_fails_every_waiting_caller_and_then_the_next(
    backend: str, tmp_path: Any
) -> None:
    url = (
        f"sqlite:///{tmp_path}/missing/directory/apikeys.db"
        if backend == "sqlite"
        else "postgresql://postgres@127.0.0.1:1/apikeys"
    )
    database = Database(async_database_url(url), timeout=2)
    writer = KeyWriter(database)
    try:
        outcomes = await asyncio.gather(
            *(writer.add(new_key()) for _ in range(3)), return_exceptions=True
        )
        later = await asyncio.gather(writer.add(new_key()), return_exceptions=True)
    finally:
        await writer.close()
        await database.dispose()

    assert all(isinstance(outcome, Exception) for outcome in [*outcomes, *later])
    assert not any(isinstance(outcome, UnknownAccount) for outcome in [*outcomes, *later])


async def test_concurrent_creations_over_http_all_succeed_with_their_audit_events(
    world: World,
) -> None:
    owner = await world.mint(role=Role.OWNER)

    responses = await asyncio.gather(
        *(
            world.request(owner, "POST", KEY_PATH, {"name": f"key {n}", "projects": [n % 3 + 1]})
            for n in range(40)
        )
    )

    assert [response.status_code for response in responses] == [201] * 40
    bodies = [response.json() for response in responses]
    assert [body["name"] for body in bodies] == [f"key {n}" for n in range(40)]
    assert [body["projects"] for body in bodies] == [[n % 3 + 1] for n in range(40)]
    assert len({body["secret"] for body in bodies}) == 40
    trail = await world.request(owner, "GET", f"/accounts/{ACCOUNT_ID}/audit-events?limit=200")
    created = [event["target_key"] for event in trail.json()["data"]]
    assert sorted(created) == sorted([body["key"] for body in bodies] + [owner.key])
