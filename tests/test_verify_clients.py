"""Whom `/verify` counts and whom it lets in: the original client behind an allowed proxy, and
only TCP peers in APIKEYS_VERIFY_ALLOW (SPEC §9)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from apikeys.api.app import create_app
from apikeys.config import Settings
from apikeys.domain import KeyType
from apikeys.security import generate_secret
from tests.conftest import World, random_master_key
from tests.signing import bearer_headers, signed_headers

FAILURE_LIMIT = 3
BAD = {"Authorization": "Bearer cvsk_not-a-real-secret"}


@pytest.fixture
async def throttled_app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = Settings(
        database_url=database_url,
        master_key=random_master_key(),
        auth_failure_limit=FAILURE_LIMIT,
        verify_allow="127.0.0.1/32,192.0.2.0/24",
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def client_from(app: FastAPI, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://apikeys.internal")


@pytest.fixture
async def proxy(throttled_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_from(throttled_app, "192.0.2.10") as http:
        yield http


@pytest.fixture
async def owner_secret(throttled_app: FastAPI) -> str:
    async with client_from(throttled_app, "127.0.0.1") as http:
        world = World(throttled_app.state.services, http)
        await world.setup()
        return (await world.mint()).secret


async def test_failures_behind_a_proxy_throttle_the_original_client_not_the_proxy(
    proxy: httpx.AsyncClient, owner_secret: str
) -> None:
    noisy = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    failures = [
        (await proxy.get("/verify", headers=BAD | noisy)).status_code
        for _ in range(FAILURE_LIMIT + 2)
    ]
    # The same failures from a neighbour that only spoofs the first entry count as its own.
    neighbour = await proxy.get(
        "/verify",
        headers=bearer_headers(owner_secret) | {"X-Forwarded-For": "198.51.100.7, 198.51.100.8"},
    )
    proxy_itself = await proxy.get("/verify", headers=bearer_headers(owner_secret))

    assert failures[:FAILURE_LIMIT] == [401] * FAILURE_LIMIT
    assert failures[-1] == 429
    assert neighbour.status_code == 200
    assert proxy_itself.status_code == 200


async def test_a_forwarded_entry_that_is_no_ip_address_counts_the_proxy(
    proxy: httpx.AsyncClient, owner_secret: str
) -> None:
    for _ in range(FAILURE_LIMIT + 1):
        await proxy.get("/verify", headers=BAD | {"X-Forwarded-For": "unknown"})

    throttled = await proxy.get("/verify", headers=BAD)
    elsewhere = await proxy.get("/verify", headers=BAD | {"X-Forwarded-For": "198.51.100.20"})

    assert throttled.status_code == 429
    assert "Retry-After" in throttled.headers
    assert throttled.headers["content-type"] == "application/problem+json"
    assert elsewhere.status_code == 401


@pytest.mark.parametrize("path", ["/verify", "/metrics"])
async def test_a_peer_outside_the_allowed_networks_gets_404_whatever_it_forwards(
    throttled_app: FastAPI, owner_secret: str, path: str
) -> None:
    async with client_from(throttled_app, "203.0.113.50") as outsider:
        answers = [
            await outsider.get(path, headers=bearer_headers(owner_secret) | forwarded)
            for forwarded in ({}, {"X-Forwarded-For": "127.0.0.1"})
        ]

    assert [answer.status_code for answer in answers] == [404, 404]
    assert answers[0].json()["detail"] == f"There is nothing at {path}"
    assert "x-apikeys-key" not in answers[1].headers


async def test_public_url_replaces_the_forwarded_scheme_and_host(database_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        master_key=random_master_key(),
        public_url="https://api.example.com",
    )
    application = create_app(settings)
    async with (
        application.router.lifespan_context(application),
        client_from(application, "127.0.0.1") as http,
    ):
        world = World(application.state.services, http)
        await world.setup()
        signing = await world.mint(type=KeyType.REQUEST_SIGNING)
        uri = "/projects/1/experiences"
        headers = signed_headers(signing.key, signing.secret, "https://api.example.com" + uri)
        forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "internal:9000"}
        public = await http.get("/verify", headers=headers | forwarded | {"X-Forwarded-Uri": uri})

    assert public.status_code == 200, public.text


@pytest.fixture
def silent_database() -> Iterator[str]:
    """A PostgreSQL URL whose server accepts TCP connections and then never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/nothing"


async def test_a_database_that_does_not_answer_is_a_503_with_retry_after(
    silent_database: str,
) -> None:
    settings = Settings(
        database_url=silent_database, master_key=random_master_key(), database_timeout=1
    )
    application = create_app(settings)
    secret = generate_secret(settings.secret_key_prefix)  # well formed: it reaches the lookup
    async with (
        application.router.lifespan_context(application),
        client_from(application, "127.0.0.1") as http,
    ):
        response = await http.get("/verify", headers=bearer_headers(secret))

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "retry-after" in response.headers
