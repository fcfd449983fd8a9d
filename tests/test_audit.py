"""The audit trail: every key creation and revocation, readable by admins."""

from __future__ import annotations

from typing import Any

from apikeys.domain import Role
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, World

KEYS = f"/accounts/{ACCOUNT_ID}/api-keys"
EVENTS = f"/accounts/{ACCOUNT_ID}/audit-events"


async def events(world: World, caller: Any, query: str = "") -> list[dict[str, Any]]:
    response = await world.request(caller, "GET", EVENTS + query)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_creation_and_revocation_are_recorded_with_who_what_and_where(world: World) -> None:
    owner = await world.mint()
    created = await world.request(
        owner, "POST", KEYS, {"name": "k", "role": "edit", "projects": [2, 1]}
    )
    key = created.json()["key"]
    revoked = await world.request(owner, "DELETE", f"{KEYS}/{key}")

    revocation, creation, bootstrap = await events(world, owner)

    assert creation["action"] == "api_key.created"
    assert revocation["action"] == "api_key.revoked"
    for event, response in ((creation, created), (revocation, revoked)):
        assert event["account_id"] == ACCOUNT_ID
        assert event["actor_key"] == owner.key
        assert event["target_key"] == key
        assert event["role"] == "edit"
        assert event["projects"] == [1, 2]
        assert event["client_address"] == "203.0.113.7"
        assert event["request_id"] == response.headers["x-request-id"]
    assert bootstrap["target_key"] == owner.key
    assert bootstrap["actor_key"] is None
    assert bootstrap["client_address"] == "command line"
    assert owner.secret not in str(await events(world, owner))


async def test_a_repeated_revocation_is_recorded_once(world: World) -> None:
    owner = await world.mint()
    key = (await world.request(owner, "POST", KEYS, {"name": "k"})).json()["key"]
    for _ in range(3):
        await world.request(owner, "DELETE", f"{KEYS}/{key}")

    actions = [event["action"] for event in await events(world, owner)]

    assert actions.count("api_key.revoked") == 1


async def test_a_refused_creation_leaves_no_event(world: World) -> None:
    owner = await world.mint()
    refused = await world.request(owner, "POST", KEYS, {"name": "k", "projects": [999]})

    assert refused.status_code == 422
    assert len(await events(world, owner)) == 1  # the owner key's own creation


async def test_events_page_with_a_cursor(world: World) -> None:
    owner = await world.mint()
    for i in range(4):
        await world.request(owner, "POST", KEYS, {"name": f"k{i}"})

    first = (await world.request(owner, "GET", EVENTS + "?limit=3")).json()
    second = (
        await world.request(owner, "GET", EVENTS + f"?limit=3&cursor={first['next_cursor']}")
    ).json()

    ids = [event["id"] for event in first["data"] + second["data"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5
    assert second["next_cursor"] is None


async def test_only_admins_for_every_project_read_the_trail(world: World) -> None:
    admin = await world.mint(role=Role.ADMIN)
    limited_admin = await world.mint(role=Role.ADMIN, projects=frozenset({1}))
    publisher = await world.mint(role=Role.PUBLISH)
    theirs = await world.mint(account_id=OTHER_ACCOUNT_ID)

    assert (await world.request(admin, "GET", EVENTS)).status_code == 200
    assert (await world.request(limited_admin, "GET", EVENTS)).status_code == 403
    assert (await world.request(publisher, "GET", EVENTS)).status_code == 403
    assert (await world.request(theirs, "GET", EVENTS)).status_code == 404
