"""Authentication per SPEC §3: both schemes, the Expires window, and every way to get it wrong."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update

from apikeys.config import Settings
from apikeys.domain import KeyType, Role
from apikeys.security import generate_key, generate_secret
from apikeys.services import Services
from apikeys.storage.models import ApiKey
from tests.conftest import ACCOUNT_ID, Credential, World
from tests.signing import bearer_headers, convert_signature, signed_headers

BASE_URL = "http://testserver"
ME_URL = f"{BASE_URL}/me"
KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings a test changes, by parametrising this fixture."""
    return {}


@pytest.fixture
def settings(settings: Settings, overrides: dict[str, Any]) -> Settings:
    return Settings(**{**settings.model_dump(), **overrides})


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    challenge = response.headers["www-authenticate"]
    assert "Bearer" in challenge and "Convert-HMAC-SHA256" in challenge
    body = response.json()
    assert body["status"] == 401 and body["detail"]


async def set_key_columns(services: Services, key: str, **values: Any) -> None:
    """Change a stored key directly, as another replica or an operator would."""
    async with services.database.sessions() as session:
        await session.execute(update(ApiKey).where(ApiKey.key == key).values(**values))
        await session.commit()


# Convert's published sample, step by step.


async def test_a_request_signed_as_convert_sample_code_signs_it_is_accepted(world: World) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING, role=Role.BROWSE)
    expires = int(time.time()) + 60
    signature = convert_signature(signer.key, signer.secret, expires, ME_URL, "")

    response = await world.client.get(
        "/me",
        headers={
            "Convert-Application-ID": signer.key,
            "Expires": str(expires),
            "Authorization": "Convert-HMAC-SHA256 Signature=" + signature,
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["key"] == signer.key
    assert response.json()["type"] == "requestSigning"


async def test_a_signed_post_with_a_body_is_accepted(world: World) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING, role=Role.ADMIN)
    body = json.dumps({"name": "Nightly Data Sync Script", "type": "secretKey"})
    expires = int(time.time()) + 60
    signature = convert_signature(signer.key, signer.secret, expires, BASE_URL + KEY_PATH, body)

    response = await world.client.post(
        KEY_PATH,
        content=body.encode(),
        headers={
            "Content-Type": "application/json",
            "Convert-Application-ID": signer.key,
            "Expires": str(expires),
            "Authorization": "Convert-HMAC-SHA256 Signature=" + signature,
        },
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Nightly Data Sync Script"


async def test_the_sample_convert_authorization_header_is_accepted(world: World) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)
    headers = signed_headers(signer.key, signer.secret, ME_URL)
    headers["Convert-Authorization"] = headers.pop("Authorization")

    response = await world.client.get("/me", headers=headers)

    assert response.status_code == 200, response.text


async def test_upper_case_hex_signature_is_accepted(world: World) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)
    headers = signed_headers(signer.key, signer.secret, ME_URL)
    headers["Authorization"] = headers["Authorization"].replace(
        headers["Authorization"].split("=", 1)[1], headers["Authorization"].split("=", 1)[1].upper()
    )

    response = await world.client.get("/me", headers=headers)

    assert response.status_code == 200, response.text


async def test_bearer_secret_of_a_secret_key_is_accepted(world: World) -> None:
    bearer = await world.mint(type=KeyType.SECRET_KEY, role=Role.EDIT)

    response = await world.client.get("/me", headers=bearer_headers(bearer.secret))

    assert response.status_code == 200
    assert response.json()["role"] == "edit"


# Every mangled credential gets 401.


@dataclass
class Keys:
    world: World
    signer: Credential
    bearer: Credential


@dataclass
class Attempt:
    headers: dict[str, str | bytes]
    path: str = "/me"
    body: bytes = b""


def signed(keys: Keys, url: str = ME_URL, body: bytes = b"", **changes: str) -> dict[str, str]:
    headers = signed_headers(keys.signer.key, keys.signer.secret, url, body)
    headers.update(changes)
    return headers


def with_signature(headers: dict[str, str], transform: Callable[[str], str]) -> dict[str, str]:
    scheme, signature = headers["Authorization"].split("=", 1)
    return {**headers, "Authorization": f"{scheme}={transform(signature)}"}


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


def one_character_changed(secret: str, position: int) -> str:
    replacement = "b" if secret[position] == "a" else "a"
    return secret[:position] + replacement + secret[position + 1 :]


async def fresh_key_with(keys: Keys, key_type: KeyType, **columns: Any) -> Credential:
    credential = await keys.world.mint(type=key_type)
    await set_key_columns(keys.world.services, credential.key, **columns)
    return credential


def expires_at(keys: Keys, offset: int) -> dict[str, str]:
    expires = int(time.time()) + offset
    return signed_headers(keys.signer.key, keys.signer.secret, ME_URL, expires=expires)


async def revoked(keys: Keys, key_type: KeyType) -> Attempt:
    credential = await fresh_key_with(keys, key_type, revoked_at=datetime.now(UTC))
    return Attempt(credential.headers("GET", ME_URL))


