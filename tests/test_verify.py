"""`/verify` over real HTTP, on SQLite and PostgreSQL: forward authentication for proxies and
other services (SPEC §9), and `/metrics` beside it."""

from __future__ import annotations

import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import servers
from tests.conftest import new_postgres_database
from tests.live import LiveService, live_fixture, live_service  # noqa: F401
from tests.signing import bearer_headers, signed_headers

pytestmark = pytest.mark.full

UPSTREAM = "https://api.example.com"
OTHER_ACCOUNT_ID = 20
OTHER_PROJECT_ID = 4
SECOND_PROJECT_ID = 2


@dataclass(frozen=True)
class Made:
    key: str
    secret: str = field(repr=False)
    body: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Keys:
    browse_bearer: Made
    edit_bearer_project_one: Made
    edit_signing: Made


def _create(live: LiveService, **body: Any) -> Made:
    response = httpx.post(
        live.keys_url, json=body, headers=bearer_headers(live.bearer_owner.secret), timeout=10
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return Made(created["key"], created["secret"], created)


@pytest.fixture(scope="module")
def keys(live: LiveService) -> Keys:
    servers.cli(
        [
            *("projects", "create", "--account", str(live.account_id), "--name", "Shop"),
            *("--id", str(SECOND_PROJECT_ID), "--json"),
        ],
        live.env,
    )
    servers.cli(
        ["accounts", "create", "--name", "Other", "--id", str(OTHER_ACCOUNT_ID), "--json"], live.env
    )
    servers.cli(
        [
            *("projects", "create", "--account", str(OTHER_ACCOUNT_ID), "--name", "Theirs"),
            *("--id", str(OTHER_PROJECT_ID), "--json"),
        ],
        live.env,
    )
    return Keys(
        browse_bearer=_create(live, name="browse", type="secretKey", role="browse"),
        edit_bearer_project_one=_create(
            live, name="project one", type="secretKey", role="edit", projects=[1]
        ),
        edit_signing=_create(live, name="signing", type="requestSigning", role="edit"),
    )


def verify(
    live: LiveService,
    headers: dict[str, str],
    method: str = "GET",
    content: bytes = b"",
) -> httpx.Response:
    return httpx.request(
        method, f"{live.base_url}/verify", headers=headers, content=content, timeout=10
    )


def forwarded(method: str, uri: str, upstream: str = UPSTREAM) -> dict[str, str]:
    proto, _, host = upstream.partition("://")
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": proto,
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": uri,
    }


def test_a_bearer_key_is_200_with_its_identity_in_headers_and_its_metadata(
    live: LiveService, keys: Keys
) -> None:
    response = verify(live, bearer_headers(keys.edit_bearer_project_one.secret))

    assert response.status_code == 200, response.text
    assert response.headers["x-apikeys-key"] == keys.edit_bearer_project_one.key
    assert response.headers["x-apikeys-account"] == str(live.account_id)
    assert response.headers["x-apikeys-role"] == "edit"
    assert response.headers["x-apikeys-type"] == "secretKey"
    assert response.headers["x-apikeys-projects"] == "1"
    me = httpx.get(
        f"{live.base_url}/me", headers=bearer_headers(keys.edit_bearer_project_one.secret)
    )
    assert response.json() == me.json()
    assert "secret" not in response.json()


def test_an_every_project_key_is_named_by_a_star(live: LiveService, keys: Keys) -> None:
    response = verify(live, bearer_headers(keys.browse_bearer.secret))

    assert response.status_code == 200
    assert response.headers["x-apikeys-projects"] == "*"


def test_a_signed_get_verifies_against_the_forwarded_url(live: LiveService, keys: Keys) -> None:
    uri = "/projects/1/experiences?status=active"
    signature = signed_headers(keys.edit_signing.key, keys.edit_signing.secret, UPSTREAM + uri)

    response = verify(live, signature | forwarded("GET", uri))

    assert response.status_code == 200, response.text
    assert response.headers["x-apikeys-key"] == keys.edit_signing.key
    assert response.headers["x-apikeys-type"] == "requestSigning"


