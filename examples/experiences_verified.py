"""The same sample API, verifying keys itself with apikeys.client's FastAPI dependency: no
proxy needed, and signed requests with bodies verify too (the dependency forwards the body).

    KEY_SERVICE_URL=http://127.0.0.1:8000 \
        uvicorn --app-dir examples experiences_verified:app --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from apikeys.client import KeyVerifier, VerifiedKey, require_key

verifier = KeyVerifier(os.environ.get("KEY_SERVICE_URL", "http://127.0.0.1:8000"))


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    async with verifier:
        yield


app = FastAPI(title="Experiences", lifespan=lifespan)
verifier.install(app)
experiences: dict[int, list[str]] = {}

Reader = Annotated[VerifiedKey, Depends(require_key(role="browse", project_param="project_id"))]
Editor = Annotated[VerifiedKey, Depends(require_key(role="edit", project_param="project_id"))]


class NewExperience(BaseModel):
    name: str = "Untitled experience"


@app.get("/projects/{project_id}/experiences")
async def list_experiences(project_id: int, caller: Reader) -> dict[str, object]:
    return {
        "project_id": project_id,
        "account": str(caller.account_id),
        "key": caller.key,
        "experiences": experiences.get(project_id, []),
    }


@app.post("/projects/{project_id}/experiences", status_code=201)
async def create_experience(
    project_id: int, caller: Editor, body: NewExperience | None = None
) -> dict[str, object]:
    name = (body or NewExperience()).name
    experiences.setdefault(project_id, []).append(name)
    return {"project_id": project_id, "name": name, "created_by": caller.key}
