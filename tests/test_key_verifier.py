"""apikeys.client.KeyVerifier and require_key: the sample API of examples/ verifying its own
callers against a real `apikeys serve`, on SQLite and PostgreSQL, with no proxy."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from apikeys.client import MAX_CACHE_TTL_SECONDS, KeyRefused, KeyVerifier, require_key
from tests import proxies, servers
from tests.live import LiveService, live_fixture  # noqa: F401
from tests.proxies import REVOCATION_BOUND_SECONDS, Keys, create_key, keys, revoke, signed
from tests.signing import bearer_headers

__all__ = ["keys"]

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def api(live: LiveService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("verified-api")
    with proxies.sample_api(
        "experiences_verified", directory, KEY_SERVICE_URL=live.base_url
    ) as running:
        yield running.base_url


def test_a_bearer_key_is_verified_and_the_route_sees_its_account(
    api: str, keys: Keys, live: LiveService
) -> None:
    response = httpx.get(
        f"{api}/projects/1/experiences", headers=bearer_headers(keys.browse.secret)
    )

    assert response.status_code == 200, response.text
    assert response.json()["account"] == str(live.account_id)
    assert response.json()["key"] == keys.browse.key


def test_a_signed_get_and_a_signed_post_with_a_body_are_verified(api: str, keys: Keys) -> None:
    url, body = f"{api}/projects/2/experiences", b'{"name": "Autumn sale"}'

    read = httpx.get(url, headers=signed(keys.signing, url))
    created = httpx.post(
        url,
        content=body,
        headers=signed(keys.signing, url, body) | {"Content-Type": "application/json"},
    )

    assert read.status_code == 200, read.text
    assert created.status_code == 201, created.text
    assert created.json() == {
        "project_id": 2,
        "name": "Autumn sale",
        "created_by": keys.signing.key,
    }


def test_refusals_are_the_services_own_problems(api: str, keys: Keys) -> None:
    url = f"{api}/projects/1/experiences"

    anonymous = httpx.get(url)
    browse_writing = httpx.post(url, headers=bearer_headers(keys.browse.secret))
    outside_scope = httpx.get(
        f"{api}/projects/2/experiences", headers=bearer_headers(keys.edit_project_one.secret)
    )

    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.headers["www-authenticate"]
    assert browse_writing.status_code == 403
    assert outside_scope.status_code == 403
    for response in (anonymous, browse_writing, outside_scope):
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].startswith("/problems/")
        assert response.json()["instance"] == "/verify"


def test_a_revoked_key_is_refused_within_the_bound_despite_the_cache(
    api: str, live: LiveService
) -> None:
    made = create_key(live, name="cached", type="secretKey", role="browse")
    url = f"{api}/projects/1/experiences"
    for _ in range(3):  # now in both caches, the service's and the verifier's
        assert httpx.get(url, headers=bearer_headers(made.secret)).status_code == 200

    revoke(live, made)
    revoked_at = time.monotonic()
    statuses = []
    while time.monotonic() - revoked_at < REVOCATION_BOUND_SECONDS:
        statuses.append(httpx.get(url, headers=bearer_headers(made.secret)).status_code)
        if statuses[-1] == 401:
            break

    assert statuses[-1] == 401, statuses


def test_a_replayed_signed_post_is_refused(api: str, keys: Keys) -> None:
    url = f"{api}/projects/1/experiences"
    headers = signed(keys.signing, url)

    first = httpx.post(url, headers=headers)
    replayed = httpx.post(url, headers=headers)

    assert first.status_code == 201, first.text
    assert replayed.status_code == 401


async def test_a_key_service_that_does_not_answer_is_a_503_problem() -> None:
    async with KeyVerifier(f"http://127.0.0.1:{servers.free_port()}") as verifier:
        with pytest.raises(KeyRefused) as refused:
            await verifier.verify(
                {"authorization": "Bearer x"}, method="GET", url="http://api.example.com/"
            )

    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "5"}


def test_a_cache_longer_than_the_revocation_bound_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_ttl"):
        KeyVerifier("http://127.0.0.1:8000", cache_ttl=MAX_CACHE_TTL_SECONDS + 0.1)


def test_an_unknown_role_is_refused_when_the_route_is_declared() -> None:
    with pytest.raises(ValueError):
        require_key(role="superuser")
