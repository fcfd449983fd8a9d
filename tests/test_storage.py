"""What the database holds (SPEC §8): no secret in clear, and a schema that matches the models."""

from __future__ import annotations

import base64
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text, update

from apikeys.domain import KeyType, Role
from apikeys.service import accounts
from apikeys.storage.models import ApiKey, Base
from tests.conftest import ACCOUNT_ID, OTHER_ACCOUNT_ID, OTHER_PROJECT, PROJECTS, World

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
CHECKSUM_LENGTH = 6


def forms(secret: str) -> list[bytes]:
    """A secret, its random part, and the ways either might be encoded into a column."""
    random_part = secret[secret.index("_") + 1 : -CHECKSUM_LENGTH]
    found: list[bytes] = []
    for text_form in (secret, random_part):
        raw = text_form.encode()
        found += [
            raw,
            raw.hex().encode(),
            raw.hex().upper().encode(),
            base64.b64encode(raw),
            base64.urlsafe_b64encode(raw),
            base64.b64encode(raw).rstrip(b"="),
            base64.b32encode(raw),
        ]
    return found


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


async def create_keys_over_http(world: World) -> list[str]:
    owner = await world.mint(role=Role.OWNER)
    secrets = [owner.secret]
    for body in (
        {"name": "signing, every project"},
        {"name": "signing, two projects", "projects": [1, 2]},
        {"name": "bearer, every project", "type": "secretKey", "role": "admin"},
        {"name": "bearer, one project", "type": "secretKey", "projects": [3]},
    ):
        response = await world.request(owner, "POST", KEY_PATH, body)
        assert response.status_code == 201, response.text
        secrets.append(response.json()["secret"])
    return secrets


async def all_rows(world: World) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table in the database, read with a raw SELECT *."""
    async with world.services.database.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert {table.name for table in Base.metadata.sorted_tables} <= set(tables)
        rows = {}
        for table in tables:
            result = await connection.execute(text(f'SELECT * FROM "{table}"'))
            rows[table] = [dict(row._mapping) for row in result]
    return rows


async def test_no_column_of_any_table_holds_a_secret_in_any_encoding(world: World) -> None:
    secrets = await create_keys_over_http(world)

    rows = await all_rows(world)

    assert len(rows["api_keys"]) == len(secrets)
    values = [as_bytes(value) for table in rows.values() for row in table for value in row.values()]
    for secret in secrets:
        for form in forms(secret):
            assert not any(form in value for value in values)


async def test_signing_rows_have_a_ciphertext_and_bearer_rows_none(world: World) -> None:
    await create_keys_over_http(world)

    rows = (await all_rows(world))["api_keys"]

    signing = [row for row in rows if row["type"] == "requestSigning"]
    bearer = [row for row in rows if row["type"] == "secretKey"]
    assert len(signing) == 2 and len(bearer) == 3
    assert all(row["secret_ciphertext"] for row in signing)
    assert all(row["secret_ciphertext"] is None for row in bearer)
    assert all(len(as_bytes(row["secret_digest"])) == 32 for row in rows)


async def test_a_ciphertext_moved_to_another_key_does_not_authenticate_it(world: World) -> None:
    donor = await world.mint(type=KeyType.REQUEST_SIGNING)
    target = await world.mint(type=KeyType.REQUEST_SIGNING)
    async with world.services.database.sessions() as session:
        ciphertext = await session.scalar(
            select(ApiKey.secret_ciphertext).where(ApiKey.key == donor.key)
        )
        await session.execute(
            update(ApiKey).where(ApiKey.key == target.key).values(secret_ciphertext=ciphertext)
        )
        await session.commit()
    target_signed_with_donor_secret = type(target)(target.key, donor.secret, target.type, {})

    with_donor_secret = await world.request(target_signed_with_donor_secret, "GET", "/me")
    with_own_secret = await world.request(target, "GET", "/me")
    donor_itself = await world.request(donor, "GET", "/me")

    assert with_donor_secret.status_code == 401
    assert with_own_secret.status_code == 401
    assert donor_itself.status_code == 200


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_models_and_migrations_agree(world: World) -> None:
    async with world.services.database.engine.connect() as connection:
        differences = await connection.run_sync(_differences)

    assert differences == []


async def test_accounts_and_projects_without_an_id_follow_the_explicit_ones(world: World) -> None:
    async with world.services.database.transaction() as session:
        account = await accounts.create_account(session, "No id given", None)
        project = await accounts.create_project(session, account, "No id given", None)

    assert account == OTHER_ACCOUNT_ID + 1
    assert project == max(*PROJECTS, OTHER_PROJECT) + 1
