"""Properties, for any input Hypothesis can find: the credential parser refuses only with a
401, accepts exactly the documented shapes, refuses oversized headers before parsing them,
and does the same bounded work whatever a header's length; the body of a key creation
either validates or is a 422 naming its errors, never a server error."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import threading
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from apikeys.api import auth
from apikeys.api.app import create_app
from apikeys.api.schemas import ApiKeyCreate
from apikeys.config import Settings
from apikeys.domain import KeyType, Role
from apikeys.errors import Unauthenticated
from apikeys.service import accounts, keys
from apikeys.service.authentication import BearerCredentials, SignatureCredentials
from tests.conftest import ACCOUNT_ID, PROJECTS, random_master_key

# The regular expressions the parser once used, kept here only as the definition of what it
# must accept. Inputs stay short, so their backtracking costs nothing in a test.
SIGNATURE_SHAPE = re.compile(r"\s*Signature\s*=\s*([0-9A-Fa-f]{64})\s*;?\s*", re.IGNORECASE)
KEY_SHAPE = re.compile(r"[A-Za-z0-9_\-]{16,64}")
EXPIRES_SHAPE = re.compile(r"\d{1,12}")

KEY = "k" * 24
EXPIRES = "1900000000"
SIGNATURE = "0123456789abcdef" * 4
CREDENTIAL_HEADERS = (b"authorization", b"convert-authorization", b"convert-application-id")
CREDENTIAL_HEADERS += (b"expires",)

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


async def _no_body() -> bytes:
    return b""


def parse(headers: dict[bytes, bytes]) -> Any:
    return asyncio.run(
        auth.read_credentials(headers, url="http://testserver/me", read_body=_no_body)
    )


def signing_headers(parameters: str, key: str = KEY, expires: str = EXPIRES) -> Any:
    return {
        b"authorization": ("Convert-HMAC-SHA256 " + parameters).encode("latin-1"),
        b"convert-application-id": key.encode("latin-1"),
        b"expires": expires.encode("latin-1"),
    }


latin1 = st.text(st.characters(codec="latin-1"), max_size=80)
# Text made mostly of what a signature parameter is built from, so near misses are common.
signature_like = st.lists(
    st.sampled_from([" ", "\t", "\x0b", "\xa0", "=", ";", "a", "F", "0", "9", "g", "Signature"]),
    max_size=90,
).map("".join) | st.builds(
    "{}Signature{}={}{}{}{}".format,
    st.sampled_from(["", " ", "\t "]),
    st.sampled_from(["", " "]),
    st.sampled_from(["", " ", "\t"]),
    st.text("0123456789abcdefABCDEF", min_size=62, max_size=66),
    st.sampled_from(["", " ", "  "]),
    st.sampled_from(["", ";", " ;", "; ", ";;", " x"]),
)


@PROPERTY_SETTINGS
@given(st.dictionaries(st.sampled_from(CREDENTIAL_HEADERS), st.binary(max_size=200)))
def test_any_credential_headers_either_parse_or_are_a_401(headers: dict[bytes, bytes]) -> None:
    try:
        credentials = parse(headers)
    except Unauthenticated:
        return
    assert isinstance(credentials, BearerCredentials | SignatureCredentials)


@PROPERTY_SETTINGS
@given(signature_like)
@example("Signature=" + SIGNATURE + " " * 200 + "x")
@example(" sIgNaTuRe =\t" + SIGNATURE.upper() + " ; ")
def test_the_signature_parameter_is_accepted_exactly_in_its_documented_shape(
    parameters: str,
) -> None:
    expected = SIGNATURE_SHAPE.fullmatch(parameters)
    try:
        credentials = parse(signing_headers(parameters))
    except Unauthenticated as error:
        assert expected is None, parameters
        assert "Malformed Authorization header" in error.detail
        return
    assert expected is not None, parameters
    assert isinstance(credentials, SignatureCredentials)
    assert credentials.signature == expected.group(1)


@PROPERTY_SETTINGS
@given(latin1 | st.text("abcXYZ019_-", max_size=70))
def test_a_key_is_accepted_exactly_in_its_documented_shape(key: str) -> None:
    try:
        parse(signing_headers("Signature=" + SIGNATURE, key=key))
    except Unauthenticated as error:
        assert not KEY_SHAPE.fullmatch(key)
        assert error.detail == "Missing or malformed Convert-Application-ID header"
        return
    assert KEY_SHAPE.fullmatch(key)


@PROPERTY_SETTINGS
@given(latin1 | st.text("0123456789-+ ", max_size=14))
def test_expires_is_accepted_exactly_in_its_documented_shape(expires: str) -> None:
    try:
        parse(signing_headers("Signature=" + SIGNATURE, expires=expires))
    except Unauthenticated as error:
        assert not EXPIRES_SHAPE.fullmatch(expires)
        assert error.detail.startswith("Missing or malformed Expires header")
        return
    assert EXPIRES_SHAPE.fullmatch(expires)


@PROPERTY_SETTINGS
@given(
    st.sampled_from(CREDENTIAL_HEADERS),
    st.integers(min_value=8 * 1024 + 1, max_value=64 * 1024),
    st.sampled_from([b" ", b"a", b"0"]),
)
def test_a_credential_header_over_8_kib_is_refused_before_it_is_parsed(
    name: bytes, length: int, filler: bytes
) -> None:
    # Otherwise valid: only the length can make these fail.
    headers = signing_headers("Signature=" + SIGNATURE)
    headers[name] = (headers.get(name, b"") + filler * length)[:length]

    with pytest.raises(Unauthenticated) as refused:
        parse(headers)

    assert refused.value.detail.endswith("header is over 8 KiB; no credential is that long")


def steps_in_the_parser(headers: dict[bytes, bytes]) -> int:
    """Lines of the parser's module run while parsing: its Python-level work."""
    steps = 0

    def trace(frame: FrameType, event: str, _arg: Any) -> Any:
        nonlocal steps
        if frame.f_code.co_filename != auth.__file__:
            return None
        if event == "line":
            steps += 1
        return trace

    sys.settrace(trace)
    try:
        parse(headers)
    except Unauthenticated:
        pass
    finally:
        sys.settrace(None)
    return steps


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([" ", "\t", "a", ";"]),
    st.sampled_from(["", "x", ";", " x"]),
    st.integers(min_value=1, max_value=8 * 1024 - 200),
)
def test_the_parser_does_the_same_python_work_whatever_the_length_of_a_header(
    padding: str, ending: str, length: int
) -> None:
    def crafted(size: int) -> dict[bytes, bytes]:
        return signing_headers("Signature=" + SIGNATURE + padding * size + ending)

    # The string operations it calls each pass over the header once, in C.
    assert steps_in_the_parser(crafted(length + 2)) == steps_in_the_parser(crafted(2))


