"""A token's limits counted in Redis, for a whole fleet: one Lua script per step, so every check and its
update are one atomic operation (no read-modify-write race between replicas), timed by Redis's own
clock (replicas' clocks may differ).

The rules are windows.py's; the keys, per token name (`chatllm:limits:<name>:...`):

    streams          sorted set: ticket -> lease expiry (ms). A replica renews its tickets' leases;
                     a replica that dies stops renewing, and its streams free up within the lease
    rpm              sorted set: ticket -> admission time (ms)
    tpm, tpm:tokens, tpm:sum     sorted set ticket -> reservation time, hash ticket -> tokens, their sum
    daily:<day>      tokens reserved and used on that UTC day (kept two days)

Every key expires on its own when the token goes quiet.
"""

from __future__ import annotations

from typing import Any

from chatllm.kernel.access import TokenLimits
from chatllm.kernel.state.connection import StateStore
from chatllm.kernel.state.refusal import DAILY, RPM, STREAMS, STREAMS_RETRY_AFTER_S, TPM, Refusal

LEASE_S = 15.0  # a dead replica's streams free up within this
DAILY_TTL_S = 2 * 86400

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function tpm_used(zset, hash, sum, cutoff)
  while true do
    local old = redis.call('ZRANGEBYSCORE', zset, '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local amounts = redis.call('HMGET', hash, unpack(old))
    local freed = 0
    for i = 1, #old do freed = freed + tonumber(amounts[i] or '0') end
    redis.call('HDEL', hash, unpack(old))
    redis.call('ZREM', zset, unpack(old))
    redis.call('DECRBY', sum, freed)
  end
  return tonumber(redis.call('GET', sum) or '0')
end
local function tpm_wait(zset, hash, total, room, now, window)
  local entries = redis.call('ZRANGE', zset, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    total = total - tonumber(redis.call('HGET', hash, entries[i]) or '0')
    if total <= room then return tonumber(entries[i + 1]) + window - now end
  end
  return 0
end
"""

# KEYS: streams, rpm, tpm, tpm:tokens, tpm:sum, daily. ARGV: ticket, streams, rpm, tpm, daily (0: no
# limit), lease ms, window ms. Returns {limit, used, wait ms} ("" when admitted).
ADMIT = (
    _COMMON
    + """
local ticket, streams, rpm, tpm, daily = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5])
local lease, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local now = now_ms()
if streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local active = redis.call('ZCARD', KEYS[1])
  if active >= streams then return {'streams', active, 0} end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[2])
  if count >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {'rpm', count, tonumber(oldest[2]) + window - now}
  end
end
if tpm > 0 then
  local used = tpm_used(KEYS[3], KEYS[4], KEYS[5], now - window)
  if used >= tpm then return {'tpm', used, tpm_wait(KEYS[3], KEYS[4], used, tpm - 1, now, window)} end
end
if daily > 0 then
  local used = tonumber(redis.call('GET', KEYS[6]) or '0')
  if used >= daily then return {'daily_tokens', used, 0} end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[2], now, ticket)
  redis.call('PEXPIRE', KEYS[2], window * 2)
end
if streams > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ticket)
  redis.call('PEXPIRE', KEYS[1], lease * 2)
end
return {'', 0, 0}
"""
)

# KEYS: tpm, tpm:tokens, tpm:sum, daily. ARGV: ticket, tokens, tpm, daily, window ms, daily ttl s.
RESERVE = (
    _COMMON
    + """
local ticket, tokens, tpm, daily = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local now = now_ms()
if tpm > 0 then
  local used = tpm_used(KEYS[1], KEYS[2], KEYS[3], now - window)
  if used > 0 and used + tokens > tpm then
    return {'tpm', used, tpm_wait(KEYS[1], KEYS[2], used, math.max(tpm - tokens, 0), now, window)}
  end
end
if daily > 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used > 0 and used + tokens > daily then return {'daily_tokens', used, 0} end
end
if tpm > 0 then
  redis.call('ZADD', KEYS[1], now, ticket)
  redis.call('HSET', KEYS[2], ticket, tokens)
  redis.call('INCRBY', KEYS[3], tokens)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], window * 2) end
