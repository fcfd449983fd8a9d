"""`Idempotency-Key`: a create or roll retried under the same key by the same calling key
within 24 hours gets the first answer again, and nothing new is made.

The records live in the database, so every replica sees them. A record is claimed (inserted,
in flight) before the operation runs and completed with its answer after: a second request
meanwhile gets 409, one with another body 422. The answer is written in the same
transaction as the key it made. It holds the new secret, so it is kept encrypted as a
signing secret is, and erased with its record when the window closes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from apikeys.domain import ApiKeyInfo
from apikeys.errors import Conflict, FieldError, InvalidInput
from apikeys.security import SecretKeeper
from apikeys.storage import repository
from apikeys.storage.database import Database
from apikeys.storage.faults import error_name
from apikeys.storage.repository import IdempotencyCompletion

logger = logging.getLogger("apikeys.idempotency")

Issued = TypeVar("Issued")

WINDOW = timedelta(hours=24)
# A record still in flight this long after it began belongs to a request that died with its
# process; a retry may then take it over rather than meet 409 for the rest of the day.
ABANDONED_AFTER = timedelta(seconds=60)
# How often expired records are erased.
ERASE_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """The `Idempotency-Key` a request carries, and what it asks for."""

    key: str
    fingerprint: bytes

    @classmethod
    def of(cls, key: str, operation: str, body: bytes) -> IdempotentRequest:
        """`body` compared as parsed JSON: the same document sent with other spacing or
        member order is the same request."""
        parsed = json.loads(body) if body.strip() else None
        canonical = json.dumps([operation, parsed], sort_keys=True, separators=(",", ":"))
        return cls(key, hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True, slots=True)
class Claim:
    """A record claimed for one request: the operation completes it with its answer, in the
    same transaction as the key it makes, so a replayable answer always names a stored key."""

    record_id: int
    _keeper: SecretKeeper

    def completion(self, answer: dict[str, Any]) -> IdempotencyCompletion:
        sealed = self._keeper.encrypt(json.dumps(answer), _associated_data(self.record_id))
        return IdempotencyCompletion(self.record_id, sealed)


class Idempotency:
    """Runs operations that answer with a new key at most once per (calling key,
    Idempotency-Key) within the window."""

    def __init__(self, database: Database, keeper: SecretKeeper) -> None:
        self._database = database
        self._keeper = keeper

    async def run(
        self,
        caller: ApiKeyInfo,
        request: IdempotentRequest | None,
        operation: Callable[[Claim | None], Awaitable[Issued]],
        replay: Callable[[dict[str, Any], int], Issued],
    ) -> Issued:
        """`operation`'s answer, or the first one's again, rebuilt by `replay` from the kept
        answer and the id of the key it made."""
        if request is None:
            return await operation(None)
        claimed = await self._claim(caller, request)
        if not isinstance(claimed, Claim):
            return replay(*claimed)
        try:
            return await operation(claimed)
        except Exception:
            # Nothing was made, so nothing to replay: a retry runs afresh.
            await self._release(claimed.record_id)
            raise

    async def erase_expired(self, now: datetime | None = None) -> int:
        """Erase every record whose window has closed; how many were."""
        async with self._database.transaction() as session:
            return await repository.delete_expired_idempotency_records(
                session, now or datetime.now(UTC)
            )

    async def erase_expired_forever(self, every: float = ERASE_EVERY_SECONDS) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.erase_expired()
            except Exception as error:
                # Tried again next time; a record past its window is never replayed anyway.
                logger.warning("could not erase expired idempotency records: %s", error_name(error))

    async def _claim(
        self, caller: ApiKeyInfo, request: IdempotentRequest
    ) -> Claim | tuple[dict[str, Any], int]:
        """A new record, or the first answer kept under this key and its key's id."""
        for _ in range(3):
            now = datetime.now(UTC)
            try:
                # A bare connection: on every create with a key, an ORM session's bookkeeping
                # would cost more than the one insert.
                async with self._database.writes() as connection:
                    record_id = await repository.add_idempotency_record(
                        connection, caller.id, request.key, request.fingerprint, now, now + WINDOW
                    )
                return Claim(record_id, self._keeper)
            except IntegrityError:
                pass  # the caller already holds a record under this key
            async with self._database.transaction() as session:
                record = await repository.find_idempotency_record(session, caller.id, request.key)
                if record is None:
                    continue  # erased meanwhile
                if record.expires_at <= now:
                    await repository.delete_idempotency_record(session, record.id)
                    continue
                if record.fingerprint != request.fingerprint:
                    raise InvalidInput(
                        "This Idempotency-Key was first used with another request; use a new "
                        "key for a new request",
                        [FieldError(("header", "Idempotency-Key"), "used with another request")],
                    )
                if record.response is not None and record.api_key_id is not None:
                    answer: dict[str, Any] = json.loads(
                        self._keeper.decrypt(record.response, _associated_data(record.id))
                    )
                    return answer, record.api_key_id
                if record.created_at > now - ABANDONED_AFTER:
                    raise Conflict(
                        "A request with this Idempotency-Key is still in progress; retry shortly"
                    )
                if await repository.restart_idempotency_record(
                    session, record.id, record.created_at, now
                ):
                    return Claim(record.id, self._keeper)
        raise Conflict("A request with this Idempotency-Key is still in progress; retry shortly")

    async def _release(self, record_id: int) -> None:
        try:
            async with self._database.transaction() as session:
                await repository.delete_idempotency_record(session, record_id)
        except Exception as error:
            # Left in flight, the record is taken over once abandoned (ABANDONED_AFTER).
            logger.warning("could not release an idempotency record: %s", error_name(error))


def _associated_data(record_id: int) -> str:
    return f"idempotency-record:{record_id}"
