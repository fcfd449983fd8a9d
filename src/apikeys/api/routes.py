"""The authenticated endpoints: thin wrappers that parse, call the service, and shape output."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from apikeys.api.auth import AuthenticatedRoute
from apikeys.api.deps import CallerDep, ServicesDep, SessionDep
from apikeys.api.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated, created_body
from apikeys.service import keys

router = APIRouter(route_class=AuthenticatedRoute)

AccountId = Annotated[int, Path(ge=1, description="The account's id.")]


@router.post(
    "/accounts/{account_id}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    tags=["API keys"],
)
async def create_api_key(
    account_id: AccountId,
    body: ApiKeyCreate,
    caller: CallerDep,
    session: SessionDep,
    services: ServicesDep,
) -> Any:
    """Create a new API key for an account. The secret is in this response and never again."""
    issued = await keys.create_key(
        session, services.keeper, services.prefixes, caller, account_id, body.to_request()
    )
    return JSONResponse(
        created_body(issued),
        status_code=201,
        headers={
            "Location": f"/accounts/{account_id}/api-keys/{issued.info.key}",
            "Cache-Control": "no-store",
        },
    )


@router.get("/me", response_model=ApiKey, tags=["API keys"])
async def read_calling_key(caller: CallerDep) -> ApiKey:
    """The calling key's own metadata: a way for a client to check its credentials."""
    return ApiKey.from_info(caller)
