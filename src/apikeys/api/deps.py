"""What a route can ask for: the services, a database session, the calling key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

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


async def get_caller(request: Request) -> ApiKeyInfo:
    """The key the route class authenticated (see apikeys.api.auth) before FastAPI read any
    parameter. Async, so FastAPI does not hand it to a worker thread on every request."""
    caller: ApiKeyInfo = request.state.caller
    return caller


CallerDep = Annotated[ApiKeyInfo, Depends(get_caller)]
