"""What operators rely on: request ids, the access log, and revocation across replicas."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import select
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from apikeys.log import AccessLog, logs_at
from tests import servers
from tests.conftest import ACCOUNT_ID, World, empty_postgres, random_master_key, run_now
from tests.signing import bearer_headers


async def access_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The access log's JSON lines on stderr so far; it writes at the end of a loop turn."""
    await asyncio.sleep(0)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    return [line for line in lines if line["logger"] == "apikeys.access"]


async def test_one_access_log_line_per_request_names_route_status_and_key(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = await world.mint()
    await access_lines(capsys)

    response = await world.request(
        owner, "GET", f"/accounts/{ACCOUNT_ID}/api-keys", headers={"X-Request-ID": "trace-42"}
    )

    (line,) = await access_lines(capsys)
    assert response.headers["x-request-id"] == "trace-42"
    assert line["level"] == "info"
    assert line["message"] == "GET /accounts/{account_id}/api-keys 200"
    assert line["method"] == "GET"
    assert line["route"] == "/accounts/{account_id}/api-keys"
    assert line["status"] == 200
    assert line["request_id"] == "trace-42"
    assert line["key"] == owner.key
    assert isinstance(line["duration_ms"], float)
    assert datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0)


async def test_a_refused_request_is_logged_without_a_key(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    response = await world.client.get("/me")

    (line,) = await access_lines(capsys)
    assert response.status_code == 401
    assert line["status"] == 401
    assert line["key"] is None


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("path", "route", "status"),
    [
        ("/openapi.json", "/openapi.json", 200),
        ("/static/docs/swagger/swagger-ui.css", "/static/docs/{path}", 200),
        ("/static/apikeys/request-signing.js", "/static/apikeys/{path}", 200),
        ("/static/apikeys/nothing-here.js", "/static/apikeys/{path}", 404),
        ("/docs", "/docs", 200),
        ("/no/such/path", "(unmatched)", 404),
    ],
)
async def test_the_access_log_names_the_docs_document_and_static_files(
    world: World, capsys: pytest.CaptureFixture[str], path: str, route: str, status: int
) -> None:
    response = await world.client.get(path)

    (line,) = await access_lines(capsys)
    assert response.status_code == status
    assert (line["route"], line["status"]) == (route, status)


async def test_access_lines_made_in_one_loop_turn_are_written_together_as_text() -> None:
    stream = io.StringIO()
    access_log = AccessLog("text", enabled=True, stream=stream)

    access_log.write("GET /me 200", {"route": "/me", "status": 200, "key": "k1"})
    access_log.write("GET /me 401", {"route": "/me", "status": 401, "key": None})
    before = stream.getvalue()
    await asyncio.sleep(0)

    first, second = stream.getvalue().splitlines()
    assert before == ""
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    apikeys.access: GET /me 200 "
        r"route=/me status=200 key=k1",
        first,
    )
    assert second.endswith("GET /me 401 route=/me status=401 key=None")


class WriteRecorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_access_lines_go_out_in_whole_lines_of_at_most_pipe_buf_bytes() -> None:
    # Workers share one stderr pipe: only writes of up to PIPE_BUF bytes never interleave.
    stream = WriteRecorder()
    access_log = AccessLog("json", enabled=True, stream=stream)
    routes = [f"/é{'x' * (n % 300)}" for n in range(200)]

    for route in routes:
        access_log.write(f"GET {route} 200", {"route": route})
    await asyncio.sleep(0)

    assert len(stream.writes) > 1
    assert all(len(write.encode()) <= select.PIPE_BUF for write in stream.writes)
    assert all(write.endswith("\n") for write in stream.writes)
    written = [json.loads(line)["route"] for line in stream.getvalue().splitlines()]
    assert written == routes


async def test_no_access_line_when_the_level_is_above_info() -> None:
    stream = io.StringIO()
    access_log = AccessLog("json", enabled=logs_at("WARNING", logging.INFO), stream=stream)

    access_log.write("GET /me 200", {"status": 200})
    await asyncio.sleep(0)

    assert stream.getvalue() == ""
    assert logs_at("info", logging.INFO) and logs_at("DEBUG", logging.INFO)


@pytest.mark.full
def test_revocation_on_one_replica_is_refused_by_another_within_a_second(
    postgres_database_url: str, tmp_path: Path
) -> None:
    run_now(empty_postgres(postgres_database_url))
    env = servers.environment(postgres_database_url, random_master_key())
    servers.cli(["accounts", "create", "--name", "Acme", "--id", str(ACCOUNT_ID), "--json"], env)
    owner = servers.cli(
        ["keys", "create", "--account", str(ACCOUNT_ID), "--name", "o", "--role", "owner",
         "--type", "secretKey", "--json"],
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
