"""The application factory: wires settings, storage, services and HTTP together."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from apikeys.api import docs, health, openapi, problems, routes
from apikeys.api.deadline import DeadlineMiddleware
from apikeys.api.deps import Services
from apikeys.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from apikeys.api.verify import OperatorRoutes
from apikeys.config import Settings
from apikeys.log import AccessLog, logs_at
from apikeys.security import SecretKeeper
from apikeys.service.authentication import Authenticator
from apikeys.service.keys import SecretPrefixes
from apikeys.service.throttle import FailureThrottle
from apikeys.service.usage import UsageRecorder
from apikeys.service.verification import ProjectDirectory
from apikeys.storage.database import Database
from apikeys.storage.writer import KeyWriter

MAX_BODY_BYTES = 64 * 1024


def build_services(settings: Settings, database: Database, master_key: bytes) -> Services:
    keeper = SecretKeeper(master_key)
    return Services(
        settings=settings,
        database=database,
        keeper=keeper,
        prefixes=SecretPrefixes(settings.secret_key_prefix, settings.request_signing_prefix),
        authenticator=Authenticator(
            database,
            keeper,
            secret_key_prefix=settings.secret_key_prefix,
            signature_max_age=settings.signature_max_age,
            clock_skew=settings.clock_skew,
            usage=UsageRecorder(database),
            cache_ttl=settings.auth_cache_ttl,
        ),
        throttle=FailureThrottle(settings.auth_failure_limit),
        writer=KeyWriter(database),
        projects=ProjectDirectory(database),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Read now, so a missing or bad master key stops start-up rather than the first request.
    master_key = settings.load_master_key()
    access_log = AccessLog(settings.log_format, enabled=logs_at(settings.log_level, logging.INFO))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.async_database_url, settings.database_timeout)
        services = build_services(settings, database, master_key)
        app.state.services = services
        # What start-up built (modules, routes, the engine) lives as long as the process: out
        # of the collector's reach, a full collection no longer walks it, which otherwise
        # stalls every request in flight for a tenth of a second now and then.
        gc.freeze()
        try:
            yield
        finally:
            await services.writer.close()
            await services.authenticator.close()
            await database.dispose()
            access_log.flush()

    app = FastAPI(
        title="apikeys",
        version="0.1.0",
        summary="Create API keys for an account and authenticate the requests made with them.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # Straight into the app's own table rather than include_router(), which FastAPI matches
    # through a nested router, twice over, on every request. The authenticated routes come
    # first: routes are tried in order, and these take nearly all the traffic.
    app.router.routes[:0] = [*routes.router.routes, *health.router.routes]
    problems.install(app)
    docs.install(app)
    openapi.install(app)
    # Here rather than in the server, so that /verify's gate, outside it, sees the TCP peer.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    app.add_middleware(OperatorRoutes, networks=settings.verify_allow_networks)
    app.add_middleware(DeadlineMiddleware, seconds=settings.database_timeout)
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    app.add_middleware(RequestContextMiddleware, access_log=access_log)
    return app
