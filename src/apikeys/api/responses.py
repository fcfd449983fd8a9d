"""The JSON response class the service's own responses use."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic_core import to_json


class JsonResponse(JSONResponse):
    """A JSONResponse encoded by pydantic-core, several times cheaper than the json module's
    encoder, for the bodies built as dicts: new keys and problems. The bytes are the same
    compact UTF-8."""

    def render(self, content: Any) -> bytes:
        return to_json(content)
