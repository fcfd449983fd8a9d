"""The shared state in Redis: every entry carries its own expiry, so Redis forgets it.

Keys (after the configured prefix):
- `sig:<signature>`: the method the signature is bound to, expiring at its Expires + skew;
- `fail:<address>`: a hash of whole second -> failures, older seconds removed on each write,
  expiring a window after the last failure;
- `blocked`: a sorted set of addresses scored by the second their block ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from apikeys.errors import ServiceUnavailable

T = TypeVar("T")

# One round trip, atomic: count the failure, drop the seconds that left the window, return
# the rest as a flat [second, failures, ...] list (at most window + 1 pairs).
_RECORD_FAILURE = """
local horizon = tonumber(ARGV[1]) - tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1)
local entries = redis.call('HGETALL', KEYS[1])
local kept = {}
for i = 1, #entries, 2 do
  if tonumber(entries[i]) < horizon then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    kept[#kept + 1] = entries[i]
    kept[#kept + 1] = entries[i + 1]
  end
end
return kept
"""


class RedisSharedState:
    def __init__(self, url: str, *, key_prefix: str, timeout: float) -> None:
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )
        self._prefix = key_prefix
        self._blocked_key = f"{key_prefix}blocked"
        self._record_failure = self._redis.register_script(_RECORD_FAILURE)

    async def claim(self, signature: str, method: str, forget_at: int) -> tuple[str, bool]:
        # SET NX GET: binds the signature unless bound, and returns the earlier binding.
        earlier = await self._call(
            lambda: self._redis.set(
                f"{self._prefix}sig:{signature}", method, nx=True, get=True, exat=forget_at
            )
        )
        if earlier is None:
            return method, True
        return str(earlier), False

    async def record_failure(self, address: str, second: int, window: int) -> list[tuple[int, int]]:
        flat: list[str] = await self._call(
            lambda: self._record_failure(
                keys=[f"{self._prefix}fail:{address}"], args=[second, window]
            )
        )
        return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def block(self, address: str, until: int) -> None:
        async def add() -> None:
            async with self._redis.pipeline(transaction=False) as pipeline:
                pipeline.zadd(self._blocked_key, {address: until}, gt=True)
                pipeline.expireat(self._blocked_key, until, gt=True)
                pipeline.expireat(self._blocked_key, until, nx=True)
                await pipeline.execute()

        await self._call(add)

    async def blocked(self, now: float, most: int) -> dict[str, int]:
        async def load() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipeline:
                pipeline.zremrangebyscore(self._blocked_key, "-inf", now)
                pipeline.zrangebyscore(
                    self._blocked_key, f"({now}", "+inf", start=0, num=most, withscores=True
                )
                results: list[Any] = await pipeline.execute()
                return results

        _, entries = await self._call(load)
        return {address: int(score) for address, score in entries}

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            return await command()
        except RedisError as error:
            raise ServiceUnavailable(
                f"The shared store (Redis) is not answering ({type(error).__name__}); retry shortly"
            ) from None