async def expired(keys: Keys, key_type: KeyType) -> Attempt:
    past = datetime.now(UTC) - timedelta(seconds=1)
    credential = await fresh_key_with(keys, key_type, expires_at=past)
    return Attempt(credential.headers("GET", ME_URL))


def fixed(make: Callable[[Keys], Attempt]) -> Callable[[Keys], Awaitable[Attempt]]:
    async def build(keys: Keys) -> Attempt:
        return make(keys)

    return build


WRONG_BODY = b'{"name": "signed"}'
MANGLED: dict[str, Callable[[Keys], Awaitable[Attempt]]] = {
    "no headers": fixed(lambda k: Attempt({})),
    "empty Authorization": fixed(lambda k: Attempt({"Authorization": ""})),
    "unknown scheme": fixed(lambda k: Attempt({"Authorization": "Basic dXNlcjpwYXNz"})),
    "Bearer with nothing": fixed(lambda k: Attempt({"Authorization": "Bearer"})),
    "Bearer with only spaces": fixed(lambda k: Attempt({"Authorization": "Bearer    "})),
    "Bearer with two words": fixed(
        lambda k: Attempt({"Authorization": f"Bearer {k.bearer.secret} extra"})
    ),
    "bearer secret with one character changed": fixed(
        lambda k: Attempt(bearer_headers(one_character_changed(k.bearer.secret, 10)))
    ),
    "bearer secret with its checksum changed": fixed(
        lambda k: Attempt(bearer_headers(one_character_changed(k.bearer.secret, -1)))
    ),
    "bearer secret with a non-ASCII character": fixed(
        lambda k: Attempt({"Authorization": f"Bearer {k.bearer.secret[:-1]}é".encode("latin-1")})
    ),
    "checksum-valid unknown secret": fixed(
        lambda k: Attempt(bearer_headers(generate_secret("cvsk_")))
    ),
    "requestSigning secret sent as Bearer": fixed(
        lambda k: Attempt(bearer_headers(k.signer.secret))
    ),
    "secretKey key used with signing": fixed(
        lambda k: Attempt(signed_headers(k.bearer.key, k.bearer.secret, ME_URL))
    ),
    "signature over the wrong URL": fixed(lambda k: Attempt(signed(k, f"{BASE_URL}/other"))),
    "signature over the wrong host": fixed(lambda k: Attempt(signed(k, "http://example.com/me"))),
    "signature over the wrong body": fixed(
        lambda k: Attempt(signed(k, BASE_URL + KEY_PATH, WRONG_BODY), KEY_PATH, b'{"name": "x"}')
    ),
    "signature over no body, body sent": fixed(
        lambda k: Attempt(signed(k, BASE_URL + KEY_PATH), KEY_PATH, WRONG_BODY)
    ),
    "signature over the wrong Expires": fixed(
        lambda k: Attempt(signed(k, Expires=str(int(signed(k)["Expires"]) + 1)))
    ),
    "truncated signature": fixed(lambda k: Attempt(with_signature(signed(k), lambda s: s[:-1]))),
    "non-hex signature": fixed(
        lambda k: Attempt(with_signature(signed(k), lambda s: s[:-1] + "g"))
    ),
    "empty signature": fixed(lambda k: Attempt(with_signature(signed(k), lambda s: ""))),
    "signature of another key": fixed(
        lambda k: Attempt(signed(k, **{"Convert-Application-ID": generate_key()}))
    ),
    "signing scheme without Signature=": fixed(
        lambda k: Attempt(signed(k, Authorization="Convert-HMAC-SHA256"))
    ),
    "missing Convert-Application-ID": fixed(
        lambda k: Attempt(without(signed(k), "Convert-Application-ID"))
    ),
    "missing Expires": fixed(lambda k: Attempt(without(signed(k), "Expires"))),
    "non-numeric Expires": fixed(lambda k: Attempt(signed(k, Expires="soon"))),
    "negative Expires": fixed(lambda k: Attempt(signed(k, Expires="-1"))),
    "Expires too old": fixed(lambda k: Attempt(expires_at(k, -(60 + 30)))),
    "Expires too far ahead": fixed(lambda k: Attempt(expires_at(k, 900 + 60 + 30))),
    "unknown key id": fixed(
        lambda k: Attempt(signed_headers(generate_key(), k.signer.secret, ME_URL))
    ),
    "revoked requestSigning key": lambda k: revoked(k, KeyType.REQUEST_SIGNING),
    "revoked secretKey key": lambda k: revoked(k, KeyType.SECRET_KEY),
    "expired requestSigning key": lambda k: expired(k, KeyType.REQUEST_SIGNING),
    "expired secretKey key": lambda k: expired(k, KeyType.SECRET_KEY),
}


@pytest.mark.parametrize("case", list(MANGLED), ids=list(MANGLED))
async def test_mangled_credentials_are_all_401(world: World, case: str) -> None:
    keys = Keys(
        world,
        signer=await world.mint(type=KeyType.REQUEST_SIGNING),
        bearer=await world.mint(type=KeyType.SECRET_KEY),
    )
    attempt = await MANGLED[case](keys)
    method = "POST" if attempt.body else "GET"
    headers = {**attempt.headers}
    if attempt.body:
        headers["Content-Type"] = "application/json"

    response = await world.client.request(
        method, attempt.path, content=attempt.body or None, headers=headers
    )

    assert_refused(response)
    for secret in (keys.signer.secret, keys.bearer.secret):
        assert secret not in response.text


