"""Authorization per SPEC §3: who may create keys, in which account, with how much power."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from apikeys.domain import ApiKeyInfo, KeyType, Role
from apikeys.errors import Forbidden
from apikeys.service.keys import KeyRequest, ensure_within_grant
from apikeys.storage.models import ApiKey
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, OTHER_PROJECT, World
from tests.factories import key_info

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
ROLES_BELOW_OWNER = ["browse", "edit", "publish", "admin"]


@pytest.mark.parametrize("role", [Role.BROWSE, Role.EDIT, Role.PUBLISH])
@pytest.mark.parametrize("key_type", list(KeyType))
async def test_keys_below_admin_cannot_create_keys(
    world: World, role: Role, key_type: KeyType
) -> None:
    caller = await world.mint(type=key_type, role=role)

    response = await world.request(caller, "POST", KEY_PATH, {"name": "k", "role": "browse"})

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert role.value in response.json()["detail"]


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
async def test_admin_and_owner_keys_can_create_keys(world: World, role: Role) -> None:
    caller = await world.mint(role=role)

    response = await world.request(caller, "POST", KEY_PATH, {"name": "k"})

    assert response.status_code == 201, response.text


@pytest.mark.parametrize("granted", ROLES_BELOW_OWNER)
async def test_admin_can_grant_any_role_up_to_its_own(world: World, granted: str) -> None:
    admin = await world.mint(role=Role.ADMIN)

    response = await world.request(admin, "POST", KEY_PATH, {"name": "k", "role": granted})

    assert response.status_code == 201, response.text
    assert response.json()["role"] == granted


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OWNER])
async def test_owner_role_can_never_be_created_over_http(world: World, role: Role) -> None:
    caller = await world.mint(role=role)

    response = await world.request(caller, "POST", KEY_PATH, {"name": "k", "role": "owner"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "role"]


def _shape(problem: dict[str, Any], account_id: int) -> dict[str, Any]:
    return {**problem, "detail": problem["detail"].replace(str(account_id), "N"), "instance": ""}


@pytest.mark.parametrize("role", [Role.OWNER, Role.BROWSE])
async def test_another_account_and_a_missing_account_answer_the_same_404(
    world: World, role: Role
) -> None:
    caller = await world.mint(role=role)
    missing = 999

    foreign = await world.request(
        caller, "POST", f"/accounts/{OTHER_ACCOUNT_ID}/api-keys", {"name": "k"}
    )
    absent = await world.request(caller, "POST", f"/accounts/{missing}/api-keys", {"name": "k"})

    assert foreign.status_code == absent.status_code == 404
    assert foreign.headers["content-type"] == absent.headers["content-type"]
    first, second = foreign.json(), absent.json()
    first["request_id"] = second["request_id"] = None
    assert _shape(first, OTHER_ACCOUNT_ID) == _shape(second, missing)


async def test_a_refused_foreign_create_writes_nothing(world: World) -> None:
    caller = await world.mint(role=Role.OWNER)

    response = await world.request(
        caller, "POST", f"/accounts/{OTHER_ACCOUNT_ID}/api-keys", {"name": "x"}
    )

    assert response.status_code == 404
    async with world.services.database.sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.account_id == OTHER_ACCOUNT_ID)
        )
    assert count == 0


@pytest.mark.parametrize("projects", [[1], [2], [1, 2], [2, 1, 1]])
async def test_project_limited_admin_can_create_keys_within_its_projects(
    world: World, projects: list[int]
) -> None:
    admin = await world.mint(role=Role.ADMIN, projects=frozenset({1, 2}))

    response = await world.request(admin, "POST", KEY_PATH, {"name": "k", "projects": projects})

    assert response.status_code == 201, response.text
    assert response.json()["projects"] == sorted(set(projects))


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k"},
        {"name": "k", "projects": None},
        {"name": "k", "projects": []},
        {"name": "k", "projects": [3]},
        {"name": "k", "projects": [1, 3]},
        {"name": "k", "projects": [OTHER_PROJECT]},
        {"name": "k", "projects": [999]},
    ],
    ids=["absent", "null", "empty", "outside", "partly-outside", "foreign", "non-existent"],
)
async def test_project_limited_admin_cannot_widen_its_scope(
    world: World, body: dict[str, Any]
) -> None:
    admin = await world.mint(role=Role.ADMIN, projects=frozenset({1, 2}))

    response = await world.request(admin, "POST", KEY_PATH, body)

    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"


def _caller(role: Role, projects: frozenset[int] | None = None) -> ApiKeyInfo:
    return key_info(key="k" * 24, name="caller", role=role, project_ids=projects)


def _request(role: Role, projects: frozenset[int] | None = None) -> KeyRequest:
    return KeyRequest(
        name="new", type=KeyType.SECRET_KEY, role=role, project_ids=projects, expires_at=None
    )


@pytest.mark.parametrize(
    ("caller", "granted"),
    [
        (Role.BROWSE, Role.EDIT),
        (Role.EDIT, Role.PUBLISH),
        (Role.PUBLISH, Role.ADMIN),
        (Role.ADMIN, Role.OWNER),
        (Role.BROWSE, Role.OWNER),
    ],
)
def test_service_refuses_a_role_above_the_callers(caller: Role, granted: Role) -> None:
    with pytest.raises(Forbidden):
        ensure_within_grant(_caller(caller), _request(granted))


def _may_grant(caller: Role, granted: Role) -> bool:
    try:
        ensure_within_grant(_caller(caller), _request(granted))
    except Forbidden:
        return False
    return True


@pytest.mark.parametrize("caller", list(Role))
def test_service_allows_exactly_the_roles_up_to_the_callers(caller: Role) -> None:
    allowed = [granted for granted in Role if _may_grant(caller, granted)]

    assert allowed == [granted for granted in Role if granted.rank <= caller.rank]
    assert allowed[-1] is caller


def test_service_refuses_an_unlimited_key_from_a_limited_caller() -> None:
    caller = _caller(Role.OWNER, frozenset({1}))

    with pytest.raises(Forbidden):
        ensure_within_grant(caller, _request(Role.BROWSE, None))
    with pytest.raises(Forbidden):
        ensure_within_grant(caller, _request(Role.BROWSE, frozenset()))
    with pytest.raises(Forbidden):
        ensure_within_grant(caller, _request(Role.BROWSE, frozenset({1, 2})))
    ensure_within_grant(caller, _request(Role.BROWSE, frozenset({1})))
