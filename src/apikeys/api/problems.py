"""RFC 9457 problem+json (Convert's error shape under /api/v2): the one place errors become
HTTP responses."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.types import Scope

from apikeys.api.context import context_of
from apikeys.api.responses import JsonResponse
from apikeys.domain import MAX_ID
from apikeys.errors import ApiError, FieldError, InvalidInput, ServiceUnavailable
from apikeys.storage.faults import (
    UNAVAILABLE_ERRORS,
    error_name,
    is_full,
    is_read_only,
    is_unavailable,
)

logger = logging.getLogger("apikeys.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Under this prefix errors have Convert's shape: the surface that speaks Convert's API v2.
CONVERT_PREFIX = "/api/v2"
_PARAMETER_KINDS = frozenset({"body", "path", "query", "header"})


class ProblemResponse(JsonResponse):
    media_type = PROBLEM_MEDIA_TYPE


def request_id_of(scope: Scope) -> str:
    return context_of(scope).request_id


def problem(
    scope: Scope,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] = (),
) -> JsonResponse:
    if _speaks_convert(scope):
        return convert_error(status, detail, headers=headers, errors=errors)
    body = _document(
        status, detail, scope.get("path", ""), request_id_of(scope), title=title, slug=slug
    )
    if errors:
        body["errors"] = [{"loc": list(error.loc), "msg": error.msg} for error in errors]
    return ProblemResponse(body, status_code=status, headers=headers)


def _document(
    status: int,
    detail: str,
    instance: str,
    request_id: str | None,
    *,
    title: str | None,
    slug: str | None,
) -> dict[str, Any]:
    return {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }


def error_document(error: ApiError, instance: str, request_id: str) -> dict[str, Any]:
    """The problem body for an error answered below the application (apikeys.server), where
    there is no request scope."""
    return _document(
        error.status, error.detail, instance, request_id, title=error.title, slug=error.slug
    )


def _speaks_convert(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return path.startswith(CONVERT_PREFIX) and path[
        len(CONVERT_PREFIX) : len(CONVERT_PREFIX) + 1
    ] in ("", "/")


def convert_error(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] = (),
) -> JsonResponse:
    """Convert's error body, `{"code", "message", "fields"}`, with the same status and headers
    as the problem it stands for; `fields` names each bad field by its name alone."""
    fields = [_field_name(error.loc) for error in errors]
    body = {"code": status, "message": message, "fields": list(dict.fromkeys(fields))}
    return JsonResponse(body, status_code=status, headers=headers)


def _field_name(loc: Sequence[str | int]) -> str:
    named = [part for part in loc if isinstance(part, str)]
    if len(named) > 1 and named[0] in _PARAMETER_KINDS:
        return named[1]
    return named[0] if named else "body"


def error_problem(scope: Scope, error: ApiError) -> JsonResponse:
    return problem(
        scope,
        error.status,
        error.detail,
        title=error.title,
        slug=error.slug,
        headers=error.headers,
        errors=error.errors if isinstance(error, InvalidInput) else (),
    )


async def _on_api_error(request: Request, error: Exception) -> JsonResponse:
    assert isinstance(error, ApiError)
    return error_problem(request.scope, error)


async def _on_validation_error(request: Request, error: Exception) -> JsonResponse:
    assert isinstance(error, RequestValidationError)
    if isinstance(error.__cause__, json.JSONDecodeError):
        return _unparsable_body(request.scope, _json_error_text(error.__cause__))
    field_errors = [FieldError(tuple(item["loc"]), _message(item)) for item in error.errors()]
    fields = ", ".join(dict.fromkeys(".".join(map(str, e.loc)) for e in field_errors))
    return error_problem(
        request.scope, InvalidInput(f"The request is not valid: {fields}", field_errors)
    )


def _message(item: dict[str, Any]) -> str:
    # Never echo the rejected input itself: it may be a secret pasted in the wrong place.
    kind = item.get("type")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "json_invalid":
        return "the body is not valid JSON"
    return str(item["msg"])


def _json_error_text(error: json.JSONDecodeError) -> str:
    return (
        f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno} "
        f"(character {error.pos})"
    )


def _parse_failure_text(error: BaseException) -> str | None:
    """What made a body that FastAPI could not parse fail, in terms a person can fix."""
    if isinstance(error, RecursionError):
        return "nested too deeply to parse: no field of this API takes more than a few levels"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(error, ValueError) and "digits" in str(error):
        return (
            f"not parsable: it holds an integer of more than {sys.get_int_max_str_digits():,} "
            f"digits; ids are integers from 1 to {MAX_ID:,}"
        )
    return None


def _unparsable_body(scope: Scope, reason: str) -> JsonResponse:
    return error_problem(
        scope,
        InvalidInput(f"The body is {reason}", [FieldError(("body",), reason)]),
    )


async def _on_http_exception(request: Request, error: Exception) -> JsonResponse:
    assert isinstance(error, HTTPException)
    # FastAPI answers any failure to parse a JSON body other than a syntax error (too deep,
    # too many digits, not UTF-8) with a bare 400 that says nothing of the cause.
    reason = _parse_failure_text(error.__cause__) if error.__cause__ else None
    if error.status_code == 400 and reason is not None:
        return _unparsable_body(request.scope, reason)
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    if error.status_code == 404:
        detail = f"There is nothing at {request.url.path}"
    elif error.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(request.scope, error.status_code, detail, headers=error.headers)


def unavailable_problem(scope: Scope, error: Exception) -> JsonResponse:
    """The 503 for a database that is not answering; re-raises any other error."""
    # Any other driver error (a constraint, say) is a fault of ours, for the last-resort 500.
    if not is_unavailable(error):
        raise error
    return database_problem(scope, error)


def database_problem(scope: Scope, error: BaseException) -> JsonResponse:
    """The 503 for a database that cannot serve the request now: down, refusing
    connections, too slow (past the request's deadline), or full."""
    # Only the error's class is logged: its text can hold SQL.
    logger.warning("database unavailable: %s", error_name(error))
    if is_full(error):
        unavailable = ServiceUnavailable(
            "The database's storage is full, so nothing can be written until space is freed; "
            "retry later",
            retry_after=30,
        )
    elif is_read_only(error):
        unavailable = ServiceUnavailable("The database takes no writes now; retry shortly")
    else:
        unavailable = ServiceUnavailable("The database is not answering; retry shortly")
    return error_problem(scope, unavailable)


def not_found(scope: Scope) -> JsonResponse:
    """The 404 of a path the app does not serve, as the handler below answers it."""
    return problem(scope, 404, f"There is nothing at {scope['path']}")


async def _on_database_error(request: Request, error: Exception) -> JsonResponse:
    return unavailable_problem(request.scope, error)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    for error_type in (*UNAVAILABLE_ERRORS, DBAPIError):
        app.add_exception_handler(error_type, _on_database_error)
