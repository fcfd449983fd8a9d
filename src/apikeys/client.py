"""Authenticate to this service from any Python program, as `httpx` auth classes; and verify
the keys that call another service, with KeyVerifier and the FastAPI dependency require_key.

    import httpx
    from apikeys.client import ConvertSigningAuth

    auth = ConvertSigningAuth(key, secret)
    httpx.post(f"{base}/accounts/10/api-keys", json={"name": "Nightly Data Sync Script"}, auth=auth)

Both classes hide the secret from repr(), so it does not end up in logs or tracebacks.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from apikeys.domain import KeyType, Role
from apikeys.security import SignedMessage, sign

# Well inside the service's default 900 s window, and enough for a slow upload.
DEFAULT_LIFETIME_SECONDS = 300


def signature_headers(key: str, secret: str, url: str, body: bytes, expires: int) -> dict[str, str]:
    """The three headers that sign a request to `url` (absolute, with any query) with `body`."""
    message = SignedMessage(key=key, expires=str(expires), url=url, body=body)
    return {
        "Convert-Application-ID": key,
        "Expires": str(expires),
        "Authorization": f"Convert-HMAC-SHA256 Signature={sign(secret.encode(), message)}",
    }


class ConvertSigningAuth(httpx.Auth):
    """Signs each request with a requestSigning key (SPEC §3), over the exact URL and body sent."""

    requires_request_body = True

    def __init__(self, key: str, secret: str, lifetime: int = DEFAULT_LIFETIME_SECONDS) -> None:
        self.key = key
        self._secret = secret
        self.lifetime = lifetime

    def __repr__(self) -> str:
        return f"ConvertSigningAuth(key={self.key!r}, secret=<hidden>)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        expires = int(time.time()) + self.lifetime
        request.headers.update(
            signature_headers(self.key, self._secret, str(request.url), request.content, expires)
        )
        yield request


class BearerAuth(httpx.Auth):
    """Sends a secretKey key's secret as `Authorization: Bearer <secret>`."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "BearerAuth(secret=<hidden>)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._secret}"
        yield request


# --- Verifying keys for another service --------------------------------------------------

# How long a successful Bearer verification is reused. The service itself trusts a looked-up
# key for up to APIKEYS_AUTH_CACHE_TTL (0.5 s by default); this cache's clock starts before
# the request is sent, so a revoked key is refused end to end within the two added: 0.9 s.
DEFAULT_CACHE_TTL_SECONDS = 0.4
MAX_CACHE_TTL_SECONDS = 0.5
DEFAULT_CACHE_SIZE = 10_000
_CREDENTIAL_HEADERS = (
    "authorization",
    "convert-authorization",
    "convert-application-id",
    "expires",
)
_PROBLEM_MEDIA_TYPE = "application/problem+json"
# Headers of a refusal worth passing on to the client.
_REFUSAL_HEADERS = ("www-authenticate", "retry-after")


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """The key a request was verified with, as /verify names it."""

    key: str
    account_id: int
    role: Role
    type: KeyType
    project_ids: frozenset[int] | None  # None: every project of the account
    name: str


class KeyRefused(Exception):
    """/verify refused the request (or could not be asked): the problem to answer with."""

    def __init__(self, status: int, problem: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(problem.get("detail", ""))
        self.status = status
        self.problem = problem
        self.headers = headers

    def response(self) -> Response:
        return Response(
            json.dumps(self.problem).encode(),
            status_code=self.status,
            headers=self.headers,
            media_type=_PROBLEM_MEDIA_TYPE,
        )


def _verified(response: httpx.Response) -> VerifiedKey:
    headers, body = response.headers, response.json()
    projects = headers["x-apikeys-projects"]
    return VerifiedKey(
        key=headers["x-apikeys-key"],
        account_id=int(headers["x-apikeys-account"]),
        role=Role(headers["x-apikeys-role"]),
        type=KeyType(headers["x-apikeys-type"]),
        project_ids=None if projects == "*" else frozenset(map(int, projects.split(","))),
        name=body["name"],
    )


def _refusal(response: httpx.Response) -> KeyRefused:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"status": response.status_code, "detail": "The key service refused"}
    kept = {name: response.headers[name] for name in _REFUSAL_HEADERS if name in response.headers}
    return KeyRefused(response.status_code, problem, kept)


