"""/docs, /redoc and the OpenAPI document: self-hosted, unauthenticated, complete."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import httpx
import pytest

from apikeys.api.openapi import (
    REQUEST_SIGNING_SCHEME,
    REQUEST_SIGNING_SECRET_SCHEME,
    SECRET_KEY_SCHEME,
)
from tests.conftest import ACCOUNT_ID, World

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
ASSET_REFERENCE = re.compile(r'(?:src|href|spec-url)="([^"]+)"')


async def openapi_document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


@pytest.mark.one_backend
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_and_every_asset_it_names_are_served_here_without_credentials(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    references = ASSET_REFERENCE.findall(response.text)
    assert len(references) >= 2
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        assert (await client.get(reference)).status_code == 200, reference
    if page == "/redoc":
        logo = await client.get("/redoc/logo-mini.svg")
        assert logo.status_code == 200 and logo.headers["content-type"] == "image/svg+xml"


@pytest.mark.one_backend
async def test_swagger_ui_loads_the_signing_script_between_the_bundle_and_the_ui(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/docs")).text

    bundle = html.index("swagger-ui-bundle.js")
    signing = html.index("/static/apikeys/request-signing.js")
    assert bundle < signing < html.index("SwaggerUIBundle({")
    assert '"validatorUrl": null' in html


@pytest.mark.one_backend
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_allow_only_their_own_origin_and_inline_scripts_by_hash(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)

    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    for script in re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "http" not in policy


@pytest.mark.one_backend
async def test_document_declares_bearer_and_the_convert_headers_and_a_never_sent_secret(
    client: httpx.AsyncClient,
) -> None:
    schemes = (await openapi_document(client))["components"]["securitySchemes"]

    assert schemes[SECRET_KEY_SCHEME]["type"] == "http"
    assert schemes[SECRET_KEY_SCHEME]["scheme"] == "bearer"
    signing = schemes[REQUEST_SIGNING_SCHEME]
    assert (signing["type"], signing["in"], signing["name"]) == (
        "apiKey",
        "header",
        "Convert-Application-ID",
    )
    assert "Expires:" in signing["description"]
    assert "Authorization: Convert-HMAC-SHA256 Signature=<hex>" in signing["description"]
    assert "never sent" in schemes[REQUEST_SIGNING_SECRET_SCHEME]["description"]


# The probes need no key; /metrics is for the addresses in APIKEYS_VERIFY_ALLOW instead.
KEYLESS_PATHS = ("/healthz", "/readyz", "/metrics")


@pytest.mark.one_backend
async def test_every_authenticated_operation_accepts_either_scheme_and_never_the_secret_one(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi_document(client)

    for method, path, operation in operations(document):
        if path in KEYLESS_PATHS:
            assert "security" not in operation
            continue
        assert operation["security"] == [{SECRET_KEY_SCHEME: []}, {REQUEST_SIGNING_SCHEME: []}], (
            method,
            path,
        )


@pytest.mark.one_backend
async def test_every_error_response_of_every_operation_is_problem_json(
    client: httpx.AsyncClient,
) -> None:
    """Convert's API v2 surface excepted, whose errors have Convert's shape (SPEC §10)."""
    document = await openapi_document(client)

    for method, path, operation in operations(document):
        responses = operation["responses"]
        if path not in KEYLESS_PATHS:
            assert {"401", "429", "503"} <= set(responses), (method, path)
        if operation.get("parameters") or "requestBody" in operation:
            assert "422" in responses, (method, path)
        media_type, schema = "application/problem+json", PROBLEM_REF
        if path.startswith("/api/v2/"):
            media_type, schema = "application/json", {"$ref": "#/components/schemas/ConvertError"}
        for status, response in responses.items():
            if int(status) >= 400:
                content = response["content"]
                assert list(content) == [media_type], (method, path, status)
                assert content[media_type]["schema"] == schema
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.one_backend
async def test_create_operation_lists_its_statuses_headers_and_named_examples(
    client: httpx.AsyncClient,
) -> None:
    document = await openapi_document(client)

    create = document["paths"]["/accounts/{account_id}/api-keys"]["post"]
    assert sorted(create["responses"]) == [
        "201", "401", "403", "404", "409", "413", "415", "422", "429", "503",
    ]  # fmt: skip
    assert {"Location", "Cache-Control"} <= set(create["responses"]["201"]["headers"])
    assert "Retry-After" in create["responses"]["429"]["headers"]
    examples = create["requestBody"]["content"]["application/json"]["examples"]
    assert {example["summary"] for example in examples.values()} == {
        "Reporting Dashboard Integration",
        "Nightly Data Sync Script",
    }
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {
        "type", "title", "status", "detail", "instance", "request_id", "errors",
    }  # fmt: skip


async def test_every_create_example_is_accepted_by_the_service(world: World) -> None:
    document = await openapi_document(world.client)
    create = document["paths"]["/accounts/{account_id}/api-keys"]["post"]
    examples = create["requestBody"]["content"]["application/json"]["examples"]
    owner = await world.mint()

    for example in examples.values():
        path = f"/accounts/{ACCOUNT_ID}/api-keys"
        response = await world.request(owner, "POST", path, example["value"])
        assert response.status_code == 201, example["summary"]
