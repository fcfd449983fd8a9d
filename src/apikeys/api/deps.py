"""What a route can ask for: the services, a database session, the calling key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from apikeys.api.openapi import (
    REQUEST_SIGNING_DESCRIPTION,
    REQUEST_SIGNING_SCHEME,
    SECRET_KEY_DESCRIPTION,
    SECRET_KEY_SCHEME,
)
from apikeys.config import Settings
from apikeys.domain import ApiKeyInfo
from apikeys.security import SecretKeeper
from apikeys.service.authentication import Authenticator
from apikeys.service.keys import SecretPrefixes
from apikeys.service.throttle import FailureThrottle
from apikeys.storage.database import AsyncSession, Database


@dataclass(frozen=True, slots=True)
class Services:
    """Everything built once per process at start-up."""

    settings: Settings
    database: Database
    keeper: SecretKeeper
    prefixes: SecretPrefixes
    authenticator: Authenticator
    throttle: FailureThrottle


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """One session per request; service functions commit, anything uncommitted rolls back."""
    async with services.database.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

# Declared for the OpenAPI document only: the route class has already authenticated the
# request (see apikeys.api.auth) before FastAPI reads any parameter. get_caller is async so
# that FastAPI does not hand it to a worker thread on every request.
_bearer = HTTPBearer(
    scheme_name=SECRET_KEY_SCHEME, description=SECRET_KEY_DESCRIPTION, auto_error=False
)
_application_id = APIKeyHeader(
    name="Convert-Application-ID",
    scheme_name=REQUEST_SIGNING_SCHEME,
    description=REQUEST_SIGNING_DESCRIPTION,
    auto_error=False,
)


async def get_caller(
    request: Request,
    _bearer_credentials: Annotated[object, Security(_bearer)],
    _application: Annotated[object, Security(_application_id)],
) -> ApiKeyInfo:
    caller: ApiKeyInfo = request.state.caller
    return caller


CallerDep = Annotated[ApiKeyInfo, Depends(get_caller)]
