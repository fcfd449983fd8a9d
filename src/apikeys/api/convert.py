"""Convert's API v2 under /api/v2: its three key operations, with Convert's names in and out
and its error shape (apikeys.api.problems). Only names change here: every rule is the
service's, exactly as for the service's own routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from apikeys.api.auth import AuthenticatedRoute
from apikeys.api.deps import caller_of, services_of
from apikeys.api.openapi import CONVERT_TAG, convert_error_responses
from apikeys.api.problems import CONVERT_PREFIX
from apikeys.api.responses import JsonResponse
from apikeys.api.routes import AccountId, IdempotencyKey, KeyId, idempotent_request, origin_of
from apikeys.api.schemas import GrantableRole, Name, ProjectIds, key_body
from apikeys.domain import ApiKeyInfo, KeyType, Role
from apikeys.service.keys import KeyRequest

# Convert's list has no paging; this many of the newest keys.
LIST_LIMIT = 1000

router = APIRouter(
    prefix=CONVERT_PREFIX,
    route_class=AuthenticatedRoute,
    tags=[CONVERT_TAG],
    responses=convert_error_responses(401, 429, 503),
)

AuthType = Literal["requestSigning", "secretKey"]
ReadOnly = Annotated[
    str | None,
    Field(default=None, json_schema_extra={"readOnly": True}, description="Read-only; ignored."),
]


class ConvertApiKeyAdd(BaseModel):
    """The body of Convert's `POST /accounts/{account_id}/api-keys/add`."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="1-100 characters after trimming; no control characters.")
    auth_type: AuthType = Field(
        default="requestSigning",
        description="requestSigning: HMAC-signed requests; secretKey: a Bearer secret.",
    )
    projects: ProjectIds = Field(
        default=None,
        description="Project ids the key is limited to; null, absent or [] means every project.",
    )
    role: GrantableRole = Field(
        default="browse",
        description="What the key may do; absent: the calling key's own role, at most admin.",
    )
    key_id: ReadOnly
    key_secret: ReadOnly

    def to_request(self, caller: ApiKeyInfo) -> KeyRequest:
        role = Role(self.role) if "role" in self.model_fields_set else _role_of(caller)
        return KeyRequest(
            name=self.name,
            type=KeyType(self.auth_type),
            role=role,
            project_ids=frozenset(self.projects) if self.projects else None,
            expires_at=None,
        )


def _role_of(caller: ApiKeyInfo) -> Role:
    """Convert's default for an omitted role: the caller's own, capped at admin."""
    return Role.ADMIN if caller.role.outranks(Role.ADMIN) else caller.role


class ConvertApiKey(BaseModel):
    """Convert's ApiKey object."""

    name: str
    auth_type: AuthType
    projects: list[int] | None = Field(description="Sorted project ids; null: every project.")
    key_id: str = Field(description="Public identifier; the Convert-Application-ID value.")
    key_secret: str = Field(
        description="In full only in the answer to add; elsewhere '…' and its last 4 characters."
    )
    role: Role


class ConvertApiKeyList(BaseModel):
    data: list[ConvertApiKey]


class ConvertDeleted(BaseModel):
    code: int = Field(examples=[200])
    message: str


def convert_key_body(info: ApiKeyInfo, secret: str | None = None) -> dict[str, Any]:
    """`ConvertApiKey`: the service's key body (apikeys.api.schemas.key_body) renamed."""
    body = key_body(info)
    return {
        "name": body["name"],
        "auth_type": body["type"],
        "projects": body["projects"],
        "key_id": body["key"],
        "key_secret": secret if secret is not None else body["secret_hint"],
        "role": body["role"],
    }


@router.get(
    "/accounts/{account_id}/api-keys",
    response_model=ConvertApiKeyList,
    responses=convert_error_responses(403, 404, 422),
)
async def convert_list_api_keys(account_id: AccountId, request: Request) -> Any:
    """Get the list of API keys of an account (Convert's `getApiKeys`): revoked keys left
    out, newest first, at most 1,000; each secret masked."""
    page = await services_of(request).keys.list(
        caller_of(request), account_id, limit=LIST_LIMIT, cursor=None, include_revoked=False
    )
    return JsonResponse({"data": [convert_key_body(info) for info in page.items]})


@router.post(
    "/accounts/{account_id}/api-keys/add",
    status_code=201,
    response_model=ConvertApiKey,
    responses={
        201: {"description": "The new key, with its full key_secret: the only time it is shown."},
        **convert_error_responses(403, 404, 409, 413, 415, 422),
    },
)
async def convert_add_api_key(
    account_id: AccountId,
    body: ConvertApiKeyAdd,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Create a new API key for an account (Convert's `createApiKey`)."""
    caller = caller_of(request)
    issued = await services_of(request).keys.create(
        caller,
        account_id,
        body.to_request(caller),
        origin_of(request),
        await idempotent_request(request, idempotency_key),
    )
    return JsonResponse(
        convert_key_body(issued.info, issued.secret),
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.delete(
    "/accounts/{account_id}/api-keys/{key_id}/delete",
    response_model=ConvertDeleted,
    responses=convert_error_responses(403, 404, 422),
)
async def convert_delete_api_key(account_id: AccountId, key_id: KeyId, request: Request) -> Any:
    """Delete an API key (Convert's `deleteApiKey`): it is revoked at once and for good."""
    await services_of(request).keys.revoke(
        caller_of(request), account_id, key_id, origin_of(request)
    )
    return JsonResponse({"code": 200, "message": f"API key {key_id} was deleted"})
