"""Liveness and readiness probes; no authentication."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from apikeys.api.deps import services_of
from apikeys.api.openapi import problem_responses
from apikeys.errors import ServiceUnavailable

router = APIRouter(tags=["Operations"])

READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503))
async def readyz(request: Request) -> dict[str, str]:
    """200 when the database answers within two seconds, else 503."""
    try:
        await asyncio.wait_for(services_of(request).database.ping(), READY_TIMEOUT_SECONDS)
    except Exception as error:
        raise ServiceUnavailable("The database is not answering") from error
    return {"status": "ready"}
