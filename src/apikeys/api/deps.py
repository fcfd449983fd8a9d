"""What a route can reach: the services, a database session, the calling key."""

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
from apikeys.service.verification import ProjectDirectory
from apikeys.storage.database import AsyncSession, Database
from apikeys.storage.writer import KeyWriter


@dataclass(frozen=True, slots=True)
class Services:
    """Everything built once per process at start-up."""

    settings: Settings
    database: Database
    keeper: SecretKeeper
    prefixes: SecretPrefixes
    authenticator: Authenticator
    throttle: FailureThrottle
    writer: KeyWriter
    projects: ProjectDirectory


# The services and the caller are read off the request, not declared as dependencies:
# FastAPI solves each declared dependency on every request, at several times the cost of the
# whole lookup, and these two are on the path of every authenticated call.
def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def caller_of(request: Request) -> ApiKeyInfo:
    """The key the route class authenticated (see apikeys.api.auth) before FastAPI read any
    parameter."""
    caller: ApiKeyInfo = request.state.caller
    return caller


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; service functions commit, anything uncommitted rolls back."""
    async with services_of(request).database.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
