"""A sample API behind nginx's forward authentication (deploy/nginx-forward-auth.conf).

nginx asks apikeys' /verify about every request first and passes the key's identity on in
the X-Apikeys-* headers, so this app only reads them. Listen on 127.0.0.1 alone: a client
that could reach it directly could send those headers itself.

    uvicorn --app-dir examples experiences:app --host 127.0.0.1 --port 9000
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header
from pydantic import BaseModel

app = FastAPI(title="Experiences")
experiences: dict[int, list[str]] = {}


class NewExperience(BaseModel):
    name: str = "Untitled experience"


@app.get("/projects/{project_id}/experiences")
async def list_experiences(
    project_id: int,
    x_apikeys_account: Annotated[str, Header()],
    x_apikeys_key: Annotated[str, Header()],
) -> dict[str, object]:
    return {
        "project_id": project_id,
        "account": x_apikeys_account,
        "key": x_apikeys_key,
        "experiences": experiences.get(project_id, []),
    }


@app.post("/projects/{project_id}/experiences", status_code=201)
async def create_experience(
    project_id: int,
    x_apikeys_key: Annotated[str, Header()],
    body: NewExperience | None = None,
) -> dict[str, object]:
    name = (body or NewExperience()).name
    experiences.setdefault(project_id, []).append(name)
    return {"project_id": project_id, "name": name, "created_by": x_apikeys_key}
