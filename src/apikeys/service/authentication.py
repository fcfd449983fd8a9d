"""Who is calling: turns presented credentials into the calling key, or refuses."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from apikeys import metrics, security
from apikeys.domain import ApiKeyInfo, KeyType
from apikeys.errors import Unauthenticated
from apikeys.security import SecretKeeper, SignedMessage
from apikeys.service.replay import ReplayGuard
from apikeys.service.usage import UsageRecorder
from apikeys.storage import repository
from apikeys.storage.database import Database
from apikeys.storage.repository import StoredCredential

INVALID_CREDENTIALS = "The API key or its secret is not valid"

# How long a looked-up key is trusted without asking the database again. With the lookup's
# own duration on top, it bounds how late another replica sees a revocation (at most 1 s).
CACHE_TTL_SECONDS = 0.5
CACHE_MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class BearerCredentials:
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SignatureCredentials:
    message: SignedMessage
    signature: str


Credentials = BearerCredentials | SignatureCredentials

# A Bearer lookup is by digest, a signature's by public id; the tag keeps the two apart.
LookupKey = tuple[str, bytes | str]


class CredentialCache:
    """Recently looked-up keys, each trusted for `ttl` seconds, at most `max_keys` of them
    (least recently used first out).

    It holds what the database holds: metadata, and for signing keys the ciphertext, never
    a secret in clear; the secret is decrypted per request. Only found keys are kept, so
    guessing cannot fill it. Concurrent misses on one key share a single query. `forget`
    drops a key at once, and a query already in flight then cannot put the old state back.
    """

    def __init__(
        self, ttl: float, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[LookupKey, tuple[float, StoredCredential]] = OrderedDict()
        self._lookups_of: dict[str, set[LookupKey]] = {}
        self._loading: dict[LookupKey, asyncio.Task[StoredCredential | None]] = {}
        self._generation = 0

    async def get(
        self, lookup: LookupKey, load: Callable[[], Awaitable[StoredCredential | None]]
    ) -> StoredCredential | None:
        if self._ttl <= 0:
            return await load()
        entry = self._entries.get(lookup)
        if entry is not None and self._clock() < entry[0]:
            self._entries.move_to_end(lookup)
            metrics.CACHE_HIT.inc()
            return entry[1]
        metrics.CACHE_MISS.inc()
        task = self._loading.get(lookup)
        if task is None:
            task = asyncio.ensure_future(load())
            self._loading[lookup] = task
            # The clock read before the query starts the TTL, so the query's time counts in it.
            expiry, generation = self._clock() + self._ttl, self._generation
            task.add_done_callback(lambda done: self._loaded(lookup, done, expiry, generation))
        # Shielded: a waiter that goes away must not cancel the query the others wait on.
        return await asyncio.shield(task)

    def forget(self, key: str) -> None:
        # Queries in flight may have read the key before the change: later requests must not
        # wait on them, and their answers must not be kept.
        self._generation += 1
        self._loading.clear()
        for lookup in self._lookups_of.pop(key, ()):
            self._entries.pop(lookup, None)

    def _loaded(
        self,
        lookup: LookupKey,
        task: asyncio.Task[StoredCredential | None],
        expiry: float,
        generation: int,
    ) -> None:
        if self._loading.get(lookup) is task:
            del self._loading[lookup]
        if task.cancelled() or task.exception() is not None:
            return
        stored = task.result()
        if stored is None:
            self._discard(lookup)
        elif generation == self._generation:
            self._entries[lookup] = (expiry, stored)
            self._entries.move_to_end(lookup)
            self._lookups_of.setdefault(stored.info.key, set()).add(lookup)
            while len(self._entries) > self._max_keys:
                self._discard(next(iter(self._entries)))

    def _discard(self, lookup: LookupKey) -> None:
        entry = self._entries.pop(lookup, None)
        if entry is None:
            return
        lookups = self._lookups_of.get(entry[1].info.key)
        if lookups is not None:
            lookups.discard(lookup)
            if not lookups:
                del self._lookups_of[entry[1].info.key]


class Authenticator:
    """Checks credentials in a fixed order: look up, verify the secret, the key's state,
    then (for a signature) the replay rule. So a wrong secret gets the same answer whatever
    the key's state, a lookup miss still spends the same work as a hit, and nobody can use
    up someone else's signature with a request that would not have been accepted."""

    def __init__(
        self,
        database: Database,
        keeper: SecretKeeper,
        *,
        secret_key_prefix: str,
        signature_max_age: int,
        clock_skew: int,
        usage: UsageRecorder,
        replay: ReplayGuard,
        cache_ttl: float = CACHE_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._usage = usage
        self._replay = replay
        self._keeper = keeper
        self._secret_key_prefix = secret_key_prefix
        self._max_age = signature_max_age
        self._skew = clock_skew
        self._clock = clock
        self._cache = CredentialCache(cache_ttl, CACHE_MAX_KEYS)
        decoy = security.generate_key()
        self._decoy = (decoy, keeper.encrypt(security.generate_secret("decoy_"), decoy))

    async def authenticate(self, credentials: Credentials, *, method: str) -> ApiKeyInfo:
        """The calling key of a request made with `method`, or Unauthenticated."""
        now = self._clock()
        if isinstance(credentials, BearerCredentials):
            key = await self._verify_bearer(credentials)
        else:
            key = await self._verify_signature(credentials, now)
        if not key.is_active(now):
            raise Unauthenticated("The API key has been revoked or has expired", "inactive")
        if isinstance(credentials, SignatureCredentials):
            await self._replay.admit(
                credentials.signature, method, int(credentials.message.expires)
            )
        self._usage.record(key, now)
        return key

    def forget(self, key: str) -> None:
        """Stop trusting what is cached about a key, e.g. once it is revoked."""
        self._cache.forget(key)

    async def close(self) -> None:
        await self._usage.drain()

    async def _find_by_digest(self, digest: bytes) -> StoredCredential | None:
        async with self._database.reads() as connection:
            return await repository.find_credential_by_digest(connection, digest)

    async def _find_by_secret(self, secret: str, digest: bytes) -> StoredCredential | None:
        # The checksum spares the database a mistyped or made-up secret. A digest found in the
        # cache needs no such check: only the real secret has it.
        if not security.has_valid_checksum(secret, self._secret_key_prefix):
            return None
        return await self._find_by_digest(digest)

    async def _find_by_key(self, key: str) -> StoredCredential | None:
        async with self._database.reads() as connection:
            return await repository.find_credential_by_key(connection, key)

    async def _verify_bearer(self, credentials: BearerCredentials) -> ApiKeyInfo:
        digest = self._keeper.digest(credentials.secret)
        stored = await self._cache.get(
            ("digest", digest), lambda: self._find_by_secret(credentials.secret, digest)
        )
        if stored is None or stored.info.type is not KeyType.SECRET_KEY:
            raise Unauthenticated(INVALID_CREDENTIALS)
        return stored.info

    async def _verify_signature(self, credentials: SignatureCredentials, now: float) -> ApiKeyInfo:
        message = credentials.message
        expires = int(message.expires)
        if not now - self._skew <= expires <= now + self._max_age + self._skew:
            raise Unauthenticated(
                f"The Expires timestamp {message.expires} is outside the accepted window: "
                f"from {self._skew} s ago to {self._max_age + self._skew} s ahead of the "
                f"server's clock ({int(now)}); check the client's clock",
                "signature_window",
            )
        key = message.key
        stored = await self._cache.get(("key", key), lambda: self._find_by_key(key))
        # An unknown key, or one of the other type, is checked against a decoy so that it
        # costs the same decryption and HMAC as a real one.
        known = stored is not None and stored.secret_ciphertext is not None
        aad, ciphertext = self._decoy
        if stored is not None and stored.secret_ciphertext is not None:
            aad, ciphertext = key, stored.secret_ciphertext
        try:
            secret = self._keeper.decrypt(ciphertext, aad)
        except InvalidTag:
            known, secret = False, b""
        matches = security.signature_matches(secret, message, credentials.signature)
        if stored is None or not known:
            raise Unauthenticated(INVALID_CREDENTIALS)
        if not matches:
            raise Unauthenticated(
                "The signature does not match. The server signed the key, the Expires value, "
                f"the URL {message.url} and a body of {len(message.body)} bytes, joined by "
                r"'\n'; sign exactly that URL and body",
                "signature_mismatch",
            )
        return stored.info
