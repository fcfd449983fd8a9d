"""Who is calling: turns presented credentials into the calling key, or refuses."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag

from apikeys import security
from apikeys.domain import ApiKeyInfo, KeyType
from apikeys.errors import Unauthenticated
from apikeys.security import SecretKeeper, SignedMessage
from apikeys.service.usage import UsageRecorder
from apikeys.storage import repository
from apikeys.storage.database import Database

INVALID_CREDENTIALS = "The API key or its secret is not valid"


@dataclass(frozen=True, slots=True)
class BearerCredentials:
    secret: str


@dataclass(frozen=True, slots=True)
class SignatureCredentials:
    message: SignedMessage
    signature: str


Credentials = BearerCredentials | SignatureCredentials


class Authenticator:
    """Checks credentials in a fixed order: parse, look up, verify the secret, then the
    key's state. So a wrong secret gets the same answer whatever the key's state, and a
    lookup miss still spends the same work as a hit."""

    def __init__(
        self,
        database: Database,
        keeper: SecretKeeper,
        *,
        secret_key_prefix: str,
        signature_max_age: int,
        clock_skew: int,
        usage: UsageRecorder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._usage = usage
        self._keeper = keeper
        self._secret_key_prefix = secret_key_prefix
        self._max_age = signature_max_age
        self._skew = clock_skew
        self._clock = clock
        decoy_id = security.generate_key_id()
        self._decoy = (decoy_id, keeper.encrypt(security.generate_secret("decoy_"), decoy_id))

    async def authenticate(self, credentials: Credentials) -> ApiKeyInfo:
        now = self._clock()
        if isinstance(credentials, BearerCredentials):
            key = await self._verify_bearer(credentials)
        else:
            key = await self._verify_signature(credentials, now)
        if not key.is_active(datetime.fromtimestamp(now, UTC)):
            raise Unauthenticated("The API key has been revoked or has expired")
        self._usage.record(key, now)
        return key

    async def close(self) -> None:
        await self._usage.drain()

    async def _verify_bearer(self, credentials: BearerCredentials) -> ApiKeyInfo:
        if not security.has_valid_checksum(credentials.secret, self._secret_key_prefix):
            raise Unauthenticated(INVALID_CREDENTIALS)
        digest = self._keeper.digest(credentials.secret)
        async with self._database.read_sessions() as session:
            stored = await repository.find_credential_by_digest(session, digest)
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
                f"server's clock ({int(now)}); check the client's clock"
            )
        async with self._database.read_sessions() as session:
            stored = await repository.find_credential_by_public_id(session, message.key_id)
        # An unknown key, or one of the other type, is checked against a decoy so that it
        # costs the same decryption and HMAC as a real one.
        known = stored is not None and stored.secret_ciphertext is not None
        key_id, ciphertext = self._decoy
        if stored is not None and stored.secret_ciphertext is not None:
            key_id, ciphertext = message.key_id, stored.secret_ciphertext
        try:
            secret = self._keeper.decrypt(ciphertext, key_id)
        except InvalidTag:
            known, secret = False, b""
        matches = security.signature_matches(secret, message, credentials.signature)
        if stored is None or not known:
            raise Unauthenticated(INVALID_CREDENTIALS)
        if not matches:
            raise Unauthenticated(
                "The signature does not match. The server signed the key, the Expires value, "
                f"the URL {message.url} and a body of {len(message.body)} bytes, joined by "
                r"'\n'; sign exactly that URL and body"
            )
        return stored.info