def test_the_parser_uses_no_regular_expression() -> None:
    assert "re" not in vars(auth)
    assert not [value for value in vars(auth).values() if isinstance(value, re.Pattern)]


# The body validator, through the whole application.

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
create_bodies = json_values | st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=120) | json_values,
        "type": st.sampled_from(["requestSigning", "secretKey", "SecretKey"]) | json_values,
        "projects": st.lists(st.integers(min_value=-5, max_value=2**64), max_size=5)
        | st.lists(st.sampled_from(PROJECTS), max_size=3)
        | json_values,
        "role": st.sampled_from(["browse", "edit", "publish", "admin", "owner"]) | json_values,
        "expires_at": st.sampled_from(
            [
                "2099-01-01T00:00:00Z",
                "2099-01-01T00:00:00.1234567891+05:30",
                "0001-01-01T00:00:00+14:00",
                "9999-12-31T23:59:59-14:00",
                "2099-01-01",
                "2000-01-01T00:00:00Z",
            ]
        )
        | json_values,
        "project": json_values,
    },
)


class InProcess:
    """The application on an event loop of its own thread, for Hypothesis's synchronous
    tests: one application for all examples, its requests made from the test's thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stack = AsyncExitStack()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    async def _start(self) -> httpx.AsyncClient:
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        transport = httpx.ASGITransport(app=self.app)
        return await self._stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver")
        )

    def __enter__(self) -> httpx.AsyncClient:
        self._thread.start()
        client: httpx.AsyncClient = self.run(self._start())
        return client

    def __exit__(self, *_: object) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def owner_client(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[InProcess, httpx.AsyncClient, str]]:
    path = tmp_path_factory.mktemp("properties") / "apikeys.db"
    shutil.copy(sqlite_template, path)
    app = create_app(Settings(database_url=f"sqlite:///{path}", master_key=random_master_key()))

    async def owner_secret() -> str:
        services = app.state.services
        async with services.database.transaction() as session:
            await accounts.create_account(session, "Acme", ACCOUNT_ID)
            for project in PROJECTS:
                await accounts.create_project(session, ACCOUNT_ID, f"Project {project}", project)
        request = keys.KeyRequest("owner", KeyType.SECRET_KEY, Role.OWNER, None, None)
        issued = await services.keys.create_bootstrap(ACCOUNT_ID, request)
        return issued.secret

    in_process = InProcess(app)
    with in_process as client:
        yield in_process, client, in_process.run(owner_secret())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(create_bodies)
def test_any_json_body_either_creates_a_key_or_is_a_422_naming_its_errors(
    owner_client: tuple[InProcess, httpx.AsyncClient, str], body: Any
) -> None:
    in_process, client, secret = owner_client

    response = in_process.run(
        client.post(
            f"/accounts/{ACCOUNT_ID}/api-keys",
            content=json.dumps(body).encode(),  # ASCII: a lone surrogate travels escaped
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
    )

    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        assert response.json()["name"] == body["name"].strip()
        return
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["errors"]
    for error in problem["errors"]:
        assert isinstance(error["loc"], list)
        assert error["loc"][0] == "body"
        assert isinstance(error["msg"], str)
        assert error["msg"]


@PROPERTY_SETTINGS
@given(create_bodies)
def test_the_body_model_raises_nothing_but_a_validation_error(body: Any) -> None:
    try:
        request = ApiKeyCreate.model_validate(body).to_request()
    except ValidationError as error:
        assert error.errors()
        return
    assert 1 <= len(request.name) <= 100
    assert all(1 <= project <= 2**31 - 1 for project in request.project_ids or ())
