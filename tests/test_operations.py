"""What operators rely on: request ids, the access log, and revocation across replicas."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from apikeys.log import JsonFormatter, TextFormatter
from tests import servers
from tests.conftest import ACCOUNT_ID, World, empty_postgres, random_master_key, run_now
from tests.signing import bearer_headers


async def test_one_access_log_line_per_request_names_route_status_and_key(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    owner = await world.mint()
    caplog.set_level(logging.INFO, logger="apikeys.access")

    response = await world.request(
        owner, "GET", f"/accounts/{ACCOUNT_ID}/api-keys", headers={"X-Request-ID": "trace-42"}
    )

    (record,) = [r for r in caplog.records if r.name == "apikeys.access"]
    fields = record.http  # type: ignore[attr-defined]
    assert response.headers["x-request-id"] == "trace-42"
    assert fields["method"] == "GET"
    assert fields["route"] == "/accounts/{account_id}/api-keys"
    assert fields["status"] == 200
    assert fields["request_id"] == "trace-42"
    assert fields["key"] == owner.key
    assert isinstance(fields["duration_ms"], float)
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/accounts/{account_id}/api-keys" and line["level"] == "info"
    assert "route=/accounts/{account_id}/api-keys" in TextFormatter().format(record)


async def test_a_refused_request_is_logged_without_a_key(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="apikeys.access")

    response = await world.client.get("/me")

    (record,) = [r for r in caplog.records if r.name == "apikeys.access"]
    assert response.status_code == 401
    assert record.http["status"] == 401  # type: ignore[attr-defined]
    assert record.http["key"] is None  # type: ignore[attr-defined]


def test_revocation_on_one_replica_is_refused_by_another_within_a_second(
    postgres_database_url: str, tmp_path: Path
) -> None:
    run_now(empty_postgres(postgres_database_url))
    env = servers.environment(postgres_database_url, random_master_key())
    servers.cli(["accounts", "create", "--name", "Acme", "--id", str(ACCOUNT_ID)], env)
    owner = servers.cli(
        ["keys", "create", "--account", str(ACCOUNT_ID), "--name", "o", "--role", "owner",
         "--type", "secretKey"],
        env,
    )  # fmt: skip
    with (
        servers.running(env, tmp_path / "a.log") as first,
        servers.running(env, tmp_path / "b.log") as second,
    ):
        created = httpx.post(
            f"{first.base_url}/accounts/{ACCOUNT_ID}/api-keys",
            json={"name": "victim", "type": "secretKey"},
            headers=bearer_headers(owner["secret"]),
        ).json()
        victim = bearer_headers(created["secret"])
        assert httpx.get(f"{second.base_url}/me", headers=victim).status_code == 200

        revoked = httpx.delete(
            f"{first.base_url}/accounts/{ACCOUNT_ID}/api-keys/{created['key']}",
            headers=bearer_headers(owner["secret"]),
        )
        revoked_at = time.monotonic()
        assert revoked.status_code == 204
        assert httpx.get(f"{first.base_url}/me", headers=victim).status_code == 401
        while httpx.get(f"{second.base_url}/me", headers=victim).status_code != 401:
            assert time.monotonic() - revoked_at < 1.0, "still accepted a second after revoking"
            time.sleep(0.02)
        print(f"refused by the other replica after {time.monotonic() - revoked_at:.3f} s")
