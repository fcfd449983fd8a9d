"""The OpenAPI document's shared parts: the problem+json schema, the declared error responses,
the security schemes, and the request body examples."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.models import Example
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from apikeys.api.problems import PROBLEM_MEDIA_TYPE
from apikeys.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthenticated,
    UnsupportedMediaType,
)

CONVERT_TAG = "Convert API v2"
CONVERT_TAG_DESCRIPTION = (
    "Convert's published API v2 key operations, for clients written from Convert's documents: "
    "point such a client's base URL at `/api/v2`. Convert's field names (`auth_type`, "
    "`key_id`, `key_secret`) and error shape (`{code, message, fields}`); the same keys, "
    "rules and audit trail as the routes above."
)

SECRET_KEY_SCHEME = "secretKey"
REQUEST_SIGNING_SCHEME = "requestSigning"
# The docs page reads the secret from this scheme to sign in the browser (static/
# request-signing.js). No operation lists it, so Swagger UI never sends its value.
REQUEST_SIGNING_SECRET_SCHEME = "requestSigningSecret"

SECRET_KEY_DESCRIPTION = "A secretKey key. Send `Authorization: Bearer <secret>`."
REQUEST_SIGNING_DESCRIPTION = (
    "A requestSigning key (Convert's scheme). Send three headers:\n\n"
    "- `Convert-Application-ID: <key>`\n"
    "- `Expires: <UNIX timestamp, seconds>`, at most 15 minutes ahead\n"
    "- `Authorization: Convert-HMAC-SHA256 Signature=<hex>`\n\n"
    "where `<hex>` is the hex HMAC-SHA256, keyed with the UTF-8 secret, of "
    '`<key> + "\\n" + <Expires> + "\\n" + <absolute request URL with ?query> + "\\n" + '
    "<raw body>`.\n\n"
    "On this page: enter the key here and the secret under "
    f"`{REQUEST_SIGNING_SECRET_SCHEME}`; the page signs each request in your browser."
)
REQUEST_SIGNING_SECRET_DESCRIPTION = (
    "Kept in this page and never sent to the server, under this or any other name: the "
    "requestSigning key's secret, which the /docs page's script uses in your browser to compute "
    "each request's signature (WebCrypto). Declared as a header only so that the page has a "
    "box for it."
)


class ProblemFieldError(BaseModel):
    loc: list[str | int] = Field(description='Where the bad value is, e.g. ["body", "role"].')
    msg: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """An RFC 9457 problem: every error the service answers with."""

    type: str = Field(description="A URI reference naming the kind of problem.")
    title: str = Field(description="The status's short name.")
    status: int
    detail: str = Field(description="What went wrong with this request, for a person to read.")
    instance: str = Field(description="The request's path.")
    request_id: str | None = Field(description="The X-Request-ID; quote it when reporting.")
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="On 422 only: each invalid field."
    )


_STRING = {"schema": {"type": "string"}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", **_STRING}}

# Per status: the error raised, when it happens, an example detail, the headers it carries.
_PROBLEMS: dict[int, tuple[type[ApiError], str, str, dict[str, Any]]] = {
    401: (
        Unauthenticated,
        "Missing, malformed, unknown, revoked, expired or mismatched credentials.",
        "The signature does not match. The server signed the key, the Expires value, the URL "
        "https://api.example.com/accounts/10/api-keys and a body of 42 bytes, joined by "
        r"'\n'; sign exactly that URL and body",
        {"WWW-Authenticate": {"description": "Both accepted schemes.", **_STRING}},
    ),
    403: (
        Forbidden,
        "The key is valid but its role or project scope is too small.",
        "A key with role publish cannot create a key with role admin",
        {},
    ),
    404: (
        NotFound,
        "No such account for this caller, or no such key.",
        "Account 10 was not found",
        {},
    ),
    409: (
        Conflict,
        "The key is revoked, or a request with this Idempotency-Key is still in progress.",
        "API key 0hV3kQ9xY2mN5pL8rT1wZ4aB is revoked, and a revoked key stays as it is",
        {},
    ),
    413: (PayloadTooLarge, "The body is over 64 KiB.", "The body is over the 64 KiB limit", {}),
    415: (
        UnsupportedMediaType,
        "The body is not application/json.",
        "The body must be application/json, not text/plain",
        {},
    ),
    422: (
        InvalidInput,
        "An invalid body or parameter; `errors` names each field.",
        "The request is not valid: body.role",
        {},
    ),
    429: (
        TooManyRequests,
        "Too many failed authentications from this client address.",
        "Too many failed authentications from this client; retry in 12 s",
        _RETRY_AFTER,
    ),
    503: (
        ServiceUnavailable,
        "The database is unavailable.",
        "The database is not answering; retry shortly",
        _RETRY_AFTER,
    ),
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, each a problem+json body."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        error, description, detail, headers = _PROBLEMS[status]
        example = {
            "type": f"/problems/{error.slug}",
            "title": error.title,
            "status": status,
            "detail": detail,
            "instance": "/accounts/10/api-keys",
            "request_id": "3f2b9c1e8d7a4b6c9e0f1a2b3c4d5e6f",
        }
        responses[status] = {
            "description": description,
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "example": example,
                }
            },
            **({"headers": headers} if headers else {}),
        }
    return responses


class ConvertError(BaseModel):
    """An error on the Convert API v2 surface, in Convert's shape."""

    code: int = Field(description="The HTTP status.")
    message: str = Field(description="What went wrong with this request, for a person to read.")
    fields: list[str] = Field(description="The names of the bad fields; empty when none.")


