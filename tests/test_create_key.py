"""POST /accounts/{account_id}/api-keys: the contract of SPEC §2."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apikeys.domain import KeyType
from apikeys.security import has_valid_checksum
from tests.conftest import ACCOUNT_ID, OTHER_PROJECT, World

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
KEY_FORMAT = re.compile(r"[A-Za-z0-9_\-]{16,64}")
SECRET_FORMAT = re.compile(r"(cvrs_|cvsk_)[0-9A-Za-z]{40,}[0-9A-Za-z]{6}")
TIMESTAMP_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


async def create(world: World, body: Any, **kwargs: Any) -> Any:
    owner = await world.mint()
    return await world.request(owner, "POST", KEY_PATH, body, **kwargs)


async def test_create_with_only_a_name_makes_a_browse_signing_key_for_every_project(
    world: World,
) -> None:
    response = await create(world, {"name": "Nightly Data Sync Script"})

    assert response.status_code == 201
    body = response.json()
    assert list(body) == [
        "key", "secret", "name", "type", "role", "projects", "account_id",
        "created_at", "expires_at", "last_used_at", "revoked_at", "secret_hint",
    ]  # fmt: skip
    assert body["name"] == "Nightly Data Sync Script"
    assert body["type"] == "requestSigning"
    assert body["role"] == "browse"
    assert body["projects"] is None
    assert body["account_id"] == ACCOUNT_ID
    assert body["expires_at"] is body["last_used_at"] is body["revoked_at"] is None
    assert TIMESTAMP_FORMAT.fullmatch(body["created_at"])
    created = datetime.fromisoformat(body["created_at"])
    assert abs(created - datetime.now(UTC)) < timedelta(seconds=5)
    assert response.headers["location"] == f"{KEY_PATH}/{body['key']}"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("key_type", "prefix"), [("requestSigning", "cvrs_"), ("secretKey", "cvsk_")]
)
async def test_secret_has_type_prefix_random_body_and_crc32_checksum(
    world: World, key_type: str, prefix: str
) -> None:
    body = (await create(world, {"name": "k", "type": key_type})).json()

    secret = body["secret"]
    assert SECRET_FORMAT.fullmatch(secret) and secret.startswith(prefix)
    assert has_valid_checksum(secret, prefix)
    assert body["secret_hint"] == "…" + secret[-4:]
    assert KEY_FORMAT.fullmatch(body["key"])
    assert body["key"] not in secret


async def test_each_key_and_secret_is_unique(world: World) -> None:
    bodies = [(await create(world, {"name": f"k{i}"})).json() for i in range(5)]

    assert len({b["key"] for b in bodies}) == 5
    assert len({b["secret"] for b in bodies}) == 5


async def test_name_is_trimmed(world: World) -> None:
    response = await create(world, {"name": "  \tReporting Dashboard Integration \n"})

    assert response.json()["name"] == "Reporting Dashboard Integration"


async def test_name_of_100_code_points_is_accepted(world: World) -> None:
    name = "é" * 99 + "😀"
    response = await create(world, {"name": name})

    assert response.status_code == 201
    assert response.json()["name"] == name


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 101, "bad\x00name", "tab\tinside", "line\nbreak", "del\x7f", 42, None, ["a"]],
)
async def test_invalid_name_is_422_naming_the_field(world: World, name: Any) -> None:
    response = await create(world, {"name": name})

    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert ["body", "name"] in [error["loc"] for error in problem["errors"]]


async def test_missing_name_is_422(world: World) -> None:
    response = await create(world, {"type": "secretKey"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "name"]


@pytest.mark.parametrize("key_type", [None, "RequestSigning", "secretkey", "bearer", 1])
async def test_invalid_type_is_422(world: World, key_type: Any) -> None:
    response = await create(world, {"name": "k", "type": key_type})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "type"]


@pytest.mark.parametrize("projects", [None, []])
async def test_null_or_empty_projects_mean_every_project(world: World, projects: Any) -> None:
    response = await create(world, {"name": "k", "projects": projects})

    assert response.status_code == 201
    assert response.json()["projects"] is None


async def test_projects_are_deduplicated_and_sorted(world: World) -> None:
    response = await create(world, {"name": "k", "projects": [3, 1, 3, 1]})

    assert response.status_code == 201
    assert response.json()["projects"] == [1, 3]


@pytest.mark.parametrize(
    "projects", [["1"], [True], [1.5], [1.0], [0], [-2], "1", 1, {"id": 1}, [None]]
)
async def test_projects_must_be_a_list_of_positive_json_integers(
    world: World, projects: Any
) -> None:
    response = await create(world, {"name": "k", "projects": projects})

    assert response.status_code == 422
    assert all(error["loc"][:2] == ["body", "projects"] for error in response.json()["errors"])


async def test_more_than_1000_distinct_projects_is_422(world: World) -> None:
    response = await create(world, {"name": "k", "projects": list(range(1, 1002))})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "projects"]


async def test_unknown_and_foreign_project_ids_are_422_and_listed(world: World) -> None:
    response = await create(world, {"name": "k", "projects": [1, 999, OTHER_PROJECT]})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "999" in detail and str(OTHER_PROJECT) in detail


@pytest.mark.parametrize("role", ["browse", "edit", "publish", "admin"])
async def test_each_role_below_owner_can_be_granted(world: World, role: str) -> None:
    response = await create(world, {"name": "k", "role": role})

    assert response.status_code == 201
    assert response.json()["role"] == role


@pytest.mark.parametrize("role", [None, "owner", "Admin", "superuser", 3])
async def test_invalid_role_is_422(world: World, role: Any) -> None:
    response = await create(world, {"name": "k", "role": role})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "role"]


async def test_future_expiry_is_kept_and_shown_in_utc(world: World) -> None:
    response = await create(world, {"name": "k", "expires_at": "2099-01-31T14:00:00+02:00"})

    assert response.status_code == 201
    assert response.json()["expires_at"] == "2099-01-31T12:00:00Z"


@pytest.mark.parametrize(
    "expires_at",
    [
        "2020-01-01T00:00:00Z",  # past
        "2099-01-01T00:00:00",  # no offset
        "2099-01-01",  # date only
        4102444800,  # epoch number
        "4102444800",
        "next week",
        "2099-13-01T00:00:00Z",
        "9999-12-31T23:30:00-01:00",  # year 10000 in UTC
    ],
)
async def test_invalid_expiry_is_422(world: World, expires_at: Any) -> None:
    response = await create(world, {"name": "k", "expires_at": expires_at})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "expires_at"]


async def test_unknown_field_is_422_so_a_typo_cannot_widen_a_key(world: World) -> None:
    response = await create(world, {"name": "k", "project": [1]})

    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error == {"loc": ["body", "project"], "msg": "unknown field"}


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'"name"', b"null", b""])
async def test_body_that_is_not_a_json_object_is_422(world: World, raw: bytes) -> None:
    owner = await world.mint()
    response = await world.request(
        owner, "POST", KEY_PATH, raw=raw, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422


async def test_body_over_64_kib_is_413(world: World) -> None:
    response = await create(world, {"name": "k", "pad": "x" * 70_000})

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_non_json_content_type_is_415(world: World) -> None:
    owner = await world.mint()
    response = await world.request(
        owner, "POST", KEY_PATH, raw=b"name=k", headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 415
    assert response.json()["status"] == 415


@pytest.mark.parametrize("account", ["abc", "0", "-1", "1.5"])
async def test_account_id_that_is_not_a_positive_integer_is_422(world: World, account: str) -> None:
    owner = await world.mint()
    response = await world.request(owner, "POST", f"/accounts/{account}/api-keys", {"name": "k"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["path", "account_id"]


async def test_a_created_key_authenticates_with_its_own_method(world: World) -> None:
    for key_type in KeyType:
        body = (await create(world, {"name": "k", "type": key_type.value})).json()
        from tests.conftest import Credential

        credential = Credential(body["key"], body["secret"], key_type, body)
        me = await world.request(credential, "GET", "/me")

        assert me.status_code == 200
        assert me.json()["key"] == body["key"]
        assert "secret" not in me.json()


async def test_streamed_body_over_64_kib_without_content_length_is_413(world: World) -> None:
    owner = await world.mint()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(14):
            yield b"x" * 5000
        yield b'"}'

    response = await world.client.post(
        KEY_PATH,
        content=chunks(),
        headers={"Content-Type": "application/json", **owner.headers("POST", "", b"")},
    )

    assert response.status_code == 413
    assert response.json()["status"] == 413
