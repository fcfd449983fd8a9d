"""A key's later life: rolled with an overlap, renamed, given another expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from apikeys.domain import KeyType, Role
from apikeys.storage.models import ApiKey
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, Credential, World

KEYS = f"/accounts/{ACCOUNT_ID}/api-keys"
IN_A_WEEK = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def credential_of(body: dict[str, Any]) -> Credential:
    return Credential(body["key"], body["secret"], KeyType(body["type"]), body)


async def created(world: World, owner: Credential, **fields: Any) -> dict[str, Any]:
    response = await world.request(owner, "POST", KEYS, {"name": "Nightly sync", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def events(world: World, owner: Credential) -> list[dict[str, Any]]:
    response = await world.request(owner, "GET", f"/accounts/{ACCOUNT_ID}/audit-events")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def expire_now(world: World, key: str) -> None:
    async with world.services.database.transaction() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.key == key)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


# Rolling.


async def test_a_roll_answers_a_new_key_with_the_old_ones_name_type_role_projects_and_expiry(
    world: World,
) -> None:
    owner = await world.mint()
    old = await created(
        world,
        owner,
        type="requestSigning",
        role="edit",
        projects=[2, 1],
        expires_at=IN_A_WEEK.isoformat(),
    )

    response = await world.request(owner, "POST", f"{KEYS}/{old['key']}/roll")

    assert response.status_code == 201, response.text
    new = response.json()
    assert new["rolled_from"] == old["key"]
    assert new["key"] != old["key"] and new["secret"] != old["secret"]
    for field in ("name", "type", "role", "projects", "expires_at", "account_id"):
        assert new[field] == old[field], field
    assert response.headers["location"] == f"{KEYS}/{new['key']}"
    assert response.headers["cache-control"] == "no-store"
    assert (await world.request(credential_of(new), "GET", "/me")).json()["key"] == new["key"]


async def test_after_a_roll_the_old_key_works_for_a_day_by_default(world: World) -> None:
    owner = await world.mint()
    old = await created(world, owner, type="secretKey")
    before = datetime.now(UTC)

    rolled = await world.request(owner, "POST", f"{KEYS}/{old['key']}/roll")
    shown = (await world.request(owner, "GET", f"{KEYS}/{old['key']}")).json()

    assert rolled.status_code == 201
    overlap = when(shown["expires_at"]) - before
    assert timedelta(hours=24) - timedelta(minutes=1) <= overlap <= timedelta(hours=24, minutes=1)
    assert shown["revoked_at"] is None
    assert (await world.request(credential_of(old), "GET", "/me")).status_code == 200


async def test_a_roll_with_expires_in_0_revokes_the_old_key_at_once(world: World) -> None:
    owner = await world.mint()
    old = await created(world, owner, type="secretKey")
    assert (await world.request(credential_of(old), "GET", "/me")).status_code == 200  # cached

    rolled = await world.request(owner, "POST", f"{KEYS}/{old['key']}/roll", {"expires_in": 0})
    shown = (await world.request(owner, "GET", f"{KEYS}/{old['key']}")).json()

    assert rolled.status_code == 201
    assert shown["revoked_at"] is not None
    assert (await world.request(credential_of(old), "GET", "/me")).status_code == 401
    assert (await world.request(credential_of(rolled.json()), "GET", "/me")).status_code == 200


async def test_a_roll_never_lets_the_old_key_live_longer_than_it_would_have(world: World) -> None:
    owner = await world.mint()
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    old = await created(world, owner, expires_at=soon.isoformat())

    rolled = await world.request(
        owner, "POST", f"{KEYS}/{old['key']}/roll", {"expires_in": 604_800}
    )
    shown = (await world.request(owner, "GET", f"{KEYS}/{old['key']}")).json()

    assert rolled.status_code == 201
    assert when(shown["expires_at"]) == soon


async def test_a_roll_with_expires_in_sets_the_old_keys_expiry(world: World) -> None:
    owner = await world.mint()
    old = await created(world, owner)
    before = datetime.now(UTC)

    await world.request(owner, "POST", f"{KEYS}/{old['key']}/roll", {"expires_in": 3600})
    shown = (await world.request(owner, "GET", f"{KEYS}/{old['key']}")).json()

    overlap = when(shown["expires_at"]) - before
    assert timedelta(minutes=59) <= overlap <= timedelta(minutes=61)


@pytest.mark.parametrize("expires_in", [-1, 604_801, "60", True, 1.5, {}])
async def test_an_expires_in_that_is_not_an_integer_from_0_to_604800_is_422(
    world: World, expires_in: Any
) -> None:
    owner = await world.mint()
    old = await created(world, owner)

    response = await world.request(
        owner, "POST", f"{KEYS}/{old['key']}/roll", {"expires_in": expires_in}
    )

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"][:2] == ["body", "expires_in"]


async def test_a_roll_body_with_an_unknown_field_is_422(world: World) -> None:
    owner = await world.mint()
    old = await created(world, owner)

    response = await world.request(owner, "POST", f"{KEYS}/{old['key']}/roll", {"expires": 0})

    assert response.status_code == 422


async def test_a_key_cannot_roll_itself(world: World) -> None:
    owner = await world.mint()

    response = await world.request(owner, "POST", f"{KEYS}/{owner.key}/roll")

    assert response.status_code == 403, response.text
    assert "itself" in response.json()["detail"]


async def test_only_an_owner_rolls_an_owner_key(world: World) -> None:
    owner = await world.mint()
    other_owner = await world.mint()
    admin = await world.mint(role=Role.ADMIN)

    by_admin = await world.request(admin, "POST", f"{KEYS}/{other_owner.key}/roll")
    by_owner = await world.request(owner, "POST", f"{KEYS}/{other_owner.key}/roll")

    assert by_admin.status_code == 403, by_admin.text
    assert by_owner.status_code == 201, by_owner.text
    assert by_owner.json()["role"] == "owner"


async def test_a_key_below_admin_cannot_roll_and_a_foreign_account_is_404(world: World) -> None:
    owner = await world.mint()
    publisher = await world.mint(role=Role.PUBLISH)
    old = await created(world, owner, role="browse")
    foreign = await world.mint(account_id=OTHER_ACCOUNT_ID)

    by_publisher = await world.request(publisher, "POST", f"{KEYS}/{old['key']}/roll")
    by_foreigner = await world.request(foreign, "POST", f"{KEYS}/{old['key']}/roll")
    unknown = await world.request(owner, "POST", f"{KEYS}/{'x' * 24}/roll")

    assert by_publisher.status_code == 403
    assert by_foreigner.status_code == 404
    assert unknown.status_code == 404


async def test_a_project_limited_admin_rolls_only_keys_inside_its_projects(world: World) -> None:
    owner = await world.mint()
    limited = await world.mint(role=Role.ADMIN, projects=frozenset({1, 2}))
    inside = await created(world, owner, projects=[1])
    everywhere = await created(world, owner)

    rolled = await world.request(limited, "POST", f"{KEYS}/{inside['key']}/roll")
    refused = await world.request(limited, "POST", f"{KEYS}/{everywhere['key']}/roll")

    assert rolled.status_code == 201 and rolled.json()["projects"] == [1]
    assert refused.status_code == 404


async def test_a_revoked_or_expired_key_cannot_be_rolled(world: World) -> None:
    owner = await world.mint()
    revoked = await created(world, owner)
    await world.request(owner, "DELETE", f"{KEYS}/{revoked['key']}")
    expired = await created(world, owner)
    await expire_now(world, expired["key"])

    for key in (revoked["key"], expired["key"]):
        response = await world.request(owner, "POST", f"{KEYS}/{key}/roll")
        assert response.status_code == 409, response.text


async def test_both_audit_events_of_a_roll_name_each_other(world: World) -> None:
    owner = await world.mint()
    old = await created(world, owner)

    new = (await world.request(owner, "POST", f"{KEYS}/{old['key']}/roll")).json()
    trail = {event["action"]: event for event in (await events(world, owner))[:2]}
    rolled, creation = trail["api_key.rolled"], trail["api_key.created"]

    assert rolled["target_key"] == old["key"] and rolled["related_key"] == new["key"]
    assert creation["target_key"] == new["key"] and creation["related_key"] == old["key"]
    assert rolled["actor_key"] == creation["actor_key"] == owner.key


# Updating.


async def test_a_patch_renames_a_key_and_leaves_the_rest_as_it_was(world: World) -> None:
    owner = await world.mint()
    key = await created(world, owner, expires_at=IN_A_WEEK.isoformat())

    response = await world.request(
        owner,
        "PATCH",
        f"{KEYS}/{key['key']}",
        {"name": "  Renamed  "},
        headers={"Content-Type": "application/merge-patch+json"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "Renamed"
    assert body["expires_at"] == key["expires_at"]
    assert "secret" not in body
    shown = (await world.request(owner, "GET", f"{KEYS}/{key['key']}")).json()
    assert shown == body


async def test_a_patch_with_expires_at_null_makes_a_key_never_expire(world: World) -> None:
    owner = await world.mint()
    key = await created(world, owner, expires_at=IN_A_WEEK.isoformat())

    response = await world.request(owner, "PATCH", f"{KEYS}/{key['key']}", {"expires_at": None})

    assert response.status_code == 200
    assert response.json()["expires_at"] is None
    assert response.json()["name"] == "Nightly sync"


async def test_an_expired_key_given_a_new_expiry_works_again(world: World) -> None:
    owner = await world.mint()
    key = await created(world, owner, type="secretKey")
    await expire_now(world, key["key"])
    assert (await world.request(credential_of(key), "GET", "/me")).status_code == 401

    response = await world.request(
        owner, "PATCH", f"{KEYS}/{key['key']}", {"expires_at": IN_A_WEEK.isoformat()}
    )

    assert response.status_code == 200, response.text
    assert (await world.request(credential_of(key), "GET", "/me")).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": None},
        {"name": ""},
        {"role": "admin"},
        {"projects": [1]},
        {"expires_at": "2020-01-01T00:00:00Z"},
        {"expires_at": "2030-01-01"},
    ],
)
async def test_a_patch_of_anything_but_a_valid_name_or_expiry_is_422(
    world: World, body: dict[str, Any]
) -> None:
    owner = await world.mint()
    key = await created(world, owner)

    response = await world.request(owner, "PATCH", f"{KEYS}/{key['key']}", body)

    assert response.status_code == 422, response.text


async def test_a_revoked_key_cannot_be_patched(world: World) -> None:
    owner = await world.mint()
    key = await created(world, owner)
    await world.request(owner, "DELETE", f"{KEYS}/{key['key']}")

    response = await world.request(owner, "PATCH", f"{KEYS}/{key['key']}", {"name": "again"})

    assert response.status_code == 409, response.text


async def test_no_key_patches_itself_or_a_key_that_outranks_it(world: World) -> None:
    owner = await world.mint()
    admin = await world.mint(role=Role.ADMIN)

    itself = await world.request(admin, "PATCH", f"{KEYS}/{admin.key}", {"expires_at": None})
    above = await world.request(admin, "PATCH", f"{KEYS}/{owner.key}", {"name": "mine"})
    by_owner = await world.request(owner, "PATCH", f"{KEYS}/{admin.key}", {"name": "renamed"})

    assert itself.status_code == 403
    assert above.status_code == 403
    assert by_owner.status_code == 200


async def test_a_patch_is_audited(world: World) -> None:
    owner = await world.mint()
    key = await created(world, owner)

    await world.request(owner, "PATCH", f"{KEYS}/{key['key']}", {"name": "renamed"})
    latest = (await events(world, owner))[0]

    assert latest["action"] == "api_key.updated"
    assert latest["target_key"] == key["key"]
    assert latest["actor_key"] == owner.key
