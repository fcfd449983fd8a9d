"""Liveness and readiness probes; no authentication."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from apikeys.api.deadline import abandon
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
    """200 when the database answers within two seconds and can take writes, else 503."""
    probe = asyncio.ensure_future(services_of(request).database.unready_reason())
    # Not wait_for: past the bound it would wait for the probe's clean-up too, which against
    # a database that never answers takes as long again.
    await asyncio.wait({probe}, timeout=READY_TIMEOUT_SECONDS)
    if not probe.done():
        probe.cancel()
        abandon(probe)
        raise ServiceUnavailable("The database is not answering")
    try:
        reason = probe.result()
    except Exception as error:
        raise ServiceUnavailable("The database is not answering") from error
    if reason is not None:
        raise ServiceUnavailable(f"The database answers, but {reason}")
    return {"status": "ready"}
