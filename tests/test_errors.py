"""Errors per SPEC §5: problem+json everywhere, request ids, and a database that is away."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from apikeys.api.app import create_app
from apikeys.config import Settings
from apikeys.domain import Role
from apikeys.security import generate_key, generate_secret
from tests.conftest import ACCOUNT_ID, World, random_master_key
from tests.signing import bearer_headers, signed_headers

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}
LEAKS = re.compile(r"Traceback|File \"|SELECT |INSERT |UPDATE |sqlalchemy|asyncpg|aiosqlite", re.I)


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert set(body) >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    assert not LEAKS.search(response.text)
    return body


@pytest.mark.one_backend
async def test_unknown_path_is_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/no/such/thing"), 404)

    assert body["instance"] == "/no/such/thing"


@pytest.mark.one_backend
@pytest.mark.parametrize(("method", "path"), [("PUT", "/me"), ("POST", "/healthz")])
async def test_wrong_method_is_405_problem(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


async def test_a_sane_request_id_is_echoed(world: World) -> None:
    owner = await world.mint()

    response = await world.request(
        owner, "GET", "/me", headers={"X-Request-ID": "trace-42.a:b_c-d"}
    )

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-42.a:b_c-d"


@pytest.mark.one_backend
@pytest.mark.parametrize("offered", ["x" * 300, "has spaces", "semi;colon", "ünïcode"])
async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient, offered: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": offered.encode("latin-1")})

    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_every_response_has_a_request_id_that_errors_repeat(world: World) -> None:
    owner = await world.mint()
    browse = await world.mint(role=Role.BROWSE)
    responses = {
        200: await world.request(owner, "GET", "/me"),
        201: await world.request(owner, "POST", KEY_PATH, {"name": "k"}),
        401: await world.client.get("/me"),
        403: await world.request(browse, "POST", KEY_PATH, {"name": "k"}),
        404: await world.request(owner, "POST", "/accounts/999/api-keys", {"name": "k"}),
        405: await world.client.delete("/healthz"),
        413: await world.request(owner, "POST", KEY_PATH, {"name": "k", "pad": "x" * 70_000}),
        415: await world.request(
            owner, "POST", KEY_PATH, raw=b"name=k", headers={"Content-Type": "text/plain"}
        ),
        422: await world.request(owner, "POST", KEY_PATH, {"name": ""}),
    }

    ids = set()
    for status, response in responses.items():
        assert response.status_code == status, response.text
        ids.add(response.headers["x-request-id"])
        if status >= 400:
            assert_problem(response, status)
    assert len(ids) == len(responses)


@pytest.mark.one_backend
async def test_errors_repeat_the_request_id_the_client_sent(client: httpx.AsyncClient) -> None:
    response = await client.get("/me", headers={"X-Request-ID": "client-chosen-id"})

    body = assert_problem(response, 401)
    assert body["request_id"] == "client-chosen-id"


@pytest.fixture
async def unreachable() -> AsyncIterator[httpx.AsyncClient]:
    """The service pointed at a PostgreSQL that is not there: nothing listens on port 1."""
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/apikeys",
        master_key=random_master_key(),
        database_timeout=2,
        auth_failure_limit=2,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.8", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_an_unreachable_database_is_503_with_retry_after(
    unreachable: httpx.AsyncClient,
) -> None:
    bearer = await unreachable.get("/me", headers=bearer_headers(generate_secret("cvsk_")))
    signed = await unreachable.get(
        "/me",
        headers=signed_headers(generate_key(), generate_secret("cvrs_"), "http://testserver/me"),
    )
    ready = await unreachable.get("/readyz")
    alive = await unreachable.get("/healthz")

    for response in (bearer, signed, ready):
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1
    assert alive.status_code == 200
    assert alive.json() == {"status": "ok"}


async def test_an_unreachable_database_does_not_count_as_failed_authentication(
    unreachable: httpx.AsyncClient,
) -> None:
    headers = bearer_headers(generate_secret("cvsk_"))
    started = time.monotonic()

    statuses = [(await unreachable.get("/me", headers=headers)).status_code for _ in range(5)]

    assert statuses == [503] * 5  # the failure limit is 2: none of these was a 401
    print(f"5 requests against an unreachable database took {time.monotonic() - started:.2f} s")
