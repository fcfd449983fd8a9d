"""`last_used_at`, kept off the request path: at most one write per key per minute."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from apikeys.domain import ApiKeyInfo
from apikeys.storage import repository
from apikeys.storage.database import Database
from apikeys.storage.faults import error_name

logger = logging.getLogger("apikeys.usage")

RECORD_EVERY_SECONDS = 60.0
# Past this many remembered keys, those not used within the interval are forgotten.
_PRUNE_THRESHOLD = 50_000


class UsageRecorder:
    """Remembers when each key's use was last written, and writes again only after the
    interval, in a background task. So `last_used_at` may lag real use by up to a minute,
    and an authenticated request never waits on a write."""

    def __init__(self, database: Database, every: float = RECORD_EVERY_SECONDS) -> None:
        self._database = database
        self._every = every
        self._written: dict[int, float] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, key: ApiKeyInfo, now: float) -> None:
        last = self._written.get(key.id)
        if last is None and key.last_used_at is not None:
            last = key.last_used_at.timestamp()
        if last is not None and now - last < self._every:
            return
        if len(self._written) > _PRUNE_THRESHOLD:
            self._written = {k: t for k, t in self._written.items() if now - t < self._every}
        self._written[key.id] = now
        task = asyncio.create_task(self._write(key.id, now))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, row_id: int, now: float) -> None:
        try:
            async with self._database.transaction() as session:
                await repository.touch_last_used(
                    session, row_id, datetime.fromtimestamp(now, UTC), self._every
                )
        except Exception as error:
            # Best effort: a lost write only leaves last_used_at older than it could be.
            logger.warning("could not record a key's last use: %s", error_name(error))
            self._written.pop(row_id, None)

    async def drain(self) -> None:
        """Wait for writes in flight, at shutdown."""
        await asyncio.gather(*self._pending, return_exceptions=True)
