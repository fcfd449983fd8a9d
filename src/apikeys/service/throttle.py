"""Slows down guessing: failed authentications per client address in a sliding minute,
counted across all replicas (the counts are shared: see FailureLedger).

Checking costs no I/O: each process knows the blocked addresses, reloading them from the
ledger every REFRESH_SECONDS, and learns at once of the blocks its own failures cause. So an
address pushed past the limit on one replica is refused there at once, and on every other
replica within REFRESH_SECONDS (plus the reload's own time). Recording a failure is one
short transaction on the ledger, over at most one row per second of the window."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from apikeys.errors import ServiceUnavailable, TooManyRequests
from apikeys.storage.faults import error_name, is_unavailable

logger = logging.getLogger("apikeys.errors")

WINDOW_SECONDS = 60
REFRESH_SECONDS = 0.5
# At most this many blocked addresses are known to a process (the latest-ending first):
# each needs more than the limit of failures in a minute, so the cap is far beyond any
# attack the limit lets through.
MAX_BLOCKED_ADDRESSES = 100_000


class FailureLedger(Protocol):
    """The shared failure counts (the database, or Redis), by address and whole second."""

    async def record_failure(self, address: str, second: int, window: int) -> list[tuple[int, int]]:
        """Count one failure of `address` in `second`; return the counts of its seconds
        from `second - window` on, as (second, failures)."""
        ...

    async def block(self, address: str, until: int) -> None: ...

    async def blocked(self, now: float, most: int) -> dict[str, int]:
        """The addresses blocked beyond `now`, with the second each block ends."""
        ...


def blocked_until(counts: Sequence[tuple[int, int]], limit: int) -> int | None:
    """When the counted failures no longer exceed `limit`, or None when they do not now.

    A failure counted in second s may have happened at its very end, so it stays in the
    sliding minute until s + 1 + WINDOW_SECONDS."""
    remaining = sum(failures for _, failures in counts)
    if remaining <= limit:
        return None
    for second, failures in sorted(counts):
        remaining -= failures
        if remaining <= limit:
            return second + 1 + WINDOW_SECONDS
    raise AssertionError("unreachable: the loop ends with nothing remaining")


class FailureThrottle:
    def __init__(
        self,
        limit: int,
        ledger: FailureLedger,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limit = limit
        self._ledger = ledger
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._blocked: dict[str, int] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    @property
    def known_blocked(self) -> int:
        """How many blocked addresses this process holds: what its memory grows with."""
        return len(self._blocked)

    def check(self, address: str) -> None:
        """Raise TooManyRequests when `address` is blocked. No I/O."""
        if not self._limit:
            return
        if self._refresher is None and not self._stopping.is_set():
            self._refresher = asyncio.create_task(self._keep_refreshing())
        until = self._blocked.get(address)
        if until is not None:
            self._refuse(until, self._clock())

    async def record_failure(self, address: str) -> None:
        """Count a failed authentication; raise TooManyRequests when it is one too many."""
        if not self._limit:
            return
        now = self._clock()
        counts = await self._ledger.record_failure(address, int(now), WINDOW_SECONDS)
        until = blocked_until(counts, self._limit)
        if until is None:
            return
        await self._ledger.block(address, until)
        if address in self._blocked or len(self._blocked) < MAX_BLOCKED_ADDRESSES:
            self._blocked[address] = until
        self._refuse(until, now)

    async def refresh(self) -> None:
        """Reload the blocked addresses from the ledger."""
        now = self._clock()
        loaded = await self._ledger.blocked(now, MAX_BLOCKED_ADDRESSES)
        # Blocks this process made while the reload was under way are kept.
        for address, until in self._blocked.items():
            if until > now and until > loaded.get(address, 0):
                if len(loaded) >= MAX_BLOCKED_ADDRESSES:
                    break
                loaded[address] = until
        self._blocked = loaded

    async def close(self) -> None:
        # Stopped rather than cancelled: a reload is not interrupted in the middle of talking
        # to the store (each is bounded by the store's own timeout).
        self._stopping.set()
        if self._refresher is not None:
            await self._refresher
            self._refresher = None

    def _refuse(self, until: int, now: float) -> None:
        if until <= now:
            return
        retry_after = max(1, math.ceil(until - now))
        raise TooManyRequests(
            f"Too many failed authentications from this address; retry in {retry_after} s",
            retry_after,
        )

    async def _keep_refreshing(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as error:
                # The blocks already known stay in force; the next round tries again.
                if not (is_unavailable(error) or isinstance(error, ServiceUnavailable)):
                    logger.exception("reloading the blocked addresses failed")
                else:
                    logger.warning("reloading the blocked addresses: %s", error_name(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._refresh_seconds)
