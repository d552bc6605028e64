"""The response store in Redis (--state-store redis://...), shared by every bridge of a fleet.

Each record is a string key with the TTL as Redis's own expiry; beside them a sorted set by last
use (the LRU), a sorted set by expiry (so an expired record's size leaves the total), a hash of
sizes and the total in bytes. Every change is one Lua script, so bridges writing at once never
see a half-done eviction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chatllm.bridge.responses.store import Record, decode, encode
from chatllm.kernel.state.connection import StateStore

EXPIRED_PER_WRITE = 1000  # expired records a write clears at most (the rest go on later writes)
_DROP = """
local p = ARGV[1]
local function drop(victim)
  local size = tonumber(redis.call('HGET', p .. 'sizes', victim) or '0')
  local existed = redis.call('DEL', p .. 'r:' .. victim)
  redis.call('HDEL', p .. 'sizes', victim)
  redis.call('ZREM', p .. 'lru', victim)
  redis.call('ZREM', p .. 'expiry', victim)
  if size > 0 then redis.call('DECRBY', p .. 'bytes', size) end
  return existed
end
"""
_PUT = (
    _DROP
    + """
local id, body = ARGV[2], ARGV[3]
local now, ttl, cap, batch = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
for _, victim in ipairs(redis.call('ZRANGEBYSCORE', p .. 'expiry', '-inf', now, 'LIMIT', 0, batch)) do
  drop(victim)
end
drop(id)
redis.call('SET', p .. 'r:' .. id, body, 'PX', ttl)
redis.call('HSET', p .. 'sizes', id, #body)
redis.call('ZADD', p .. 'lru', now, id)
redis.call('ZADD', p .. 'expiry', now + ttl, id)
local used = redis.call('INCRBY', p .. 'bytes', #body)
local evicted = 0
while used > cap do
  local oldest = redis.call('ZRANGE', p .. 'lru', 0, 0)[1]
  if not oldest then break end
  drop(oldest)
  evicted = evicted + 1
  used = tonumber(redis.call('GET', p .. 'bytes') or '0')
end
return evicted
"""
)
_GET = """
local p, id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local expires = redis.call('ZSCORE', p .. 'expiry', id)
if not expires or tonumber(expires) <= now then return false end
local body = redis.call('GET', p .. 'r:' .. id)
if body then redis.call('ZADD', p .. 'lru', 'XX', now, id) end
return body
"""
_DELETE = (
    _DROP
    + """
return drop(ARGV[2])
"""
)


class RedisResponseStore:
    """Records under `chatllm:responses:` in the state store's Redis."""

    def __init__(self, state: StateStore, ttl: float, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.ttl_ms = max(1, int(ttl * 1000))
        self.max_bytes = max_bytes
        self.prefix = state.key("responses") + ":"
        self._clock = clock
        self._put = state.script(_PUT)
        self._get = state.script(_GET)
        self._delete = state.script(_DELETE)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def put(self, response_id: str, record: Record) -> None:
        args = [self.prefix, response_id, encode(record), self._now_ms(), self.ttl_ms, self.max_bytes]
        await self.state.redis_call(
            "responses.put", lambda redis: self._put(args=[*args, EXPIRED_PER_WRITE], client=redis)
        )

    async def get(self, response_id: str) -> Record | None:
        args = [self.prefix, response_id, self._now_ms()]
        body = await self.state.redis_call("responses.get", lambda redis: self._get(args=args, client=redis))
        return decode(body) if body is not None else None

    async def delete(self, response_id: str) -> bool:
        args = [self.prefix, response_id]
        deleted = await self.state.redis_call("responses.delete", lambda redis: self._delete(args=args, client=redis))
        return bool(deleted)

    async def total_bytes(self) -> int:
        total = await self.state.redis_call("responses.size", lambda redis: redis.get(self.prefix + "bytes"))
        return int(total or 0)
