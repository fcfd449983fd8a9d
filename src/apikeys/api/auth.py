"""The one authentication step (credentials read off the raw headers, the authenticator, the
throttle), and the route class that runs it before anything else."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Scope

from apikeys import metrics
from apikeys.api.openapi import REQUEST_SIGNING_SCHEME, SECRET_KEY_SCHEME
from apikeys.domain import ApiKeyInfo
from apikeys.errors import TooManyRequests, Unauthenticated, UnsupportedMediaType
from apikeys.security import SignedMessage
from apikeys.service.authentication import BearerCredentials, Credentials, SignatureCredentials
from apikeys.services import Services

_SIGNATURE_PARAMETER = re.compile(r"\s*Signature\s*=\s*([0-9A-Fa-f]{64})\s*;?\s*", re.IGNORECASE)
_KEY_ID = re.compile(r"[A-Za-z0-9_\-]{16,64}")
_EXPIRES = re.compile(r"\d{1,12}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

MISSING_CREDENTIALS = (
    "Authentication required: send 'Authorization: Bearer <secret>' for a secretKey key, or "
    "the Convert-Application-ID, Expires and 'Authorization: Convert-HMAC-SHA256 "
    "Signature=<hex>' headers for a requestSigning key"
)


RawHeaders = dict[bytes, bytes]


def raw_headers(scope: Scope) -> RawHeaders:
    """The request's headers by lower-case name, the first of repeated ones winning.

    Built once per request: looking names up in Starlette's Headers scans the list each
    time, and raises and catches a KeyError for every header that is absent."""
    return dict(reversed(scope["headers"]))


def header(headers: RawHeaders, name: bytes) -> str:
    return headers.get(name, b"").decode("latin-1")


def has_body(headers: RawHeaders) -> bool:
    """Whether the request says a body follows (HTTP/1.1 has none without these headers)."""
    return headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers


def signed_url(scope: Scope, headers: RawHeaders, public_base_url: str | None) -> str:
    """The absolute URL the client signed: scheme, host, path and query as sent."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    path = raw_path.split(b"?", 1)[0].decode("latin-1")
    query: str = scope.get("query_string", b"").decode("latin-1")
    if public_base_url is None:
        host = header(headers, b"host") or "{}:{}".format(*scope["server"])
        public_base_url = f"{scope['scheme']}://{host}"
    return public_base_url + path + (f"?{query}" if query else "")


async def read_credentials(
    headers: RawHeaders, *, url: str, read_body: Callable[[], Awaitable[bytes]]
) -> Credentials:
    """The credentials the headers present; for a signature, the message over `url` and the
    body, which `read_body` gives only when the headers announce one."""
    # Convert's published Python sample sends the signature as Convert-Authorization.
    authorization = header(headers, b"authorization") or header(headers, b"convert-authorization")
    if not authorization:
        raise Unauthenticated(MISSING_CREDENTIALS, "missing")
    scheme, _, parameters = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        secret = parameters.strip()
        if not secret or " " in secret:
            raise Unauthenticated(
                "Malformed Authorization header: expected 'Bearer <secret>'", "malformed"
            )
        return BearerCredentials(secret)
    if scheme == "convert-hmac-sha256":
        signature = _SIGNATURE_PARAMETER.fullmatch(parameters)
        key_id = header(headers, b"convert-application-id")
        expires = header(headers, b"expires")
        if signature is None:
            raise Unauthenticated(
                "Malformed Authorization header: expected "
                "'Convert-HMAC-SHA256 Signature=<64 hex digits>'",
                "malformed",
            )
        if not _KEY_ID.fullmatch(key_id):
            raise Unauthenticated("Missing or malformed Convert-Application-ID header", "malformed")
        if not _EXPIRES.fullmatch(expires):
            raise Unauthenticated(
                "Missing or malformed Expires header: expected UNIX seconds", "malformed"
            )
        message = SignedMessage(
            key_id=key_id,
            expires=expires,
            url=url,
            body=await read_body() if has_body(headers) else b"",
        )
        return SignatureCredentials(message, signature.group(1))
    raise Unauthenticated(
        "Unsupported authorization scheme: use Bearer or Convert-HMAC-SHA256", "malformed"
    )


async def authenticate(
    services: Services,
    headers: RawHeaders,
    *,
    client_address: str,
    method: str,
    url: str,
    read_body: Callable[[], Awaitable[bytes]],
) -> ApiKeyInfo:
    """The one authentication step, for the service's own routes and for /verify alike: the
    calling key, or the ApiError to answer with.

    `headers` are the request's by lower-case name, `method` and `url` the method and the
    absolute URL it was sent with, `client_address` the client the throttle counts, and
    `read_body` gives the raw body (it is called only for a signed request that has one)."""
    try:
        credentials = await read_credentials(headers, url=url, read_body=read_body)
        key = await services.authenticator.authenticate(credentials)
    except Unauthenticated as error:
        metrics.refused(error.reason).inc()
        # Only failures are throttled: a client with valid credentials behind the same
        # address (a NAT, a proxy) is never locked out by a noisy neighbour.
        services.throttle.record_failure(client_address)
        try:
            services.throttle.check(client_address)
        except TooManyRequests:
            metrics.THROTTLE_REFUSALS.inc()
            raise
        raise
    metrics.ACCEPTED.inc()
    return key


def _require_json(request: Request, headers: RawHeaders) -> None:
    if request.method not in _BODY_METHODS:
        return
    content_type = headers.get(b"content-type")
    if content_type is None and not has_body(headers):
        return
    media_type = (content_type or b"").decode("latin-1").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"The body must be application/json, not {media_type or 'untyped'}"
        )


Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class AuthenticatedRoute(APIRoute):
    """A route that authenticates the caller before FastAPI parses anything.

    Authentication first means a caller without valid credentials learns nothing about
    the endpoint, not even whether its body would have been valid; it also lets a signed
    request's raw body be read before parsing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Declared in the document here rather than as FastAPI security dependencies, which
        # would be solved on every request although this class has already authenticated.
        self.openapi_extra = {
            **(self.openapi_extra or {}),
            "security": [{SECRET_KEY_SCHEME: []}, {REQUEST_SIGNING_SCHEME: []}],
        }

    def get_route_handler(self) -> Handler:
        handle = super().get_route_handler()

        async def authenticate_then_handle(request: Request) -> Response:
            services: Services = request.app.state.services
            headers = raw_headers(request.scope)
            request.state.caller = await authenticate(
                services,
                headers,
                client_address=request.client.host if request.client else "unknown",
                method=request.method,
                url=signed_url(request.scope, headers, services.settings.public_base_url),
                read_body=request.body,
            )
            _require_json(request, headers)
            return await handle(request)

        return authenticate_then_handle