def convert_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these statuses on the Convert API v2 surface."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        _, description, detail, headers = _PROBLEMS[status]
        responses[status] = {
            "description": description,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ConvertError"},
                    "example": {
                        "code": status,
                        "message": detail,
                        "fields": ["role"] if status == 422 else [],
                    },
                }
            },
            **({"headers": headers} if headers else {}),
        }
    return responses


# Every authenticated operation can answer these, whatever it does.
AUTHENTICATED_RESPONSES = problem_responses(401, 429, 503)

KEY_CREATED_RESPONSE: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "The new key, with its secret: the only time the secret is shown.",
        "headers": {
            "Location": {"description": "The new key's path.", **_STRING},
            "Cache-Control": {"description": "Always no-store.", **_STRING},
        },
    }
}

KEY_ROLLED_RESPONSE: dict[int | str, dict[str, Any]] = {
    201: {
        **KEY_CREATED_RESPONSE[201],
        "description": "The key that replaces the rolled one, with its secret: the only time "
        "the secret is shown.",
    }
}

KEY_CREATE_EXAMPLES: dict[str, Example] = {
    "reporting-dashboard": {
        "summary": "Reporting Dashboard Integration",
        "description": "A secretKey key for a dashboard that only reads.",
        "value": {"name": "Reporting Dashboard Integration", "type": "secretKey", "role": "browse"},
    },
    "nightly-sync": {
        "summary": "Nightly Data Sync Script",
        "description": "A requestSigning key limited to one project, expiring in 2030.",
        "value": {
            "name": "Nightly Data Sync Script",
            "type": "requestSigning",
            "role": "edit",
            "projects": [1],
            "expires_at": "2030-01-01T00:00:00Z",
        },
    },
}


