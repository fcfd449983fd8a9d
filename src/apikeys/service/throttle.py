"""Slows down guessing: a sliding-window count of failed authentications per client."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from apikeys.errors import TooManyRequests

WINDOW_SECONDS = 60.0
# Past this many tracked clients, the ones whose failures have all aged out are forgotten.
_SWEEP_THRESHOLD = 10_000


class FailureThrottle:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def check(self, client: str) -> None:
        """Raise TooManyRequests when `client` has failed more than the limit allows."""
        failures = self._failures.get(client)
        if not self._limit or not failures:
            return
        now = self._clock()
        while failures and failures[0] <= now - WINDOW_SECONDS:
            failures.popleft()
        if len(failures) > self._limit:
            retry_after = max(1, math.ceil(failures[0] + WINDOW_SECONDS - now))
            raise TooManyRequests(
                f"Too many failed authentications from this client; retry in {retry_after} s",
                retry_after,
            )

    def record_failure(self, client: str) -> None:
        if not self._limit:
            return
        if len(self._failures) > _SWEEP_THRESHOLD:
            self._sweep()
        self._failures.setdefault(client, deque(maxlen=self._limit + 1)).append(self._clock())

    def _sweep(self) -> None:
        horizon = self._clock() - WINDOW_SECONDS
        self._failures = {
            client: failures
            for client, failures in self._failures.items()
            if failures and failures[-1] > horizon
        }