async def test_a_wrong_secret_gets_the_same_answer_for_a_revoked_and_a_live_key(
    world: World,
) -> None:
    live = await world.mint(type=KeyType.REQUEST_SIGNING)
    dead = await world.mint(type=KeyType.REQUEST_SIGNING)
    await set_key_columns(world.services, dead.key, revoked_at=datetime.now(UTC))
    wrong = generate_secret("cvrs_")

    answers = [
        await world.client.get("/me", headers=signed_headers(key, wrong, ME_URL))
        for key in (live.key, dead.key)
    ]

    for answer in answers:
        assert_refused(answer)
    assert answers[0].json()["detail"] == answers[1].json()["detail"]


# The Expires window.

WINDOW = {"signature_max_age": 100, "clock_skew": 10}


@pytest.mark.parametrize("overrides", [WINDOW])
@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-10 + 2, True), (100 + 10 - 2, True), (-10 - 2, False), (100 + 10 + 2, False)],
    ids=["just-inside-past", "just-inside-future", "just-outside-past", "just-outside-future"],
)
async def test_expires_window_is_now_minus_skew_to_now_plus_max_age_plus_skew(
    world: World, offset: int, accepted: bool
) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)
    headers = signed_headers(signer.key, signer.secret, ME_URL, expires=int(time.time()) + offset)

    response = await world.client.get("/me", headers=headers)

    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert_refused(response)
        assert "Expires" in response.json()["detail"]


# What a mismatch tells the client, and what it must not.


async def test_signature_mismatch_names_the_url_and_body_length_signed_but_no_secret(
    world: World,
) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING, role=Role.ADMIN)
    sent = b'{"name": "what was sent"}'
    headers = signed_headers(signer.key, signer.secret, BASE_URL + KEY_PATH, b'{"name": "other"}')
    expected = convert_signature(
        signer.key, signer.secret, headers["Expires"], BASE_URL + KEY_PATH, sent.decode()
    )

    response = await world.client.post(
        KEY_PATH, content=sent, headers={**headers, "Content-Type": "application/json"}
    )

    assert_refused(response)
    detail = response.json()["detail"]
    assert f"{BASE_URL}{KEY_PATH}" in detail
    assert f"{len(sent)} bytes" in detail
    for hidden in (signer.secret, expected, expected.upper(), signer.secret[5:-6]):
        assert hidden not in response.text


@pytest.mark.parametrize("overrides", [{"public_url": "https://api.example.test"}])
async def test_public_url_is_what_clients_sign_against(world: World) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)

    public = await world.client.get(
        "/me", headers=signed_headers(signer.key, signer.secret, "https://api.example.test/me")
    )
    internal = await world.client.get(
        "/me", headers=signed_headers(signer.key, signer.secret, ME_URL)
    )

    assert public.status_code == 200, public.text
    assert_refused(internal)
    assert "https://api.example.test/me" in internal.json()["detail"]


async def test_query_string_is_part_of_the_signed_url(world: World) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)
    url = f"{ME_URL}?verbose=1&page=2"

    with_query = await world.client.get(
        "/me?verbose=1&page=2", headers=signed_headers(signer.key, signer.secret, url)
    )
    query_not_signed = await world.client.get(
        "/me?verbose=1&page=2", headers=signed_headers(signer.key, signer.secret, ME_URL)
    )
    query_not_sent = await world.client.get(
        "/me", headers=signed_headers(signer.key, signer.secret, url)
    )

    assert with_query.status_code == 200, with_query.text
    assert_refused(query_not_signed)
    assert_refused(query_not_sent)
    assert f"{ME_URL}?verbose=1&page=2" in query_not_signed.json()["detail"]


async def test_a_mistyped_bearer_secret_and_a_cached_one_cost_no_key_lookup(world: World) -> None:
    bearer = await world.mint(type=KeyType.SECRET_KEY, role=Role.BROWSE)
    position = len("cvsk_") + 10
    mistyped = (
        bearer.secret[:position]
        + ("a" if bearer.secret[position] != "a" else "b")
        + bearer.secret[position + 1 :]
    )
    assert (await world.request(bearer, "GET", "/me")).status_code == 200  # now cached
    lookups: list[str] = []

    def count(*args: Any) -> None:
        # Only reads of keys: the first request's last_used_at write may land meanwhile, and
        # the refusal is counted in the shared failure counts.
        statement = args[2].lstrip().upper()
        if statement.startswith("SELECT") and "API_KEYS" in statement:
            lookups.append(args[2])

    engine = world.services.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        refused = await world.client.get("/me", headers=bearer_headers(mistyped))
        accepted = await world.request(bearer, "GET", "/me")
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert_refused(refused)
    assert accepted.status_code == 200
    assert lookups == []