def test_a_signature_over_another_url_is_401_naming_the_url_the_service_signed(
    live: LiveService, keys: Keys
) -> None:
    signature = signed_headers(
        keys.edit_signing.key, keys.edit_signing.secret, UPSTREAM + "/projects/1/experiences"
    )

    response = verify(live, signature | forwarded("GET", "/projects/2/experiences"))

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "WWW-Authenticate" in response.headers
    assert f"{UPSTREAM}/projects/2/experiences" in response.json()["detail"]


def test_nginx_original_method_and_uri_headers_are_read_too(live: LiveService, keys: Keys) -> None:
    uri = "/projects/1/experiences"
    upstream = "http://shop.example.com:8080"
    signature = signed_headers(keys.edit_signing.key, keys.edit_signing.secret, upstream + uri)
    headers = {
        **signature,
        "X-Original-Method": "GET",
        "X-Original-URI": uri,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "shop.example.com:8080",
    }

    assert verify(live, headers).status_code == 200


def test_a_signed_post_verifies_when_its_body_is_forwarded_as_the_body(
    live: LiveService, keys: Keys
) -> None:
    uri, body = "/projects/1/experiences", b'{"name": "Spring sale"}'
    signature = signed_headers(
        keys.edit_signing.key, keys.edit_signing.secret, UPSTREAM + uri, body
    )
    headers = signature | forwarded("POST", uri) | {"Content-Type": "application/json"}

    with_body = verify(live, headers, "POST", body)
    fresh = signed_headers(keys.edit_signing.key, keys.edit_signing.secret, UPSTREAM + uri, body)
    without_body = verify(live, fresh | forwarded("POST", uri), "POST")

    assert with_body.status_code == 200, with_body.text
    assert without_body.status_code == 401
    assert "a body of 0 bytes" in without_body.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer cvsk_notarealsecretatall"},
        {"Authorization": "Convert-HMAC-SHA256 Signature=abc"},
    ],
    ids=["none", "empty-bearer", "basic", "unknown-secret", "malformed-signature"],
)
def test_bad_credentials_are_401_problems_with_the_challenge(
    live: LiveService, headers: dict[str, str]
) -> None:
    response = verify(live, headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "Bearer" in response.headers["www-authenticate"]
    assert response.json()["status"] == 401
    assert "x-apikeys-key" not in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_any_method_is_accepted(live: LiveService, keys: Keys, method: str) -> None:
    response = verify(live, bearer_headers(keys.browse_bearer.secret), method)

    assert response.status_code == 200
    assert response.headers["x-apikeys-key"] == keys.browse_bearer.key


@pytest.mark.parametrize(
    ("required", "status"),
    [("browse", 200), ("edit", 403), ("admin", 403), ("owner", 403)],
)
def test_a_required_role_must_be_held(
    live: LiveService, keys: Keys, required: str, status: int
) -> None:
    response = verify(
        live,
        bearer_headers(keys.browse_bearer.secret) | {"X-Apikeys-Require-Role": required},
    )

    assert response.status_code == status, response.text
    if status == 403:
        assert response.headers["content-type"] == "application/problem+json"
        assert required in response.json()["detail"]


def test_a_higher_role_meets_a_lower_requirement(live: LiveService, keys: Keys) -> None:
    headers = bearer_headers(keys.edit_bearer_project_one.secret)

    for required in ("browse", "edit"):
        assert verify(live, headers | {"X-Apikeys-Require-Role": required}).status_code == 200
    assert verify(live, headers | {"X-Apikeys-Require-Role": "publish"}).status_code == 403


@pytest.mark.parametrize(
    ("key_name", "project", "status"),
    [
        ("edit_bearer_project_one", 1, 200),
        ("edit_bearer_project_one", SECOND_PROJECT_ID, 403),
        ("browse_bearer", 1, 200),
        ("browse_bearer", SECOND_PROJECT_ID, 200),
        ("browse_bearer", OTHER_PROJECT_ID, 403),  # a project of another account
        ("browse_bearer", 999, 403),  # no such project
    ],
)
def test_a_required_project_must_be_the_keys_accounts_and_in_its_scope(
    live: LiveService, keys: Keys, key_name: str, project: int, status: int
) -> None:
    made: Made = getattr(keys, key_name)

    response = verify(
        live, bearer_headers(made.secret) | {"X-Apikeys-Require-Project": str(project)}
    )

    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "requirement",
    [
        {"X-Apikeys-Require-Role": "superuser"},
        {"X-Apikeys-Require-Role": "Edit"},
        {"X-Apikeys-Require-Project": "one"},
        {"X-Apikeys-Require-Project": "0"},
        {"X-Apikeys-Require-Project": "99999999999"},
    ],
)
def test_a_malformed_requirement_is_422_before_any_credential_is_used(
    live: LiveService, keys: Keys, requirement: dict[str, str]
) -> None:
    response = verify(live, bearer_headers(keys.browse_bearer.secret) | requirement)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_a_revoked_key_is_401_at_once(live: LiveService) -> None:
    made = _create(live, name="to revoke", type="secretKey", role="browse")
    assert verify(live, bearer_headers(made.secret)).status_code == 200

    revoked = httpx.delete(
        f"{live.keys_url}/{made.key}", headers=bearer_headers(live.bearer_owner.secret)
    )

    assert revoked.status_code == 204
    assert verify(live, bearer_headers(made.secret)).status_code == 401