end
if daily > 0 then
  redis.call('INCRBY', KEYS[4], tokens)
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
end
return {'', 0, 0}
"""
)

# KEYS: streams, tpm, tpm:tokens, tpm:sum, daily. ARGV: ticket, used, reserved.
SETTLE = """
local ticket, used, reserved = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ticket)
if reserved > 0 then
  local old = redis.call('HGET', KEYS[3], ticket)
  if old then
    redis.call('HSET', KEYS[3], ticket, used)
    redis.call('INCRBY', KEYS[4], used - tonumber(old))
  end
  if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('INCRBY', KEYS[5], used - reserved) end
end
return 0
"""

# KEYS: streams. ARGV: lease ms, tickets... (only tickets still there: a settled one stays gone)
RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 0
"""


def _refusal(reply: list[Any], allowed: TokenLimits, asked: int = 0) -> Refusal | None:
    limit = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    if not limit:
        return None
    used, wait_ms = int(reply[1]), int(reply[2])
    size = {STREAMS: allowed.streams, RPM: allowed.rpm, TPM: allowed.tpm, DAILY: allowed.daily_tokens}[limit]
    wait = STREAMS_RETRY_AFTER_S if limit == STREAMS else wait_ms / 1000
    return Refusal(limit, used, size or 0, wait, asked)


class RedisLimits:
    """The fleet-wide counters; each method is one round trip (StoreUnavailable when Redis is down)."""

    def __init__(self, store: StateStore, window: float = 60.0, lease: float = LEASE_S) -> None:
        self.store = store
        self.window_ms = int(window * 1000)
        self.lease_ms = int(lease * 1000)
        self._admit = store.script(ADMIT)
        self._reserve = store.script(RESERVE)
        self._settle = store.script(SETTLE)
        self._renew = store.script(RENEW)

    def _keys(self, name: str, *parts: str) -> list[str]:
        return [self.store.key("limits", name, part) for part in parts]

    def _daily_key(self, name: str, day: str) -> str:
        return self.store.key("limits", name, "daily", day)

    async def admit(self, ticket: str, name: str, limits: TokenLimits, day: str) -> Refusal | None:
        keys = [*self._keys(name, "streams", "rpm", "tpm", "tpm:tokens", "tpm:sum"), self._daily_key(name, day)]
        args = [ticket, *(_size(v) for v in (limits.streams, limits.rpm, limits.tpm, limits.daily_tokens))]
        args += [self.lease_ms, self.window_ms]
        reply = await self.store.redis_call("admit", lambda r: self._admit(keys=keys, args=args, client=r))
        return _refusal(reply, limits)

    async def reserve(self, ticket: str, name: str, limits: TokenLimits, day: str, tokens: int) -> Refusal | None:
        keys = [*self._keys(name, "tpm", "tpm:tokens", "tpm:sum"), self._daily_key(name, day)]
        args = [ticket, tokens, _size(limits.tpm), _size(limits.daily_tokens), self.window_ms, DAILY_TTL_S]
        reply = await self.store.redis_call("reserve", lambda r: self._reserve(keys=keys, args=args, client=r))
        return _refusal(reply, limits, tokens)

    async def settle(self, ticket: str, name: str, day: str, reserved: int, used: int) -> None:
        keys = [*self._keys(name, "streams", "tpm", "tpm:tokens", "tpm:sum"), self._daily_key(name, day)]
        args = [ticket, used, reserved]
        await self.store.redis_call("settle", lambda r: self._settle(keys=keys, args=args, client=r))

    async def renew(self, tickets: dict[str, list[str]]) -> None:
        """Extend the leases of these tickets (token name -> tickets) by another lease from now."""

        async def send(redis: Any) -> None:
            async with redis.pipeline(transaction=False) as pipeline:
                for name, held in tickets.items():
                    await self._renew(keys=self._keys(name, "streams"), args=[self.lease_ms, *held], client=pipeline)
                await pipeline.execute()

        if tickets:
            await self.store.redis_call("renew", send)


def _size(limit: int | None) -> int:
    return 0 if limit is None else limit
