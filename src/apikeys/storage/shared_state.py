"""What every replica must see at once: used signatures and failed authentications per
client address. In the database by default, in Redis when a Redis URL is configured.

Both keep an entry only while it matters: a used signature until its Expires plus the
clock skew, a failure count for the sliding window, a block until it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from apikeys.storage.database import Database
from apikeys.storage.models import AuthBlock, AuthFailure, UsedSignature
from apikeys.storage.redis_state import RedisSharedState

# How often (by this process's clock) a write also deletes what has expired: a delete on an
# index over a few seconds' worth of rows, paid by one request in that many seconds.
CLEANUP_SECONDS = 10.0


class DatabaseSharedState:
    def __init__(self, database: Database, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock
        self._insert: Any = (
            sqlite.insert if database.url.get_backend_name() == "sqlite" else postgresql.insert
        )
        self._signatures_cleaned_at = float("-inf")
        self._failures_cleaned_at = float("-inf")

    async def claim(self, signature: str, method: str, forget_at: int) -> tuple[str, bool]:
        async with self._database.engine.begin() as connection:
            now = self._clock()
            if now - self._signatures_cleaned_at >= CLEANUP_SECONDS:
                self._signatures_cleaned_at = now
                await connection.execute(
                    delete(UsedSignature).where(UsedSignature.forget_at < int(now))
                )
            inserted = await connection.execute(
                self._insert(UsedSignature)
                .values(signature=signature, method=method, forget_at=forget_at)
                .on_conflict_do_nothing(index_elements=["signature"])
            )
            if inserted.rowcount == 1:
                return method, True
            bound = await connection.scalar(
                select(UsedSignature.method).where(UsedSignature.signature == signature)
            )
            # Gone already would mean expired: refused as used, never accepted as new.
            return (bound or method), False

    async def record_failure(self, address: str, second: int, window: int) -> list[tuple[int, int]]:
        async with self._database.engine.begin() as connection:
            await self._clean_failures(connection, second, window)
            upsert = self._insert(AuthFailure).values(address=address, second=second, failures=1)
            await connection.execute(
                upsert.on_conflict_do_update(
                    index_elements=["address", "second"],
                    set_={"failures": AuthFailure.failures + 1},
                )
            )
            counts = await connection.execute(
                select(AuthFailure.second, AuthFailure.failures).where(
                    AuthFailure.address == address, AuthFailure.second >= second - window
                )
            )
            return [(row.second, row.failures) for row in counts]

    async def block(self, address: str, until: int) -> None:
        async with self._database.engine.begin() as connection:
            upsert = self._insert(AuthBlock).values(address=address, until=until)
            await connection.execute(
                upsert.on_conflict_do_update(
                    index_elements=["address"], set_={"until": upsert.excluded.until}
                )
            )

    async def blocked(self, now: float, most: int) -> dict[str, int]:
        async with self._database.reads() as connection:
            rows = await connection.execute(
                select(AuthBlock.address, AuthBlock.until)
                .where(AuthBlock.until > now)
                .order_by(AuthBlock.until.desc())
                .limit(most)
            )
            return {row.address: row.until for row in rows}

    async def close(self) -> None:
        """Nothing of its own to release: the database is the service's."""

    async def _clean_failures(self, connection: AsyncConnection, second: int, window: int) -> None:
        now = self._clock()
        if now - self._failures_cleaned_at < CLEANUP_SECONDS:
            return
        self._failures_cleaned_at = now
        await connection.execute(delete(AuthFailure).where(AuthFailure.second < second - window))
        await connection.execute(delete(AuthBlock).where(AuthBlock.until <= second))


SharedState = DatabaseSharedState | RedisSharedState


def open_shared_state(
    database: Database, redis_url: str | None, *, key_prefix: str, timeout: float
) -> SharedState:
    if redis_url:
        return RedisSharedState(redis_url, key_prefix=key_prefix, timeout=timeout)
    return DatabaseSharedState(database)