def test_metrics_count_verifications_without_naming_keys_or_clients(
    live: LiveService, keys: Keys
) -> None:
    verify(live, bearer_headers(keys.browse_bearer.secret))
    verify(live, {"Authorization": "Bearer nothing-like-a-secret"})

    response = httpx.get(f"{live.base_url}/metrics", timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(
        r'^apikeys_http_requests_total\{method="GET",route="/verify",status="200"\} [1-9]',
        text,
        re.MULTILINE,
    )
    assert re.search(
        r'^apikeys_verifications_total\{outcome="unauthenticated",reason="[a-z_]+"\} [1-9]',
        text,
        re.MULTILINE,
    )
    assert 'apikeys_authentications_total{outcome="accepted",reason="valid"}' in text
    assert "apikeys_http_request_duration_seconds_bucket" in text
    assert 'apikeys_credential_cache_lookups_total{result="hit"}' in text
    assert "apikeys_key_writer_batch_size_count" in text
    assert 'apikeys_database_pool_connections{state="checked_out"}' in text
    assert "apikeys_replay_refusals_total" in text
    assert "apikeys_throttle_refusals_total" in text
    for made in (keys.browse_bearer, keys.edit_signing, keys.edit_bearer_project_one):
        assert made.key not in text
        assert made.secret not in text
    assert "127.0.0.1" not in text


def test_the_openapi_document_describes_verify_and_metrics(live: LiveService) -> None:
    document = httpx.get(f"{live.base_url}/openapi.json").json()

    verify_path = document["paths"]["/verify"]
    assert {"get", "post", "put", "patch", "delete", "head", "options"} <= set(verify_path)
    responses = verify_path["get"]["responses"]
    assert {"200", "401", "403", "404", "429"} <= {str(status) for status in responses}
    assert "X-Apikeys-Account" in responses["200"]["headers"]
    assert "get" in document["paths"]["/metrics"]


def test_only_allowed_peers_reach_verify_and_metrics_whatever_they_forward(
    backend: str, tmp_path: Path
) -> None:
    """The peer here is 127.0.0.1, a trusted proxy for X-Forwarded-For, but not in
    APIKEYS_VERIFY_ALLOW: a forwarded address inside it must not open the gate."""
    with ExitStack() as stack:
        if backend == "sqlite":
            database_url = f"sqlite:///{tmp_path / 'gate.db'}"
        else:
            database_url = stack.enter_context(new_postgres_database())
        service = stack.enter_context(
            live_service(database_url, tmp_path, APIKEYS_VERIFY_ALLOW="10.0.0.0/8")
        )
        owner = bearer_headers(service.bearer_owner.secret)
        answers = [
            httpx.get(f"{service.base_url}{path}", headers=owner | spoof)
            for path in ("/verify", "/metrics")
            for spoof in ({}, {"X-Forwarded-For": "10.1.2.3"})
        ]
        me = httpx.get(f"{service.base_url}/me", headers=owner | {"X-Forwarded-For": "10.1.2.3"})

    assert [answer.status_code for answer in answers] == [404] * 4
    assert all(answer.headers["content-type"] == "application/problem+json" for answer in answers)
    assert "x-apikeys-key" not in answers[0].headers
    assert me.status_code == 200
