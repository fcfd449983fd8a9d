"""Authenticate to this service from any Python program, as `httpx` auth classes.

    import httpx
    from apikeys.client import ConvertSigningAuth

    auth = ConvertSigningAuth(key, secret)
    httpx.post(f"{base}/accounts/10/api-keys", json={"name": "Nightly Data Sync Script"}, auth=auth)

Both classes hide the secret from repr(), so it does not end up in logs or tracebacks.
"""

from __future__ import annotations

import time
from collections.abc import Generator

import httpx

from apikeys.security import SignedMessage, sign

# Well inside the service's default 900 s window, and enough for a slow upload.
DEFAULT_LIFETIME_SECONDS = 300


def signature_headers(key: str, secret: str, url: str, body: bytes, expires: int) -> dict[str, str]:
    """The three headers that sign a request to `url` (absolute, with any query) with `body`."""
    message = SignedMessage(key_id=key, expires=str(expires), url=url, body=body)
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
