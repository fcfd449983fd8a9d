"""The authenticated endpoints: thin wrappers that parse, call the service, and shape output."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response

from apikeys.api.auth import AuthenticatedRoute
from apikeys.api.context import context_of
from apikeys.api.deps import caller_of, services_of
from apikeys.api.openapi import (
    AUTHENTICATED_RESPONSES,
    KEY_CREATE_EXAMPLES,
    KEY_CREATED_RESPONSE,
    KEY_EXAMPLE,
    KEY_ROLLED_RESPONSE,
    problem_responses,
)
from apikeys.api.responses import JsonResponse
from apikeys.api.schemas import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyPatch,
    ApiKeyRoll,
    ApiKeyRolled,
    AuditEventList,
    AuditEventOut,
    created_body,
    key_body,
    key_json,
    page_body,
)
from apikeys.domain import Origin
from apikeys.service import audit
from apikeys.service.idempotency import IdempotentRequest
from apikeys.service.keys import IssuedKey

router = APIRouter(route_class=AuthenticatedRoute, responses=AUTHENTICATED_RESPONSES)

AccountId = Annotated[int, Path(ge=1, description="The account's id.", examples=[1])]
KeyId = Annotated[
    str, Path(description="The key's public identifier.", examples=[KEY_EXAMPLE["key"]])
]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size, 1-200.")]
Cursor = Annotated[str | None, Query(description="next_cursor from the previous page.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="1-255 printable ASCII characters. A retry with the same value, by the "
        "same calling key within 24 hours, gets the first answer again and creates nothing; "
        "with another body it is 422, while the first is still in progress 409.",
    ),
]


async def idempotent_request(
    request: Request, idempotency_key: str | None
) -> IdempotentRequest | None:
    """What the service needs to answer a retry, when the request carries an
    Idempotency-Key: the operation is its method and path, the body its JSON."""
    if idempotency_key is None:
        return None
    operation = f"{request.method} {request.url.path}"
    return IdempotentRequest.of(idempotency_key, operation, await request.body())


def issued_response(issued: IssuedKey, account_id: int) -> JsonResponse:
    return JsonResponse(
        created_body(issued),
        status_code=201,
        headers={
            "Location": f"/accounts/{account_id}/api-keys/{issued.info.key}",
            "Cache-Control": "no-store",
        },
    )


def origin_of(request: Request) -> Origin:
    context = context_of(request.scope)
    return Origin(client_address=context.client_address, request_id=context.request_id)


@router.post(
    "/accounts/{account_id}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    tags=["API keys"],
    responses={**KEY_CREATED_RESPONSE, **problem_responses(403, 404, 409, 413, 415, 422)},
)
async def create_api_key(
    account_id: AccountId,
    body: Annotated[ApiKeyCreate, Body(openapi_examples=KEY_CREATE_EXAMPLES)],
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Create a new API key for an account. The secret is in this response and never again."""
    issued = await services_of(request).keys.create(
        caller_of(request),
        account_id,
        body.to_request(),
        origin_of(request),
        await idempotent_request(request, idempotency_key),
    )
    return issued_response(issued, account_id)


@router.get("/me", response_model=ApiKey, tags=["API keys"])
async def read_calling_key(request: Request) -> Any:
    """The calling key's own metadata: a way for a client to check its credentials."""
    return Response(key_json(caller_of(request)), media_type="application/json")


@router.get(
    "/accounts/{account_id}/api-keys",
    response_model=ApiKeyList,
    tags=["API keys"],
    responses=problem_responses(403, 404, 422),
)
async def list_api_keys(
    account_id: AccountId,
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
    include_revoked: Annotated[bool, Query(description="Include revoked keys.")] = False,
) -> Any:
    """List the account's keys, newest first; never a secret."""
    page = await services_of(request).keys.list(
        caller_of(request),
        account_id,
        limit=limit,
        cursor=cursor,
        include_revoked=include_revoked,
    )
    return JsonResponse(page_body(page.items, page.next_cursor))


@router.get(
    "/accounts/{account_id}/api-keys/{key}",
    response_model=ApiKey,
    tags=["API keys"],
    responses=problem_responses(403, 404, 422),
)
async def get_api_key(account_id: AccountId, key: KeyId, request: Request) -> Any:
    """One key's metadata, revoked keys included; never the secret."""
    return JsonResponse(
        key_body(await services_of(request).keys.get(caller_of(request), account_id, key))
    )


@router.delete(
    "/accounts/{account_id}/api-keys/{key}",
    status_code=204,
    tags=["API keys"],
    responses={204: {"description": "Revoked, now or before."}, **problem_responses(403, 404, 422)},
)
async def revoke_api_key(account_id: AccountId, key: KeyId, request: Request) -> Response:
    """Revoke a key at once and for good; revoking it again is a no-op. A key may revoke itself."""
    await services_of(request).keys.revoke(caller_of(request), account_id, key, origin_of(request))
    return Response(status_code=204)


@router.patch(
    "/accounts/{account_id}/api-keys/{key}",
    response_model=ApiKey,
    tags=["API keys"],
    responses=problem_responses(403, 404, 409, 413, 415, 422),
)
async def update_api_key(
    account_id: AccountId, key: KeyId, body: ApiKeyPatch, request: Request
) -> Any:
    """Rename a key or change its expiry (JSON merge patch); never the calling key itself."""
    updated = await services_of(request).keys.patch(
        caller_of(request), account_id, key, body.to_changes(), origin_of(request)
    )
    return JsonResponse(key_body(updated))


@router.post(
    "/accounts/{account_id}/api-keys/{key}/roll",
    status_code=201,
    response_model=ApiKeyRolled,
    tags=["API keys"],
    responses={**KEY_ROLLED_RESPONSE, **problem_responses(403, 404, 409, 413, 415, 422)},
)
async def roll_api_key(
    account_id: AccountId,
    key: KeyId,
    request: Request,
    body: ApiKeyRoll | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Replace a key with a new one of the same name, type, role, projects and expiry; the old
    key keeps working for `expires_in` seconds (default a day). Never the calling key itself."""
    issued = await services_of(request).keys.roll(
        caller_of(request),
        account_id,
        key,
        (body or ApiKeyRoll()).overlap,
        origin_of(request),
        await idempotent_request(request, idempotency_key),
    )
    return issued_response(issued, account_id)


@router.get(
    "/accounts/{account_id}/audit-events",
    tags=["Audit"],
    responses=problem_responses(403, 404, 422),
)
async def list_audit_events(
    account_id: AccountId,
    request: Request,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditEventList:
    """Key creations, updates, rolls and revocations in the account, newest first."""
    page = await audit.list_events(
        services_of(request).database, caller_of(request), account_id, limit=limit, cursor=cursor
    )
    return AuditEventList(
        data=[AuditEventOut.model_validate(event, from_attributes=True) for event in page.items],
        next_cursor=page.next_cursor,
    )
