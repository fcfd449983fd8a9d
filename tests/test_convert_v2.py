"""The Convert API v2 surface (SPEC §10): Convert's names and error shape over the very same
keys, rules and audit trail as the service's own routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from apikeys.config import Settings
from apikeys.domain import KeyType, Role
from apikeys.security import has_valid_checksum
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, Credential, World, random_master_key
from tests.signing import bearer_headers

V2 = f"/api/v2/accounts/{ACCOUNT_ID}/api-keys"
NATIVE = f"/accounts/{ACCOUNT_ID}/api-keys"
CONVERT_FIELDS = ["name", "auth_type", "projects", "key_id", "key_secret", "role"]
FAILURE_LIMIT = 3


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        master_key=random_master_key(),
        auth_failure_limit=FAILURE_LIMIT,
    )


def assert_convert_error(response: Any, status: int, fields: list[str] | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "fields"}
    assert body["code"] == status and body["message"]
    if fields is not None:
        assert body["fields"] == fields


async def add(world: World, caller: Credential, **fields: Any) -> dict[str, Any]:
    response = await world.request(caller, "POST", f"{V2}/add", {"name": "Sync", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_add_answers_convert_s_api_key_object_with_the_full_secret(world: World) -> None:
    owner = await world.mint()

    response = await world.request(
        owner, "POST", f"{V2}/add", {"name": "Sync", "auth_type": "secretKey", "projects": [2, 1]}
    )

    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert list(body) == CONVERT_FIELDS
    assert has_valid_checksum(body["key_secret"], "cvsk_")
    native = (await world.request(owner, "GET", f"{NATIVE}/{body['key_id']}")).json()
    assert (native["name"], native["type"], native["projects"], native["role"]) == (
        "Sync", "secretKey", [1, 2], body["role"],
    )  # fmt: skip
    new_key = Credential(body["key_id"], body["key_secret"], KeyType.SECRET_KEY, body)
    assert (await world.request(new_key, "GET", "/me")).json()["key"] == body["key_id"]


async def test_add_defaults_to_a_request_signing_key_that_signs_against_v2(world: World) -> None:
    owner = await world.mint()

    body = await add(world, owner)
    signer = Credential(body["key_id"], body["key_secret"], KeyType.REQUEST_SIGNING, body)
    listed = await world.request(signer, "GET", V2)

    assert body["auth_type"] == "requestSigning"
    assert listed.status_code == 200, listed.text


@pytest.mark.parametrize(
    ("caller_role", "default"),
    [(Role.OWNER, "admin"), (Role.ADMIN, "admin")],
)
async def test_an_omitted_role_is_the_callers_own_capped_at_admin(
    world: World, caller_role: Role, default: str
) -> None:
    caller = await world.mint(role=caller_role)

    assert (await add(world, caller))["role"] == default


async def test_a_given_role_is_kept_and_one_above_the_caller_is_403(world: World) -> None:
    admin = await world.mint(role=Role.ADMIN)

    kept = await add(world, admin, role="account_manager")
    above = await world.request(admin, "POST", f"{V2}/add", {"name": "x", "role": "owner"})

    assert kept["role"] == "account_manager"
    assert_convert_error(above, 422, ["role"])


async def test_read_only_fields_are_ignored_and_unknown_ones_are_422(world: World) -> None:
    owner = await world.mint()

    echoed = await add(world, owner, key_id="mine" * 6, key_secret="…abcd")
    unknown = await world.request(owner, "POST", f"{V2}/add", {"name": "x", "type": "secretKey"})

    assert echoed["key_id"] != "mine" * 6 and echoed["key_secret"] != "…abcd"
    assert_convert_error(unknown, 422, ["type"])


async def test_the_list_masks_secrets_and_leaves_revoked_keys_out_newest_first(
    world: World,
) -> None:
    owner = await world.mint()
    first = await add(world, owner, name="first")
    second = await add(world, owner, name="second")
    gone = await add(world, owner, name="gone")
    await world.request(owner, "DELETE", f"{V2}/{gone['key_id']}/delete")

    response = await world.request(owner, "GET", V2)

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert list(response.json()) == ["data"]
    assert [key["key_id"] for key in data][:2] == [second["key_id"], first["key_id"]]
    assert gone["key_id"] not in [key["key_id"] for key in data]
    for key in data:
        assert list(key) == CONVERT_FIELDS
        assert key["key_secret"].startswith("…") and len(key["key_secret"]) == 5
    assert first["key_secret"] not in response.text
    assert data[1]["key_secret"] == "…" + first["key_secret"][-4:]


async def test_delete_revokes_at_once_answers_200_and_again_200(world: World) -> None:
    owner = await world.mint()
    body = await add(world, owner, auth_type="secretKey")
    key = Credential(body["key_id"], body["key_secret"], KeyType.SECRET_KEY, body)
    assert (await world.request(key, "GET", "/me")).status_code == 200

    deleted = await world.request(owner, "DELETE", f"{V2}/{body['key_id']}/delete")
    again = await world.request(owner, "DELETE", f"{V2}/{body['key_id']}/delete")

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["code"] == 200 and deleted.json()["message"]
    assert again.status_code == 200
    assert (await world.request(key, "GET", "/me")).status_code == 401
    native = (await world.request(owner, "GET", f"{NATIVE}/{body['key_id']}")).json()
    assert native["revoked_at"] is not None


async def test_v2_changes_are_in_the_same_audit_trail(world: World) -> None:
    owner = await world.mint()
    body = await add(world, owner)
    await world.request(owner, "DELETE", f"{V2}/{body['key_id']}/delete")

    trail = await world.request(owner, "GET", f"/accounts/{ACCOUNT_ID}/audit-events")
    revoked, created = trail.json()["data"][:2]

    assert (revoked["action"], revoked["target_key"]) == ("api_key.revoked", body["key_id"])
    assert (created["action"], created["target_key"]) == ("api_key.created", body["key_id"])
    assert revoked["actor_key"] == created["actor_key"] == owner.key


async def test_errors_have_convert_s_shape_with_the_same_statuses_and_headers(
    world: World,
) -> None:
    owner = await world.mint()
    browser = await world.mint(role=Role.BROWSE)
    limited = await world.mint(role=Role.ADMIN, projects=frozenset({1}))

    anonymous = await world.client.get(V2)
    too_weak = await world.request(browser, "GET", V2)
    foreign = await world.request(owner, "GET", f"/api/v2/accounts/{OTHER_ACCOUNT_ID}/api-keys")
    unknown_key = await world.request(owner, "DELETE", f"{V2}/{'x' * 24}/delete")
    unknown_path = await world.request(owner, "GET", "/api/v2/nothing-here")
    bad_body = await world.request(owner, "POST", f"{V2}/add", {"name": " ", "role": "boss"})
    not_json = await world.request(
        owner, "POST", f"{V2}/add", raw=b"name=x", headers={"Content-Type": "text/plain"}
    )
    everywhere = await world.request(limited, "POST", f"{V2}/add", {"name": "x"})
    unknown_project = await world.request(
        owner, "POST", f"{V2}/add", {"name": "x", "projects": [9]}
    )

    assert_convert_error(anonymous, 401, [])
    assert "Convert-HMAC-SHA256" in anonymous.headers["www-authenticate"]
    assert_convert_error(too_weak, 403, [])
    assert_convert_error(foreign, 404, [])
    assert_convert_error(unknown_key, 404, [])
    assert_convert_error(unknown_path, 404, [])
    assert_convert_error(bad_body, 422, ["name", "role"])
    assert_convert_error(not_json, 415, [])
    assert_convert_error(everywhere, 403, [])
    assert_convert_error(unknown_project, 422, ["projects"])
    assert owner.secret not in unknown_project.text


async def test_too_many_failed_authentications_are_429_with_retry_after(world: World) -> None:
    bad = bearer_headers("cvsk_" + "x" * 49)
    for _ in range(FAILURE_LIMIT):
        assert (await world.client.get(V2, headers=bad)).status_code == 401

    refused = await world.client.get(V2, headers=bad)

    assert_convert_error(refused, 429, [])
    assert int(refused.headers["retry-after"]) >= 1


async def test_an_oversized_body_is_413_in_convert_s_shape(world: World) -> None:
    owner = await world.mint()

    response = await world.request(
        owner, "POST", f"{V2}/add", raw=b'{"name": "' + b"x" * 70_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip

    assert_convert_error(response, 413, [])


async def test_the_service_s_own_routes_keep_problem_json(world: World) -> None:
    response = await world.client.get(NATIVE)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.one_backend
async def test_the_v2_operations_have_their_own_tag_in_the_document(app: FastAPI) -> None:
    document = app.openapi()
    tagged = {
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "Convert API v2" in operation.get("tags", [])
    }

    assert tagged == {
        ("get", "/api/v2/accounts/{account_id}/api-keys"),
        ("post", "/api/v2/accounts/{account_id}/api-keys/add"),
        ("delete", "/api/v2/accounts/{account_id}/api-keys/{key_id}/delete"),
    }
    schema = document["components"]["schemas"]["ConvertApiKeyAdd"]["properties"]
    assert schema["role"]["enum"] == [
        "browse", "review", "edit", "publish", "account_manager", "admin",
    ]  # fmt: skip