# What the API answers, shown by both docs pages in place of samples made up from the schemas
# (which would show ids of 0, a value the API never gives). The secret is left out: a real one
# has 49 characters after its prefix.
KEY_EXAMPLE: dict[str, Any] = {
    "key": "4Sod2jc8DdIikyI9JNQeP3Yy",
    "name": "Nightly Data Sync Script",
    "type": "requestSigning",
    "role": "edit",
    "projects": [1],
    "account_id": 1,
    "created_at": "2026-11-27T05:31:53Z",
    "expires_at": "2030-01-01T00:00:00Z",
    "last_used_at": None,
    "revoked_at": None,
    "secret_hint": "…WkXJ",
}
KEY_CREATED_EXAMPLE: dict[str, Any] = {
    "key": KEY_EXAMPLE["key"],
    "secret": "cvrs_…WkXJ",
    **{name: value for name, value in KEY_EXAMPLE.items() if name != "key"},
}
KEY_LIST_EXAMPLE: dict[str, Any] = {"data": [KEY_EXAMPLE], "next_cursor": None}
AUDIT_EVENT_EXAMPLE: dict[str, Any] = {
    "id": 1,
    "account_id": 1,
    "action": "api_key.created",
    "actor_key": "tR9SIDxoedLsSYlmPeuOOF5y",
    "target_key": KEY_EXAMPLE["key"],
    "related_key": None,
    "role": "edit",
    "projects": [1],
    "client_address": "203.0.113.7",
    "request_id": "3f2b9c1e8d7a4b6c9e0f1a2b3c4d5e6f",
    "created_at": "2026-11-27T05:31:53Z",
}
AUDIT_EVENT_LIST_EXAMPLE: dict[str, Any] = {"data": [AUDIT_EVENT_EXAMPLE], "next_cursor": None}
KEY_ROLLED_EXAMPLE: dict[str, Any] = {
    **KEY_CREATED_EXAMPLE,
    "key": "q7Xv2LbN0cR5tYwE8kZmA3sD",
    "secret": "cvrs_…Q2rT",
    "secret_hint": "…Q2rT",
    "rolled_from": KEY_EXAMPLE["key"],
}
CONVERT_KEY_EXAMPLE: dict[str, Any] = {
    "name": "Nightly Data Sync Script",
    "auth_type": "requestSigning",
    "projects": [1],
    "key_id": KEY_EXAMPLE["key"],
    "key_secret": "…WkXJ",
    "role": "edit",
}
CONVERT_KEY_LIST_EXAMPLE: dict[str, Any] = {"data": [CONVERT_KEY_EXAMPLE]}
CONVERT_DELETED_EXAMPLE: dict[str, Any] = {
    "code": 200,
    "message": f"API key {KEY_EXAMPLE['key']} was deleted",
}
# Set on the finished document: FastAPI leaves every null out of what it builds, examples too.
_SCHEMA_EXAMPLES = {
    "ApiKey": KEY_EXAMPLE,
    "ApiKeyCreated": KEY_CREATED_EXAMPLE,
    "ApiKeyList": KEY_LIST_EXAMPLE,
    "AuditEventOut": AUDIT_EVENT_EXAMPLE,
    "AuditEventList": AUDIT_EVENT_LIST_EXAMPLE,
    "ApiKeyRolled": KEY_ROLLED_EXAMPLE,
    "ConvertApiKey": CONVERT_KEY_EXAMPLE,
    "ConvertApiKeyList": CONVERT_KEY_LIST_EXAMPLE,
    "ConvertDeleted": CONVERT_DELETED_EXAMPLE,
    # Request bodies offered by no named example: what the pages show as their sample.
    "ConvertApiKeyAdd": {
        "name": "Nightly Data Sync Script",
        "auth_type": "requestSigning",
        "projects": [1],
        "role": "edit",
    },
    "ApiKeyPatch": {"name": "Nightly Data Sync Script", "expires_at": "2030-01-01T00:00:00Z"},
    "ApiKeyRoll": {"expires_in": 86400},
}


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {
        **definitions,
        "Problem": schema,
        "ConvertError": ConvertError.model_json_schema(ref_template="#/components/schemas/{model}"),
    }


def _security_schemes() -> dict[str, Any]:
    return {
        SECRET_KEY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": SECRET_KEY_DESCRIPTION,
        },
        REQUEST_SIGNING_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "Convert-Application-ID",
            "description": REQUEST_SIGNING_DESCRIPTION,
        },
        # Shown in the Authorize dialog but required by no operation, so never sent.
        REQUEST_SIGNING_SECRET_SCHEME: {
            "type": "apiKey",
            "in": "header",
            "name": "Convert-Secret",
            "description": REQUEST_SIGNING_SECRET_DESCRIPTION,
        },
    }


