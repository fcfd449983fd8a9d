"""ASGI middleware: request ids, the access log, the body size limit, and the last-resort 500."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apikeys import metrics
from apikeys.api.context import ClientAddresses, RequestContext, context_of, header, read_headers
from apikeys.api.problems import error_problem, problem
from apikeys.errors import PayloadTooLarge, ServiceUnavailable
from apikeys.log import AccessLog

error_log = logging.getLogger("apikeys.errors")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Logged for a request left unanswered because its client went away or was cut off (nginx's
# code for it), rather than the 500 nobody was sent.
CLIENT_WENT_AWAY = 499


class RequestContextMiddleware:
    """Makes the request's context (apikeys.api.context): an id (the client's, when it is
    sane), echoed in `X-Request-ID`, the client address and the headers. Writes one
    access-log line, and turns an unhandled exception into a problem+json 500 that carries
    the id instead of a traceback."""

    def __init__(self, app: ASGIApp, access_log: AccessLog, addresses: ClientAddresses) -> None:
        self.app = app
        self.access_log = access_log
        self.addresses = addresses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = read_headers(scope)
        offered = header(headers, b"x-request-id")
        # 128 random bits in hex, as uuid4().hex but far cheaper.
        request_id = (
            offered if offered and _SANE_REQUEST_ID.fullmatch(offered) else os.urandom(16).hex()
        )
        context = RequestContext(request_id, self.addresses.of(scope), headers)
        scope.setdefault("state", {})["context"] = context
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
            if not response_started:
                status = CLIENT_WENT_AWAY
        except asyncio.CancelledError:
            # Only the server cancels a request: when it stops, past its grace period.
            if response_started:
                raise
            error_log.warning("request cut short by shutdown", extra={"request_id": request_id})
            stopping = ServiceUnavailable("The server is shutting down; retry", retry_after=1)
            await error_problem(scope, stopping)(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error", extra={"request_id": request_id})
            if response_started:
                raise
            response = problem(
                scope, 500, "An unexpected error occurred; quote the request id when reporting it"
            )
            await response(scope, receive, send_with_id)
        finally:
            self._log(scope, status, started, context)

    def _log(self, scope: Scope, status: int, started: float, context: RequestContext) -> None:
        method = scope["method"]
        route = getattr(scope.get("route"), "path", None) or "(unmatched)"
        seconds = time.perf_counter() - started
        metrics.observe_request(route, method, status, seconds)
        fields: dict[str, Any] = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "request_id": context.request_id,
            "key": context.caller.key if context.caller else None,
        }
        self.access_log.write(f"{method} {route} {status}", fields)


@dataclass(frozen=True, slots=True)
class _RouteTemplate:
    path: str


def _recording_route(app: ASGIApp, template: _RouteTemplate) -> ASGIApp:
    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("route", template)
        await app(scope, receive, send)

    return recorded


def name_plain_routes(app: FastAPI) -> None:
    """FastAPI records the route it matched in the scope only for its own routes; this does the
    same for the rest (the OpenAPI document, the docs pages' static files), so the access log
    names them (`/openapi.json`, `/static/docs/{path}`) rather than calling them unmatched."""
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            continue
        if isinstance(route, Mount):
            route.app = _recording_route(route.app, _RouteTemplate(f"{route.path}/{{path}}"))
        elif isinstance(route, Route):
            route.app = _recording_route(route.app, _RouteTemplate(route.path))


class BodyLimitMiddleware:
    """Refuses bodies over `limit` bytes with 413, before anything else looks at the request.

    The body (at most `limit` bytes) is read up front and replayed to the app, so the answer
    is the same whether the size was announced by Content-Length or found while streaming.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = context_of(scope).headers
        announced = headers.get(b"content-length")
        if announced is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        length = announced.decode("latin-1") if announced is not None else ""
        if length.isdigit() and int(length) > self.limit:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"The body is over the {self.limit // 1024} KiB limit")
        await error_problem(scope, error)(scope, receive, send)
