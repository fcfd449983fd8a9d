"""Input crafted to hurt: whatever a client sends gets its own clear 4xx, sized to what the
database can hold, and nothing it sends is parsed at more than a normal request's cost."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from apikeys.domain import KeyType
from tests.conftest import ACCOUNT_ID, World
from tests.signing import signed_headers

KEY_PATH = f"/accounts/{ACCOUNT_ID}/api-keys"
AUDIT_PATH = f"/accounts/{ACCOUNT_ID}/audit-events"


def assert_invalid(response: httpx.Response, loc: list[Any]) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert loc in [error["loc"] for error in problem["errors"]]
    return problem


async def post_raw(world: World, raw: bytes) -> httpx.Response:
    owner = await world.mint()
    return await world.request(
        owner, "POST", KEY_PATH, raw=raw, headers={"Content-Type": "application/json"}
    )


# Names (SPEC §2: no Unicode category Cc, Cf or Cs).


@pytest.mark.parametrize(
    "escaped",
    [r"evil\u202eexe.txt", r"\u200b", r"zero\u200bwidth", r"bom\ufeff", r"\ud800", r"x\udfffy"],
    ids=["bidi-override", "only-zero-width-space", "zero-width-space", "bom", "lone-high", "low"],
)
async def test_a_name_with_format_characters_or_lone_surrogates_is_422(
    world: World, escaped: str
) -> None:
    response = await post_raw(world, b'{"name": "' + escaped.encode() + b'"}')

    problem = assert_invalid(response, ["body", "name"])
    assert "format characters" in problem["errors"][0]["msg"]


async def test_a_name_of_letters_from_any_script_is_accepted(world: World) -> None:
    owner = await world.mint()

    response = await world.request(owner, "POST", KEY_PATH, {"name": "Clé 鍵 مفتاح ключ 🔑"})

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Clé 鍵 مفتاح ключ 🔑"


# Project ids (SPEC §2: 1 ... 2,147,483,647).


@pytest.mark.parametrize("project", [2**31, 2**63, 2**64, 10**100, 0, -(2**31)])
async def test_a_project_id_outside_1_to_2147483647_is_422(world: World, project: int) -> None:
    owner = await world.mint()

    response = await world.request(owner, "POST", KEY_PATH, {"name": "k", "projects": [project]})

    assert_invalid(response, ["body", "projects", 0])


async def test_the_largest_project_id_is_a_valid_id_of_no_project(world: World) -> None:
    owner = await world.mint()

    response = await world.request(owner, "POST", KEY_PATH, {"name": "k", "projects": [2**31 - 1]})

    problem = assert_invalid(response, ["body", "projects"])
    assert "2147483647" in problem["detail"]


@pytest.mark.one_backend
async def test_the_schema_states_the_project_id_bounds(world: World) -> None:
    document = (await world.client.get("/openapi.json")).json()
    create = document["components"]["schemas"]["ApiKeyCreate"]["properties"]["projects"]

    item = next(option for option in create["anyOf"] if option.get("type") == "array")["items"]
    assert (item["minimum"], item["maximum"]) == (1, 2_147_483_647)


# Cursors (only positions the database can hold).


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", [KEY_PATH, AUDIT_PATH])
@pytest.mark.parametrize(
    "raw",
    [
        "2026-01-01T00:00:00+00:00|9223372036854775808",
        "2026-01-01T00:00:00+00:00|2147483648",
        "2026-01-01T00:00:00+00:00|0",
        "2026-01-01T00:00:00+00:00|-1",
        "2026-01-01T00:00:00+00:00| 1",
        "2026-01-01T00:00:00+00:00|" + "9" * 5000,
        "0001-01-01T00:00:00+14:00|1",
        "9999-12-31T23:59:59-14:00|1",
        "2026-01-01T00:00:00|1",
    ],
    ids=[
        "id-2^63", "id-2^31", "id-0", "id-negative", "id-spaced", "id-5000-digits",
        "year-0-in-utc", "year-10000-in-utc", "no-offset",
    ],
)  # fmt: skip
async def test_a_cursor_naming_a_position_the_database_cannot_hold_is_422(
    world: World, path: str, raw: str
) -> None:
    owner = await world.mint()

    response = await world.request(owner, "GET", f"{path}?cursor={cursor(raw)}")

    assert_invalid(response, ["query", "cursor"])


@pytest.mark.parametrize("path", [KEY_PATH, AUDIT_PATH])
async def test_a_cursor_at_the_edges_of_what_the_database_holds_is_accepted(
    world: World, path: str
) -> None:
    owner = await world.mint()

    for raw in ("0001-01-01T00:00:00+00:00|1", "9999-12-31T23:59:59+00:00|2147483647"):
        response = await world.request(owner, "GET", f"{path}?cursor={cursor(raw)}")
        assert response.status_code == 200, response.text


# Bodies that cannot be parsed: a 422 whose detail says why.


@pytest.mark.one_backend
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"name": "k", "projects": [' + b"9" * 5000 + b"]}", "more than 4,300 digits"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (b'{"name": "k", "projects": [1, 2,]}', "Expecting value at line 1, column 33"),
        (b"name=k", "not valid JSON: Expecting value at line 1, column 1"),
        (b'{"name": "\xff"}', "not UTF-8"),
    ],
    ids=["5000-digit-integer", "30000-deep", "trailing-comma", "form-encoded", "latin-1"],
)
async def test_a_body_that_cannot_be_parsed_is_422_saying_why(
    world: World, raw: bytes, reason: str
) -> None:
    response = await post_raw(world, raw)

    problem = assert_invalid(response, ["body"])
    assert reason in problem["detail"]
    assert problem["detail"].startswith("The body is ")
    assert len(problem["errors"]) == 1


# Credential headers: linear parsing and the 8 KiB cap (SPEC §3).


@pytest.mark.one_backend
async def test_a_signature_followed_by_many_spaces_and_junk_is_401_as_malformed(
    world: World,
) -> None:
    headers = {"Authorization": "Convert-HMAC-SHA256 Signature=" + "a" * 64 + " " * 8000 + "x"}

    response = await world.client.get("/me", headers=headers)

    assert response.status_code == 401
    assert "Malformed Authorization header" in response.json()["detail"]


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "header", ["Authorization", "Convert-Authorization", "Convert-Application-ID", "Expires"]
)
async def test_any_credential_header_over_8_kib_is_401_before_anything_else(
    world: World, header: str
) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)
    headers = signed_headers(signer.key, signer.secret, "http://testserver/me")
    headers[header] = "Bearer " + "a" * (8 * 1024)

    response = await world.client.get("/me", headers=headers)

    assert response.status_code == 401
    assert response.json()["detail"] == (
        f"The {header} header is over 8 KiB; no credential is that long"
    )


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "parameters",
    [
        "Signature={}",
        "signature={}",
        "SIGNATURE = {} ;",
        "  Signature\t=\t{}  ;  ",
        "Signature={};",
    ],
)
async def test_the_signature_parameter_may_carry_white_space_case_and_one_semicolon(
    world: World, parameters: str
) -> None:
    signer = await world.mint(type=KeyType.REQUEST_SIGNING)
    headers = signed_headers(signer.key, signer.secret, "http://testserver/me")
    signature = headers["Authorization"].rsplit("=", 1)[1]
    headers["Authorization"] = "Convert-HMAC-SHA256 " + parameters.format(signature.upper())

    response = await world.client.get("/me", headers=headers)

    assert response.status_code == 200, response.text


# No redirect built from the Host header.


@pytest.mark.one_backend
@pytest.mark.parametrize("path", ["/me/", f"{KEY_PATH}/", "/healthz/"])
async def test_a_trailing_slash_path_is_a_plain_404_without_a_redirect(
    world: World, path: str
) -> None:
    response = await world.client.get(path, headers={"Host": "evil.example"})

    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"
    assert "evil.example" not in json.dumps(response.json())
