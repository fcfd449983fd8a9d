"""The service's Prometheus metrics: named objects any layer may count on.

Labels are fixed words (route templates, methods, statuses, reasons), never a key id, a
secret or a client address, so a series cannot identify a caller and their number stays
bounded. On the request path, labelled children are looked up once per label set and kept:
`labels()` validates and takes a lock on every call.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

# Methods outside this set are counted as "other", since a client may send any token.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HTTP_REQUESTS = Counter(
    "apikeys_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "apikeys_http_request_duration_seconds",
    "Time from a request's arrival to its last response byte handed to the server, by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
AUTHENTICATIONS = Counter(
    "apikeys_authentications",
    "Credentials checked, by outcome (accepted or refused) and reason, on every route and "
    "/verify alike.",
    ["outcome", "reason"],
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "apikeys_verifications",
    "/verify answers by outcome (allowed, unauthenticated, forbidden, throttled, invalid, "
    "unavailable) and reason.",
    ["outcome", "reason"],
    registry=REGISTRY,
)
CREDENTIAL_CACHE = Counter(
    "apikeys_credential_cache_lookups",
    "Key lookups answered from the in-process cache (hit) or the database (miss).",
    ["result"],
    registry=REGISTRY,
)
KEY_WRITER_BATCH = Histogram(
    "apikeys_key_writer_batch_size",
    "New keys written per transaction by the group-committing writer.",
    buckets=(1, 2, 5, 10, 20, 50, 100),
    registry=REGISTRY,
)
DATABASE_POOL = Gauge(
    "apikeys_database_pool_connections",
    "The database connection pool, read at each scrape: size (configured), checked_out, idle "
    "and overflow.",
    ["state"],
    registry=REGISTRY,
)
REPLAY_REFUSALS = Counter(
    "apikeys_replay_refusals",
    "Signed requests refused because their signature was already used (or used with another "
    "method).",
    registry=REGISTRY,
)
THROTTLE_REFUSALS = Counter(
    "apikeys_throttle_refusals",
    "Requests refused with 429 because their client failed to authenticate too often.",
    registry=REGISTRY,
)

CACHE_HIT = CREDENTIAL_CACHE.labels("hit")
CACHE_MISS = CREDENTIAL_CACHE.labels("miss")
ACCEPTED = AUTHENTICATIONS.labels("accepted", "valid")


@lru_cache(maxsize=1024)
def _request_series(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    method = method if method in _METHODS else "other"
    return HTTP_REQUESTS.labels(route, method, str(status)), HTTP_LATENCY.labels(route)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    requests, latency = _request_series(route, method, status)
    requests.inc()
    latency.observe(seconds)


@lru_cache(maxsize=64)
def refused(reason: str) -> Counter:
    """The refused-authentication counter for `reason`."""
    return AUTHENTICATIONS.labels("refused", reason)


@lru_cache(maxsize=64)
def verification(outcome: str, reason: str) -> Counter:
    return VERIFICATIONS.labels(outcome, reason)


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its media type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