class KeyVerifier:
    """Asks an apikeys service's /verify whether a request carries a valid key.

    One pooled httpx client for every call. Successful Bearer verifications are reused for
    `cache_ttl` seconds (at most MAX_CACHE_TTL_SECONDS, so that revocation still reaches
    every caller within a second), at most `cache_size` of them, keyed by a digest of the
    secret and the requirements; signed requests are verified every time, since each
    signature may be used once. Use as an async context manager, or call aclose().
    """

    def __init__(
        self,
        base_url: str,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL_SECONDS,
        cache_size: int = DEFAULT_CACHE_SIZE,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not 0 <= cache_ttl <= MAX_CACHE_TTL_SECONDS:
            raise ValueError(f"cache_ttl must be between 0 and {MAX_CACHE_TTL_SECONDS} s")
        self._url = base_url.rstrip("/") + "/verify"
        self._cache_ttl = cache_ttl
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[bytes, str, str], tuple[float, VerifiedKey]] = OrderedDict()
        self._http = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    def __repr__(self) -> str:
        return f"KeyVerifier({self._url!r})"

    async def __aenter__(self) -> KeyVerifier:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def install(self, app: FastAPI) -> None:
        """Make this verifier the one `require_key` uses in `app`, and answer its refusals
        with the service's own problem responses."""
        app.state.key_verifier = self

        async def answer(_request: Request, error: Exception) -> Response:
            assert isinstance(error, KeyRefused)
            return error.response()

        app.add_exception_handler(KeyRefused, answer)

    def cached(self, secret: str, role: str | None, project: str | None) -> VerifiedKey | None:
        """A Bearer verification with these requirements still fresh in the cache, if any."""
        lookup = (hashlib.sha256(secret.encode()).digest(), role or "", project or "")
        entry = self._cache.get(lookup)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._cache[lookup]
            return None
        return entry[1]

    async def verify(
        self,
        credentials: Mapping[str, str],
        *,
        method: str,
        url: str,
        body: bytes = b"",
        client_address: str | None = None,
        role: str | None = None,
        project: str | None = None,
    ) -> VerifiedKey:
        """The key of a request made with `credentials` (its credential headers, by
        lower-case name) as `method` to the absolute `url` (exactly as sent: the signature
        covers it) with `body`, holding `role` and covering `project`; raises KeyRefused."""
        authorization = credentials.get("authorization", "")
        bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        if bearer:
            hit = self.cached(bearer, role, project)
            if hit is not None:
                return hit
        proto, _, rest = url.partition("://")
        host, slash, path = rest.partition("/")
        headers = {name: credentials[name] for name in _CREDENTIAL_HEADERS if name in credentials}
        headers.update(
            {
                "X-Forwarded-Method": method,
                "X-Forwarded-Proto": proto,
                "X-Forwarded-Host": host,
                "X-Forwarded-Uri": slash + path or "/",
            }
        )
        if client_address:
            headers["X-Forwarded-For"] = client_address
        if role:
            headers["X-Apikeys-Require-Role"] = role
        if project is not None:
            headers["X-Apikeys-Require-Project"] = project
        started = time.monotonic()
        try:
            response = await self._http.post(self._url, headers=headers, content=body)
        except httpx.HTTPError:
            raise KeyRefused(
                503,
                {"status": 503, "title": "Service Unavailable", "detail": "The key service is "
                 "not answering; retry shortly"},
                {"Retry-After": "5"},
            ) from None  # fmt: skip
        if response.status_code != 200:
            raise _refusal(response)
        verified = _verified(response)
        if bearer and self._cache_ttl:
            lookup = (hashlib.sha256(bearer.encode()).digest(), role or "", project or "")
            self._cache[lookup] = (started + self._cache_ttl, verified)
            self._cache.move_to_end(lookup)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return verified


def require_key(
    role: str | None = None, project_param: str | None = None
) -> Callable[[Request], Coroutine[Any, Any, VerifiedKey]]:
    """A FastAPI dependency: the request's key, verified by the app's KeyVerifier (see
    KeyVerifier.install), holding at least `role` and covering the project named by the path
    parameter `project_param`; else the service's own 401/403/429 problem.

        caller: Annotated[VerifiedKey, Depends(require_key(role="edit", project_param="id"))]
    """
    if role is not None:
        Role(role)  # an unknown role fails here, when the route is declared

    async def verified_caller(request: Request) -> VerifiedKey:
        verifier: KeyVerifier = request.app.state.key_verifier
        project = str(request.path_params[project_param]) if project_param else None
        headers = request.headers
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            hit = verifier.cached(authorization[7:].strip(), role, project)
            if hit is not None:
                return hit
        credentials = {name: headers[name] for name in _CREDENTIAL_HEADERS if name in headers}
        signed_body = "convert-application-id" in headers and (
            headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        )
        scope = request.scope
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"").decode("latin-1")
        host = headers.get("host") or "{}:{}".format(*scope["server"])
        path = raw_path.split(b"?", 1)[0].decode("latin-1")
        url = f"{scope['scheme']}://{host}{path}" + (f"?{query}" if query else "")
        return await verifier.verify(
            credentials,
            method=request.method,
            url=url,
            body=await request.body() if signed_body else b"",
            client_address=request.client.host if request.client else None,
            role=role,
            project=project,
        )

    return verified_caller
