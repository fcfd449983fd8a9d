"""What a route can reach: the services and the calling key."""

from __future__ import annotations

from fastapi import Request

from apikeys.api.context import context_of
from apikeys.domain import ApiKeyInfo
from apikeys.services import Services


# The services and the caller are read off the request, not declared as dependencies:
# FastAPI solves each declared dependency on every request, at several times the cost of the
# whole lookup, and these two are on the path of every authenticated call.
def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def caller_of(request: Request) -> ApiKeyInfo:
    """The key the route class authenticated (see apikeys.api.auth) before FastAPI read any
    parameter."""
    caller = context_of(request.scope).caller
    assert caller is not None, "an authenticated route runs only once its caller is known"
    return caller
