"""`/verify` (forward authentication for proxies and other services) and `/metrics`, served
as plain ASGI before FastAPI's router, for the callers in APIKEYS_VERIFY_ALLOW only.

`/verify` is paid on every request of every service behind it, so it skips the framework's
request objects, routing and response classes. It sits inside the request-id, access-log and
body-limit middleware and outside the proxy-header rewriting, so it sees the TCP peer itself:
the gate must never believe an X-Forwarded-For value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apikeys import metrics
from apikeys.api.auth import authenticate, signed_url
from apikeys.api.context import RawHeaders, context_of, header
from apikeys.api.problems import error_problem, not_found, unavailable_problem
from apikeys.api.schemas import key_json
from apikeys.config import IPNetwork
from apikeys.domain import ApiKeyInfo, Role
from apikeys.errors import (
    ApiError,
    Forbidden,
    InvalidInput,
    TooManyRequests,
    Unauthenticated,
)
from apikeys.service.verification import require_project, require_role
from apikeys.services import Services

VERIFY_PATH = "/verify"
METRICS_PATH = "/metrics"
MAX_PROJECT_ID = 2_147_483_647
_REMEMBERED_PEERS = 1024


class AddressGate:
    """Whether a peer address is inside the allowed networks; answers are remembered for the
    few addresses that call (proxies, scrapers)."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._networks = tuple(networks)
        self._known: dict[str, bool] = {}

    def allows(self, address: str) -> bool:
        allowed = self._known.get(address)
        if allowed is None:
            allowed = self._inside(address)
            if len(self._known) < _REMEMBERED_PEERS:
                self._known[address] = allowed
        return allowed

    def _inside(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


class RouteTemplate:
    """What the access log and the metrics name a request by (they read `path`)."""

    def __init__(self, path: str) -> None:
        self.path = path


_VERIFY_ROUTE, _METRICS_ROUTE = RouteTemplate(VERIFY_PATH), RouteTemplate(METRICS_PATH)


def client_address(scope: Scope, peer: str) -> str:
    """The original client: the rightmost X-Forwarded-For entry the caller (an allowed proxy)
    sends, when it is an IP address; else the caller itself."""
    for name, value in reversed(scope["headers"]):
        if name == b"x-forwarded-for":
            entry = value.decode("latin-1").rpartition(",")[2].strip()
            try:
                return str(ipaddress.ip_address(entry))
            except ValueError:
                return peer
    return peer


def original_method(scope: Scope, headers: RawHeaders) -> str:
    return (
        header(headers, b"x-forwarded-method").strip()
        or header(headers, b"x-original-method").strip()
        or str(scope["method"])
    )


def original_url(scope: Scope, headers: RawHeaders, public_base_url: str | None) -> str:
    """`<proto>://<host><uri>` from the forwarded headers, or APIKEYS_PUBLIC_URL + `<uri>`;
    the URL /verify itself was called with when no original URI is given."""
    uri = header(headers, b"x-forwarded-uri") or header(headers, b"x-original-uri")
    if not uri:
        return signed_url(scope, headers, public_base_url)
    if public_base_url is not None:
        return public_base_url + uri
    proto = header(headers, b"x-forwarded-proto") or str(scope["scheme"])
    host = (
        header(headers, b"x-forwarded-host")
        or header(headers, b"host")
        or "{}:{}".format(*scope["server"])
    )
    return f"{proto}://{host}{uri}"


def requirements(headers: RawHeaders) -> tuple[Role | None, int | None]:
    """The role and project the caller requires, checked before any credential is."""
    role_name = header(headers, b"x-apikeys-require-role").strip()
    project_text = header(headers, b"x-apikeys-require-project").strip()
    role = None
    if role_name:
        try:
            role = Role(role_name)
        except ValueError:
            raise InvalidInput(
                f"X-Apikeys-Require-Role must be one of {', '.join(Role)}, not {role_name!r}"
            ) from None
    project = None
    if project_text:
        if not (project_text.isascii() and project_text.isdigit()) or not (
            1 <= int(project_text) <= MAX_PROJECT_ID
        ):
            raise InvalidInput(
                "X-Apikeys-Require-Project must be a project id, an integer from 1 to "
                f"{MAX_PROJECT_ID}"
            )
        project = int(project_text)
    return role, project


@lru_cache(maxsize=4096)
def identity_response(key: ApiKeyInfo) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 200's headers and body for a key: computed once per key state, like /me's."""
    body = key_json(key)
    projects = ",".join(map(str, sorted(key.project_ids))) if key.project_ids is not None else "*"
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-apikeys-key", key.key.encode()),
        (b"x-apikeys-account", str(key.account_id).encode()),
        (b"x-apikeys-role", key.role.value.encode()),
        (b"x-apikeys-type", key.type.value.encode()),
        (b"x-apikeys-projects", projects.encode()),
    ]
    return headers, body


def _outcome(error: ApiError, reason: str) -> tuple[str, str]:
    if isinstance(error, Unauthenticated):
        return "unauthenticated", error.reason
    if isinstance(error, Forbidden):
        return "forbidden", reason
    if isinstance(error, TooManyRequests):
        return "throttled", "failures"
    if isinstance(error, InvalidInput):
        return "invalid", "requirement"
    return "error", error.slug


class OperatorRoutes:
    """Answers /verify and /metrics for peers in the allowed networks, 404 for any other;
    passes every other path on."""

    def __init__(self, app: ASGIApp, networks: Sequence[IPNetwork]) -> None:
        self.app = app
        self.gate = AddressGate(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in (VERIFY_PATH, METRICS_PATH):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer is None or not self.gate.allows(peer):
            await not_found(scope)(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        if scope["path"] == METRICS_PATH:
            scope["route"] = _METRICS_ROUTE
            await self._metrics(services, send)
            return
        scope["route"] = _VERIFY_ROUTE
        await self._verify(services, peer, scope, receive, send)

    async def _verify(
        self, services: Services, peer: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        context = context_of(scope)
        headers = context.headers

        async def read_body() -> bytes:
            chunks = []
            while True:
                message: Message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)

        reason = ""
        try:
            role, project = requirements(headers)
            key = await authenticate(
                services,
                headers,
                client_address=client_address(scope, peer),
                method=original_method(scope, headers),
                url=original_url(scope, headers, services.settings.public_base_url),
                read_body=read_body,
            )
            context.caller = key
            if role is not None:
                reason = "role"
                require_role(key, role)
            if project is not None:
                reason = "project"
                await require_project(key, project, services.projects)
        except ApiError as error:
            metrics.verification(*_outcome(error, reason)).inc()
            await error_problem(scope, error)(scope, receive, send)
            return
        except Exception as error:
            response = unavailable_problem(scope, error)  # or re-raised, for the 500
            metrics.verification("unavailable", "database").inc()
            await response(scope, receive, send)
            return
        metrics.verification("allowed", "valid").inc()
        response_headers, body = identity_response(key)
        await send({"type": "http.response.start", "status": 200, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    async def _metrics(self, services: Services, send: Send) -> None:
        for state, count in services.database.pool_status().items():
            metrics.DATABASE_POOL.labels(state).set(count)
        body, media_type = metrics.exposition()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", media_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
