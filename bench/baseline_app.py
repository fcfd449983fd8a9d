"""The bare-FastAPI ceiling: the same routes, bodies and server options as the service, with
no authentication, database or middleware. Run: python -m bench.baseline_app --port P."""

from __future__ import annotations

import argparse
from typing import Literal

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from apikeys.server import SERVER_OPTIONS

app = FastAPI()

_KEY = {
    "key": "4Sod2jc8DdIikyI9JNQeP3Yy",
    "name": "Nightly Data Sync Script",
    "type": "requestSigning",
    "role": "owner",
    "projects": [1],
    "account_id": 1,
    "created_at": "2026-11-27T05:31:53Z",
    "expires_at": None,
    "last_used_at": None,
    "revoked_at": None,
    "secret_hint": "…WkXJ",
}


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["requestSigning", "secretKey"] = "requestSigning"
    projects: list[int] | None = None
    role: Literal["browse", "edit", "publish", "admin"] = "browse"


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/me")
async def me() -> dict[str, object]:
    return _KEY


@app.post("/accounts/{account_id}/api-keys", status_code=201)
async def create(account_id: int, body: KeyBody) -> JSONResponse:
    return JSONResponse(
        {**_KEY, "name": body.name, "projects": body.projects, "account_id": account_id},
        status_code=201,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, workers=1, **SERVER_OPTIONS)


if __name__ == "__main__":
    main()
