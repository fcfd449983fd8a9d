"""The service's error hierarchy. The HTTP layer renders every one as problem+json."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

AUTHENTICATE_CHALLENGE = 'Bearer realm="apikeys", Convert-HMAC-SHA256 realm="apikeys"'


@dataclass(frozen=True, slots=True)
class FieldError:
    loc: tuple[str | int, ...]
    msg: str


class ApiError(Exception):
    """An answer the service gives on purpose; each subclass names its status. (An
    unexpected exception is not one: the middleware answers it with a bare 500.)"""

    status: ClassVar[int]
    title: ClassVar[str]
    slug: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        return {}


class Unauthenticated(ApiError):
    """`reason` is a short fixed word naming the kind of failure, for the metrics."""

    status = 401
    title = "Unauthorized"
    slug = "unauthenticated"

    def __init__(self, detail: str, reason: str = "invalid_credentials") -> None:
        super().__init__(detail)
        self.reason = reason

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": AUTHENTICATE_CHALLENGE}


class Forbidden(ApiError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFound(ApiError):
    status = 404
    title = "Not Found"
    slug = "not-found"


class Conflict(ApiError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    title = "Content Too Large"
    slug = "payload-too-large"


class UnsupportedMediaType(ApiError):
    status = 415
    title = "Unsupported Media Type"
    slug = "unsupported-media-type"


class RequestTimeout(ApiError):
    status = 408
    title = "Request Timeout"
    slug = "request-timeout"


class HeadersTooLarge(ApiError):
    status = 431
    title = "Request Header Fields Too Large"
    slug = "headers-too-large"


class InvalidInput(ApiError):
    status = 422
    title = "Unprocessable Content"
    slug = "invalid-input"

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.errors = tuple(errors)


class TooManyRequests(ApiError):
    status = 429
    title = "Too Many Requests"
    slug = "too-many-requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(ApiError):
    status = 503
    title = "Service Unavailable"
    slug = "service-unavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
