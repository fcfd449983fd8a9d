"""The one authentication step (the throttle, credentials read off the raw headers, the
authenticator, the replay rule), and the route class that runs it before anything else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Scope

from apikeys import metrics
from apikeys.api.context import RawHeaders, context_of, header
from apikeys.api.deps import services_of
from apikeys.api.openapi import REQUEST_SIGNING_SCHEME, SECRET_KEY_SCHEME
from apikeys.domain import ApiKeyInfo
from apikeys.errors import TooManyRequests, Unauthenticated, UnsupportedMediaType
from apikeys.security import SignedMessage
from apikeys.service.authentication import BearerCredentials, Credentials, SignatureCredentials
from apikeys.service.replay import REPLAYED
from apikeys.services import Services

# Credential headers are read with plain string operations, each a single pass, never with
# a regular expression that could backtrack: a crafted header costs no more than a normal one.
MAX_CREDENTIAL_HEADER_BYTES = 8 * 1024
_CREDENTIAL_HEADERS = {
    b"authorization": "Authorization",
    b"convert-authorization": "Convert-Authorization",
    b"convert-application-id": "Convert-Application-ID",
    b"expires": "Expires",
}
_SIGNATURE_LENGTH = 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_KEY_LENGTHS = range(16, 65)
_DECIMAL_DIGITS = frozenset("0123456789")
_EXPIRES_LENGTHS = range(1, 13)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

MISSING_CREDENTIALS = (
    "Authentication required: send 'Authorization: Bearer <secret>' for a secretKey key, or "
    "the Convert-Application-ID, Expires and 'Authorization: Convert-HMAC-SHA256 "
    "Signature=<hex>' headers for a requestSigning key"
)


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


def _refuse_oversized(headers: RawHeaders) -> None:
    for name, shown in _CREDENTIAL_HEADERS.items():
        if len(headers.get(name, b"")) > MAX_CREDENTIAL_HEADER_BYTES:
            raise Unauthenticated(
                f"The {shown} header is over "
                f"{MAX_CREDENTIAL_HEADER_BYTES // 1024} KiB; no credential is that long",
                "malformed",
            )


def _signature_parameter(parameters: str) -> str | None:
    """The hex of `Signature=<64 hex digits>`, white space allowed around the name, the
    equals sign and the value, and one `;` after it; None for anything else."""
    name, equals, value = parameters.partition("=")
    if not equals or name.strip().lower() != "signature":
        return None
    value = value.strip()
    if value.endswith(";"):
        value = value[:-1].rstrip()
    if len(value) != _SIGNATURE_LENGTH or not _HEX_DIGITS.issuperset(value):
        return None
    return value


def _is_key(value: str) -> bool:
    return len(value) in _KEY_LENGTHS and _KEY_CHARACTERS.issuperset(value)


def _is_expires(value: str) -> bool:
    return len(value) in _EXPIRES_LENGTHS and _DECIMAL_DIGITS.issuperset(value)


async def read_credentials(
    headers: RawHeaders, *, url: str, read_body: Callable[[], Awaitable[bytes]]
) -> Credentials:
    """The credentials the headers present; for a signature, the message over `url` and the
    body, which `read_body` gives only when the headers announce one."""
    _refuse_oversized(headers)
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
        signature = _signature_parameter(parameters)
        key = header(headers, b"convert-application-id")
        expires = header(headers, b"expires")
        if signature is None:
            raise Unauthenticated(
                "Malformed Authorization header: expected "
                "'Convert-HMAC-SHA256 Signature=<64 hex digits>'",
                "malformed",
            )
        if not _is_key(key):
            raise Unauthenticated("Missing or malformed Convert-Application-ID header", "malformed")
        if not _is_expires(expires):
            raise Unauthenticated(
                "Missing or malformed Expires header: expected UNIX seconds", "malformed"
            )
        message = SignedMessage(
            key=key,
            expires=expires,
            url=url,
            body=await read_body() if has_body(headers) else b"",
        )
        return SignatureCredentials(message, signature)
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
    `read_body` gives the raw body (it is called only for a signed request that has one).
    An address past the failure limit is refused before anything else, its credentials
    unread."""
    throttle = services.throttle
    try:
        throttle.check(client_address)
        try:
            credentials = await read_credentials(headers, url=url, read_body=read_body)
            key = await services.authenticator.authenticate(credentials, method=method)
        except Unauthenticated as error:
            metrics.refused(error.reason).inc()
            if error.reason == REPLAYED:
                metrics.REPLAY_REFUSALS.inc()
            await throttle.record_failure(client_address)
            raise
    except TooManyRequests:
        metrics.THROTTLE_REFUSALS.inc()
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
            services = services_of(request)
            context = context_of(request.scope)
            context.caller = await authenticate(
                services,
                context.headers,
                client_address=context.client_address,
                method=request.method,
                url=signed_url(request.scope, context.headers, services.settings.public_base_url),
                read_body=request.body,
            )
            _require_json(request, context.headers)
            return await handle(request)

        return authenticate_then_handle
