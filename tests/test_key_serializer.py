"""The one serializer of a key: what every route and the command line print is exactly what
the OpenAPI document's models describe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from apikeys.api.app import create_app
from apikeys.api.schemas import ApiKey, ApiKeyCreated, ApiKeyList, created_body, key_body, page_body
from apikeys.config import Settings
from apikeys.domain import ApiKeyInfo, KeyType, Role
from apikeys.security import generate_secret
from apikeys.service.keys import IssuedKey
from tests.conftest import random_master_key
from tests.factories import key_info

NOW = datetime(2026, 11, 27, 3, 36, 47, tzinfo=UTC)

INFOS = [
    key_info(),
    key_info(
        type=KeyType.REQUEST_SIGNING,
        role=Role.ADMIN,
        project_ids=frozenset({3, 1}),
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        last_used_at=NOW,
        revoked_at=NOW,
    ),
]


def _properties(tmp_path: Path, schema: str) -> set[str]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/k.db", master_key=random_master_key())
    document: dict[str, Any] = create_app(settings).openapi()
    return set(document["components"]["schemas"][schema]["properties"])


@pytest.mark.parametrize("info", INFOS)
def test_a_key_body_is_the_api_key_model_field_for_field(info: ApiKeyInfo) -> None:
    body = key_body(info)

    assert ApiKey.model_validate(body).model_dump(mode="json") == body
    assert list(body) == list(ApiKey.model_fields)


@pytest.mark.parametrize("info", INFOS)
def test_a_created_body_is_the_created_model_with_the_secret(info: ApiKeyInfo) -> None:
    secret = generate_secret("cvsk_")
    body = created_body(IssuedKey(info, secret))

    assert ApiKeyCreated.model_validate(body).model_dump(mode="json") == body
    assert set(body) == set(ApiKeyCreated.model_fields)
    assert body["secret"] == secret


def test_a_page_body_is_the_list_model() -> None:
    body = page_body(INFOS, "next")

    assert ApiKeyList.model_validate(body).model_dump(mode="json") == body


def test_the_document_describes_the_fields_the_serializer_writes(tmp_path: Path) -> None:
    assert _properties(tmp_path, "ApiKey") == set(key_body(INFOS[0]))
    assert _properties(tmp_path, "ApiKeyCreated") == set(created_body(IssuedKey(INFOS[0], "s")))
