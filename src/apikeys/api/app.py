"""The application factory: wires settings, storage, services and HTTP together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from apikeys.api import convert, docs, health, openapi, problems, routes
from apikeys.api.context import ClientAddresses
from apikeys.api.deadline import DeadlineMiddleware
from apikeys.api.middleware import (
    BodyLimitMiddleware,
    RequestContextMiddleware,
    name_plain_routes,
)
from apikeys.api.verify import OperatorRoutes
from apikeys.config import Settings
from apikeys.log import AccessLog, logs_at
from apikeys.services import build_services

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Read now, so a missing or bad master key stops start-up rather than the first request.
    settings.load_master_key()
    access_log = AccessLog(settings.log_format, enabled=logs_at(settings.log_level, logging.INFO))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_services(settings) as services:
            app.state.services = services
            try:
                yield
            finally:
                access_log.flush()

    app = FastAPI(
        title="apikeys",
        version="0.1.0",
        summary="Create API keys for an account and authenticate the requests made with them.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A redirect to the path with or without its slash would be built from the Host
        # header, which the client chooses: an unauthenticated open redirect.
        redirect_slashes=False,
    )
    # Straight into the app's own table rather than include_router(), which FastAPI matches
    # through a nested router, twice over, on every request. The authenticated routes come
    # first: routes are tried in order, and these take nearly all the traffic.
    app.router.routes[:0] = [
        *routes.router.routes,
        *convert.router.routes,
        *health.router.routes,
    ]
    problems.install(app)
    docs.install(app)
    openapi.install(app)
    name_plain_routes(app)
    app.add_middleware(OperatorRoutes, networks=settings.verify_allow_networks)
    app.add_middleware(DeadlineMiddleware, seconds=settings.database_timeout)
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    app.add_middleware(
        RequestContextMiddleware,
        access_log=access_log,
        addresses=ClientAddresses(settings.trusted_proxies),
    )
    return app
