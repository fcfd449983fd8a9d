"""The composition root: the one place the service's parts are built and torn down, for the
HTTP app, the command line and the tests alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from apikeys.config import Settings
from apikeys.security import SecretKeeper
from apikeys.service.authentication import Authenticator
from apikeys.service.idempotency import Idempotency
from apikeys.service.keys import KeyService, SecretPrefixes
from apikeys.service.replay import ReplayGuard
from apikeys.service.throttle import FailureThrottle
from apikeys.service.usage import UsageRecorder
from apikeys.service.verification import ProjectDirectory
from apikeys.storage.database import Database
from apikeys.storage.shared_state import SharedState, open_shared_state
from apikeys.storage.writer import KeyWriter


@dataclass(frozen=True, slots=True)
class Services:
    """Everything built once per process."""

    settings: Settings
    database: Database
    keeper: SecretKeeper
    prefixes: SecretPrefixes
    authenticator: Authenticator
    throttle: FailureThrottle
    writer: KeyWriter
    projects: ProjectDirectory
    idempotency: Idempotency
    keys: KeyService
    # Used signatures and failure counts, seen by every replica.
    shared_state: SharedState


@asynccontextmanager
async def build_services(settings: Settings) -> AsyncIterator[Services]:
    """The services for `settings`; on leaving, keys asked for are written and the database
    connections closed."""
    database = Database(settings.async_database_url, settings.database_timeout)
    keeper = SecretKeeper(settings.load_master_key())
    prefixes = SecretPrefixes(settings.secret_key_prefix, settings.request_signing_prefix)
    shared_state = open_shared_state(
        database,
        settings.redis_url,
        key_prefix=settings.redis_key_prefix,
        timeout=settings.database_timeout,
    )
    authenticator = Authenticator(
        database,
        keeper,
        secret_key_prefix=settings.secret_key_prefix,
        signature_max_age=settings.signature_max_age,
        clock_skew=settings.clock_skew,
        usage=UsageRecorder(database),
        replay=ReplayGuard(shared_state, clock_skew=settings.clock_skew),
        cache_ttl=settings.auth_cache_ttl,
    )
    throttle = FailureThrottle(settings.auth_failure_limit, shared_state)
    writer = KeyWriter(database)
    idempotency = Idempotency(database, keeper)
    services = Services(
        settings=settings,
        database=database,
        keeper=keeper,
        prefixes=prefixes,
        authenticator=authenticator,
        throttle=throttle,
        writer=writer,
        projects=ProjectDirectory(database),
        idempotency=idempotency,
        keys=KeyService(
            database,
            writer,
            keeper,
            prefixes,
            forget=authenticator.forget,
            idempotency=idempotency,
        ),
        shared_state=shared_state,
    )
    eraser = asyncio.create_task(idempotency.erase_expired_forever())
    try:
        yield services
    finally:
        eraser.cancel()
        with suppress(asyncio.CancelledError):
            await eraser
        await writer.close()
        await authenticator.close()
        await throttle.close()
        await shared_state.close()
        await database.dispose()
