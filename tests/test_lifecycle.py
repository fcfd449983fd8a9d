"""List, get, revoke, /me and last_used_at: SPEC §3-§4."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from apikeys.domain import ApiKeyInfo, KeyType, Role
from apikeys.storage import repository
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, Credential, World

KEYS = f"/accounts/{ACCOUNT_ID}/api-keys"


async def create(world: World, owner: Credential, **body: Any) -> dict[str, Any]:
    response = await world.request(owner, "POST", KEYS, {"name": "k", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def credential(body: dict[str, Any]) -> Credential:
    return Credential(body["key"], body["secret"], KeyType(body["type"]), body)


async def test_list_is_newest_first_and_never_shows_a_secret(world: World) -> None:
    owner = await world.mint()
    made = [(await create(world, owner, name=f"k{i}"))["key"] for i in range(3)]

    response = await world.request(owner, "GET", KEYS)

    assert response.status_code == 200
    body = response.json()
    listed = [key["key"] for key in body["data"]]
    assert listed == [*reversed(made), owner.key]
    assert body["next_cursor"] is None
    assert all("secret" not in key for key in body["data"])
    assert owner.secret not in response.text


async def test_cursor_pages_cover_every_key_once_while_keys_are_being_created(
    world: World,
) -> None:
    owner = await world.mint()
    before = {(await create(world, owner, name=f"old{i}"))["key"] for i in range(7)} | {owner.key}

    seen: list[str] = []
    cursor = None
    while True:
        query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
        page = (await world.request(owner, "GET", KEYS + query)).json()
        seen += [key["key"] for key in page["data"]]
        await create(world, owner, name="made while paging")
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == len(set(seen))
    assert set(seen) == before


@pytest.mark.parametrize(
    "query", ["?limit=0", "?limit=201", "?limit=x", "?cursor=bm9wZQ", "?cursor=%%%"]
)
async def test_bad_limit_or_cursor_is_422(world: World, query: str) -> None:
    owner = await world.mint()

    response = await world.request(owner, "GET", KEYS + query)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][0] == "query"


async def test_limit_200_is_accepted(world: World) -> None:
    owner = await world.mint()

    response = await world.request(owner, "GET", KEYS + "?limit=200")

    assert response.status_code == 200


async def test_revoked_keys_are_listed_only_on_request(world: World) -> None:
    owner = await world.mint()
    doomed = await create(world, owner)
    assert (await world.request(owner, "DELETE", f"{KEYS}/{doomed['key']}")).status_code == 204

    default = (await world.request(owner, "GET", KEYS)).json()["data"]
    everything = (await world.request(owner, "GET", KEYS + "?include_revoked=true")).json()["data"]

    assert doomed["key"] not in [key["key"] for key in default]
    revoked = next(key for key in everything if key["key"] == doomed["key"])
    assert revoked["revoked_at"] is not None


async def test_get_shows_one_key_without_its_secret(world: World) -> None:
    owner = await world.mint()
    made = await create(world, owner, projects=[2, 1], role="edit")

    response = await world.request(owner, "GET", f"{KEYS}/{made['key']}")

    assert response.status_code == 200
    expected = {name: value for name, value in made.items() if name != "secret"}
    assert response.json() == expected


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_key_is_404(world: World, method: str) -> None:
    owner = await world.mint()

    response = await world.request(owner, method, f"{KEYS}/doesNotExist0000000000000")

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_key_of_another_account_is_404(world: World, method: str) -> None:
    owner = await world.mint()
    theirs = await world.mint(account_id=OTHER_ACCOUNT_ID)

    same_account_path = await world.request(owner, method, f"{KEYS}/{theirs.key}")
    their_account_path = await world.request(
        owner, method, f"/accounts/{OTHER_ACCOUNT_ID}/api-keys/{theirs.key}"
    )

    assert same_account_path.status_code == their_account_path.status_code == 404
    assert (await world.request(theirs, "GET", "/me")).status_code == 200


async def test_revocation_takes_effect_at_once_and_is_idempotent(world: World) -> None:
    owner = await world.mint()
    for key_type in ("requestSigning", "secretKey"):
        victim = credential(await create(world, owner, type=key_type))
        assert (await world.request(victim, "GET", "/me")).status_code == 200

        first = await world.request(owner, "DELETE", f"{KEYS}/{victim.key}")
        refused = await world.request(victim, "GET", "/me")
        again = await world.request(owner, "DELETE", f"{KEYS}/{victim.key}")

        assert first.status_code == again.status_code == 204
        assert first.content == b""
        assert refused.status_code == 401
        assert "WWW-Authenticate" in refused.headers
        shown = (await world.request(owner, "GET", f"{KEYS}/{victim.key}")).json()
        assert shown["revoked_at"] is not None


async def test_any_key_may_revoke_itself(world: World) -> None:
    browse = await world.mint(role=Role.BROWSE, type=KeyType.REQUEST_SIGNING)

    response = await world.request(browse, "DELETE", f"{KEYS}/{browse.key}")

    assert response.status_code == 204
    assert (await world.request(browse, "GET", "/me")).status_code == 401


async def test_a_browse_key_cannot_manage_other_keys(world: World) -> None:
    owner = await world.mint()
    browse = await world.mint(role=Role.BROWSE)

    for method, path in [
        ("GET", KEYS),
        ("GET", f"{KEYS}/{owner.key}"),
        ("DELETE", f"{KEYS}/{owner.key}"),
    ]:
        response = await world.request(browse, method, path)
        assert response.status_code == 403, (method, path)
    assert (await world.request(owner, "GET", "/me")).status_code == 200


async def test_an_admin_cannot_revoke_an_owner_key(world: World) -> None:
    owner = await world.mint()
    admin = await world.mint(role=Role.ADMIN)

    response = await world.request(admin, "DELETE", f"{KEYS}/{owner.key}")

    assert response.status_code == 403
    assert (await world.request(owner, "GET", "/me")).status_code == 200


async def test_a_project_limited_admin_sees_and_revokes_only_keys_inside_its_scope(
    world: World,
) -> None:
    owner = await world.mint()
    limited = await world.mint(role=Role.ADMIN, projects=frozenset({1, 2}))
    inside = await create(world, owner, projects=[1])
    outside = await create(world, owner, projects=[1, 3])
    everywhere = await create(world, owner)

    listed = {key["key"] for key in (await world.request(limited, "GET", KEYS)).json()["data"]}
    outside_get = await world.request(limited, "GET", f"{KEYS}/{outside['key']}")
    everywhere_delete = await world.request(limited, "DELETE", f"{KEYS}/{everywhere['key']}")
    inside_delete = await world.request(limited, "DELETE", f"{KEYS}/{inside['key']}")

    assert listed == {inside["key"], limited.key}
    assert outside_get.status_code == 404
    assert everywhere_delete.status_code == 404
    assert inside_delete.status_code == 204


@pytest.mark.parametrize("role", list(Role))
async def test_me_answers_for_every_role(world: World, role: Role) -> None:
    key = await world.mint(role=role, projects=frozenset({3, 1}), type=KeyType.REQUEST_SIGNING)

    response = await world.request(key, "GET", "/me")

    assert response.status_code == 200
    body = response.json()
    assert (body["key"], body["role"], body["projects"]) == (key.key, role.value, [1, 3])
    assert "secret" not in body


async def stored_key(world: World, key: str) -> ApiKeyInfo:
    async with world.services.database.sessions() as session:
        info = await repository.get_key(session, ACCOUNT_ID, key, scope=None)
    assert info is not None
    return info


async def test_last_used_at_is_written_once_per_minute_not_per_request(world: World) -> None:
    owner = await world.mint()
    user = credential(await create(world, owner, type="secretKey"))
    user_row_id = (await stored_key(world, user.key)).id
    writes: list[Any] = []

    def count_last_use_writes(*args: Any) -> None:
        statement, parameters = args[2], args[3]
        if statement.lstrip().upper().startswith("UPDATE") and "last_used_at" in statement:
            values = parameters.values() if isinstance(parameters, dict) else parameters
            if user_row_id in values:
                writes.append(statement)

    engine = world.services.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count_last_use_writes)
    try:
        for _ in range(5):
            assert (await world.request(user, "GET", "/me")).status_code == 200
            await asyncio.sleep(0.02)
        for _ in range(50):
            first_use = (await stored_key(world, user.key)).last_used_at
            if first_use is not None:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    finally:
        event.remove(engine, "before_cursor_execute", count_last_use_writes)

    assert len(writes) == 1
    assert first_use is not None
    shown = (await world.request(owner, "GET", f"{KEYS}/{user.key}")).json()["last_used_at"]
    assert shown == first_use.strftime("%Y-%m-%dT%H:%M:%SZ")
