"""Someone else's API protected by these keys: real nginx (deploy/nginx-forward-auth.conf) and
real Traefik in front of the sample API of examples/, asking a real `apikeys serve` on
SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests import proxies
from tests.live import LiveService, live_fixture  # noqa: F401
from tests.proxies import REVOCATION_BOUND_SECONDS, Keys, create_key, keys, revoke, signed
from tests.signing import bearer_headers

__all__ = ["keys"]

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[proxies.Running]:
    with proxies.sample_api("experiences", tmp_path_factory.mktemp("api")) as running:
        yield running


@pytest.fixture(scope="module")
def front(
    live: LiveService, api: proxies.Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """nginx's public URL."""
    service_port = int(live.base_url.rpartition(":")[2])
    api_port = int(api.base_url.rpartition(":")[2])
    with proxies.nginx(tmp_path_factory.mktemp("front"), service_port, api_port) as running:
        yield running.base_url


def test_a_bearer_key_gets_through_and_the_api_sees_its_account(
    front: str, keys: Keys, live: LiveService
) -> None:
    spoofed = {"X-Apikeys-Account": "999", "X-Apikeys-Key": "someone-else"}

    response = httpx.get(
        f"{front}/projects/1/experiences", headers=bearer_headers(keys.browse.secret) | spoofed
    )

    assert response.status_code == 200, response.text
    assert response.json()["account"] == str(live.account_id)
    assert response.json()["key"] == keys.browse.key


def test_a_signed_get_gets_through(front: str, keys: Keys, live: LiveService) -> None:
    url = f"{front}/projects/1/experiences?status=active"

    response = httpx.get(url, headers=signed(keys.signing, url))

    assert response.status_code == 200, response.text
    assert response.json()["key"] == keys.signing.key
    assert response.json()["account"] == str(live.account_id)


def test_a_browse_key_on_a_location_that_requires_edit_is_403(front: str, keys: Keys) -> None:
    response = httpx.post(
        f"{front}/projects/1/experiences",
        json={"name": "Spring sale"},
        headers=bearer_headers(keys.browse.secret),
    )

    assert response.status_code == 403


def test_an_edit_key_creates_through_the_proxy_with_a_body(front: str, keys: Keys) -> None:
    response = httpx.post(
        f"{front}/projects/1/experiences",
        json={"name": "Spring sale"},
        headers=bearer_headers(keys.edit_project_one.secret),
    )

    assert response.status_code == 201, response.text
    assert response.json() == {
        "project_id": 1,
        "name": "Spring sale",
        "created_by": keys.edit_project_one.key,
    }


def test_a_key_limited_to_project_one_is_403_on_project_two(front: str, keys: Keys) -> None:
    headers = bearer_headers(keys.edit_project_one.secret)

    own = httpx.get(f"{front}/projects/1/experiences", headers=headers)
    other = httpx.get(f"{front}/projects/2/experiences", headers=headers)

    assert own.status_code == 200
    assert other.status_code == 403


def test_no_credentials_is_401_with_the_challenge(front: str) -> None:
    response = httpx.get(f"{front}/projects/1/experiences")

    assert response.status_code == 401
    assert "Convert-HMAC-SHA256" in response.headers["www-authenticate"]


def test_a_revoked_key_is_401_within_the_bound(front: str, live: LiveService) -> None:
    made = create_key(live, name="short-lived", type="secretKey", role="browse")
    url = f"{front}/projects/1/experiences"
    assert httpx.get(url, headers=bearer_headers(made.secret)).status_code == 200

    revoke(live, made)
    revoked_at = time.monotonic()
    statuses = []
    while time.monotonic() - revoked_at < REVOCATION_BOUND_SECONDS:
        statuses.append(httpx.get(url, headers=bearer_headers(made.secret)).status_code)
        if statuses[-1] == 401:
            break

    assert statuses[-1] == 401, statuses


def test_a_replayed_signed_post_is_refused(front: str, keys: Keys) -> None:
    url = f"{front}/projects/1/experiences"
    headers = signed(keys.signing, url)

    first = httpx.post(url, headers=headers)
    replayed = httpx.post(url, headers=headers)

    assert first.status_code == 201, first.text
    assert replayed.status_code == 401


def test_a_signed_post_with_a_body_cannot_verify_through_auth_request(
    front: str, keys: Keys
) -> None:
    url, body = f"{front}/projects/1/experiences", b'{"name": "Spring sale"}'
    headers = signed(keys.signing, url, body) | {"Content-Type": "application/json"}

    response = httpx.post(url, content=body, headers=headers)

    assert response.status_code == 401


def test_a_forwarded_uri_sent_by_the_client_does_not_change_the_url_verified(
    front: str, keys: Keys
) -> None:
    signed_for = f"{front}/projects/1/experiences"
    headers = signed(keys.signing, signed_for) | {
        "X-Forwarded-Uri": "/projects/1/experiences",
        "X-Original-URI": "/projects/1/experiences",
    }

    response = httpx.get(f"{front}/projects/1/experiences?other=1", headers=headers)

    assert response.status_code == 401


def test_paths_outside_the_protected_api_are_404(front: str, keys: Keys) -> None:
    response = httpx.get(f"{front}/verify", headers=bearer_headers(keys.browse.secret))

    assert response.status_code == 404


@pytest.fixture(scope="module")
def traefik_front(
    live: LiveService, api: proxies.Running, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Traefik's public URL, with the README's configuration."""
    directory = tmp_path_factory.mktemp("traefik")
    with proxies.traefik(directory, live.base_url, api.base_url) as running:
        yield running.base_url


def test_through_traefik_a_bearer_key_gets_through_and_the_api_sees_its_account(
    traefik_front: str, keys: Keys, live: LiveService
) -> None:
    response = httpx.get(
        f"{traefik_front}/projects/1/experiences",
        headers=bearer_headers(keys.browse.secret) | {"X-Apikeys-Account": "999"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["account"] == str(live.account_id)


def test_through_traefik_a_signed_post_with_a_body_verifies(traefik_front: str, keys: Keys) -> None:
    url, body = f"{traefik_front}/projects/1/experiences", b'{"name": "Summer sale"}'
    headers = signed(keys.signing, url, body) | {"Content-Type": "application/json"}

    response = httpx.post(url, content=body, headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Summer sale"
    assert response.json()["created_by"] == keys.signing.key


def test_through_traefik_a_browse_key_on_a_write_is_the_services_403_problem(
    traefik_front: str, keys: Keys
) -> None:
    response = httpx.post(
        f"{traefik_front}/projects/1/experiences", headers=bearer_headers(keys.browse.secret)
    )

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "edit" in response.json()["detail"]


def test_through_traefik_a_bad_signature_is_the_services_401_problem(
    traefik_front: str, keys: Keys
) -> None:
    url = f"{traefik_front}/projects/1/experiences"

    response = httpx.get(url, headers=signed(keys.signing, url + "?changed=1"))

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert url in response.json()["detail"]
