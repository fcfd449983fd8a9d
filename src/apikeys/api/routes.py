"""The authenticated endpoints: thin wrappers that parse, call the service, and shape output."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from apikeys.api.auth import AuthenticatedRoute
from apikeys.api.deps import caller_of, services_of
from apikeys.api.openapi import (
    AUTHENTICATED_RESPONSES,
    KEY_CREATE_EXAMPLES,
    KEY_CREATED_RESPONSE,
    problem_responses,
)
from apikeys.api.responses import JsonResponse
from apikeys.api.schemas import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    AuditEventList,
    AuditEventOut,
    created_body,
    key_body,
    key_json,
    page_body,
)
from apikeys.domain import Origin
from apikeys.service import audit

router = APIRouter(route_class=AuthenticatedRoute, responses=AUTHENTICATED_RESPONSES)

AccountId = Annotated[int, Path(ge=1, description="The account's id.")]
KeyId = Annotated[str, Path(description="The key's public identifier.")]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size, 1-200.")]
Cursor = Annotated[str | None, Query(description="next_cursor from the previous page.")]


def _origin(request: Request) -> Origin:
    return Origin(
        client_address=request.client.host if request.client else None,
        request_id=request.state.request_id,
    )


@router.post(
    "/accounts/{account_id}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    tags=["API keys"],
    responses={**KEY_CREATED_RESPONSE, **problem_responses(403, 404, 413, 415, 422)},
)
async def create_api_key(
    account_id: AccountId,
    body: Annotated[ApiKeyCreate, Body(openapi_examples=KEY_CREATE_EXAMPLES)],
    request: Request,
) -> Any:
    """Create a new API key for an account. The secret is in this response and never again."""
    issued = await services_of(request).keys.create(
        caller_of(request), account_id, body.to_request(), _origin(request)
    )
    return JsonResponse(
        created_body(issued),
        status_code=201,
        headers={
            "Location": f"/accounts/{account_id}/api-keys/{issued.info.key}",
            "Cache-Control": "no-store",
        },
    )


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
    await services_of(request).keys.revoke(caller_of(request), account_id, key, _origin(request))
    return Response(status_code=204)


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
    """Key creations and revocations in the account, newest first."""
    page = await audit.list_events(
        services_of(request).database, caller_of(request), account_id, limit=limit, cursor=cursor
    )
    return AuditEventList(
        data=[AuditEventOut.model_validate(event, from_attributes=True) for event in page.items],
        next_cursor=page.next_cursor,
    )