VERIFY_DESCRIPTION = (
    "Forward authentication for a reverse proxy (nginx `auth_request`, Traefik `ForwardAuth`, "
    "Envoy `ext_authz`, Caddy `forward_auth`) or another service: does the request it "
    "received carry a valid key? Send the client's credential headers as they came, the "
    "original request as `X-Forwarded-Method`, `-Proto`, `-Host` and `-Uri` (or nginx's "
    "`X-Original-Method` and `X-Original-URI`), the original body as this request's body "
    "(else a signed request with a body cannot verify), and the client's address as the last "
    "`X-Forwarded-For` entry. Every rule of authentication applies, one signature per "
    "request included. Any method. Only callers in `APIKEYS_VERIFY_ALLOW` reach it; any other "
    "gets 404."
)
_IDENTITY_HEADERS = {
    "X-Apikeys-Key": "The key's public identifier.",
    "X-Apikeys-Account": "The key's account id.",
    "X-Apikeys-Role": "The key's role.",
    "X-Apikeys-Type": "requestSigning or secretKey.",
    "X-Apikeys-Projects": "The key's project ids, ascending, comma-separated; * for every one.",
}
_VERIFY_PARAMETERS = [
    {"name": name, "in": "header", "required": False, "description": text, **_STRING}
    for name, text in (
        ("X-Forwarded-Method", "The original request's method (else X-Original-Method, else "
         "this request's own)."),
        ("X-Forwarded-Proto", "The original request's scheme."),
        ("X-Forwarded-Host", "The original request's host, with its port if any."),
        ("X-Forwarded-Uri", "The original request's path and ?query (or X-Original-URI)."),
        ("X-Forwarded-For", "The proxy's chain; its last entry is the client the throttle "
         "counts."),
        ("X-Apikeys-Require-Role", "The key must hold at least this role."),
        ("X-Apikeys-Require-Project", "The key must cover this project of its account."),
    )
]  # fmt: skip
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


def _operator_paths() -> dict[str, Any]:
    verify: dict[str, Any] = {
        method: {
            "tags": ["Verification"],
            "summary": "Verify a request another service received",
            "description": VERIFY_DESCRIPTION,
            "operationId": f"verify_{method}",
            "parameters": _VERIFY_PARAMETERS,
            "responses": {
                200: {
                    "description": "A valid key that meets the requirements; its metadata as in "
                    "/me, and its identity in headers for the proxy to pass upstream.",
                    "headers": {
                        name: {"description": text, **_STRING}
                        for name, text in _IDENTITY_HEADERS.items()
                    },
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ApiKey"}}
                    },
                },
                **problem_responses(401, 403, 404, 422, 429, 503),
            },
            "security": [{SECRET_KEY_SCHEME: []}, {REQUEST_SIGNING_SCHEME: []}],
        }
        for method in _METHODS
    }
    metrics: dict[str, Any] = {
        "get": {
            "tags": ["Operations"],
            "summary": "Prometheus metrics",
            "description": "The service's metrics in Prometheus' text format, for callers in "
            "`APIKEYS_VERIFY_ALLOW` only (404 for any other).",
            "operationId": "metrics_get",
            "responses": {
                200: {"description": "Prometheus text format.", "content": {"text/plain": {}}},
                **problem_responses(404),
            },
        }
    }
    return {"/verify": verify, "/metrics": metrics}


def install(app: FastAPI) -> None:
    """Build the document once, with the problem schemas and the browser-only secret scheme."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                # In this order on the docs page.
                tags=[
                    {"name": "API keys"},
                    {"name": "Audit"},
                    {"name": CONVERT_TAG, "description": CONVERT_TAG_DESCRIPTION},
                    {"name": "Operations"},
                ],
            )
            # Served before FastAPI's router (apikeys.api.verify), so described here.
            document["paths"].update(_operator_paths())
            components = document.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(_problem_schemas())
            for name, example in _SCHEMA_EXAMPLES.items():
                if name in schemas:
                    schemas[name]["examples"] = [example]
            components["securitySchemes"] = _security_schemes()
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
