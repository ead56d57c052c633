"""The cache's Lua scripts, and the stored-value format they read and write.

Each script is one atomic Redis call: reading a value together with the generations and the WAL
position it depends on, or bumping them together with the broadcast of the invalidation, is what
keeps a stale value from being read or kept (see store.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from villager_shop.api.cache.lease import BROADCAST

# Values that list products (see `get_or_load(shows=...)`) also depend on what they show: the
# scope's "shown" hash `{prefix}:shown:{scope}` holds `_epoch` (when the hash was created: a lost
# hash is a new epoch), `_seq` (a counter) and, per product, the `_seq` of the last change to what
# is shown of it. Such a value is stored as "\0" .. epoch .. " p1=g1 p2=g2 ...\n" .. body, g being
# the product's field when the value was stored ('0': none); it is valid while all are unchanged.
SHOWN_OK = r"""
local function shown_ok(v, h)
  if string.byte(v, 1) ~= 0 then return true end
  local e = string.find(v, '\n', 1, true)
  if not e then return false end
  local epoch = nil
  for word in string.gmatch(string.sub(v, 2, e - 1), '%S+') do
    if epoch == nil then
      epoch = word
      if redis.call('HGET', h, '_epoch') ~= epoch then return false end
    else
      local p, g = string.match(word, '^(.-)=(.*)$')
      if (redis.call('HGET', h, p) or '0') ~= g then return false end
    end
  end
  return epoch ~= nil
end
local function shown_init(h)
  if redis.call('HEXISTS', h, '_epoch') == 0 then
    local t = redis.call('TIME')
    local now = string.format('%.0f', t[1] * 1000000 + t[2])
    redis.call('HSET', h, '_epoch', now, '_seq', now)
  end
end
"""
# KEYS: the generation keys of a value (the scope's, then its finer ones), then the shown hash, then
# the scope's invalidation WAL position; ARGV: key prefix, key suffix, TTL of the finer generation
# keys. Returns {generation, value, its PTTL, shown epoch, shown seq, WAL position (false: none
# recorded)}, generation being the generations joined by '.', value false when missing or no
# longer valid. A missing generation (never set, expired or evicted) starts from the
# server clock in microseconds, so it can never fall back onto a number that older entries still carry.
READ = SHOWN_OK + r"""
local n = #KEYS - 2
local gens = {}
for i = 1, n do
  local k = KEYS[i]
  local g = redis.call('GET', k)
  if not g then
    local t = redis.call('TIME')
    local v = string.format('%.0f', t[1] * 1000000 + t[2])
    if i == 1 then redis.call('SET', k, v, 'NX') else redis.call('SET', k, v, 'NX', 'EX', ARGV[3]) end
    g = redis.call('GET', k)
  end
  gens[i] = g
end
local h = KEYS[n + 1]
shown_init(h)
local gen = table.concat(gens, '.')
local vk = ARGV[1] .. gen .. ARGV[2]
local v = redis.call('GET', vk)
local ttl = -2
if v then
  if shown_ok(v, h) then ttl = redis.call('PTTL', vk) else v = false end
end
return {gen, v, ttl, redis.call('HGET', h, '_epoch'), redis.call('HGET', h, '_seq'), redis.call('GET', KEYS[n + 2])}
"""
# KEYS: generation keys, then the shown hash; ARGV: fields of that hash. The per-request check of a
# worker's own copies: {generation values..., shown epoch, field values...} (false: missing).
CHECK = r"""
local out = {}
local n = #KEYS - 1
for i = 1, n do out[i] = redis.call('GET', KEYS[i]) end
local h = KEYS[n + 1]
out[n + 1] = redis.call('HGET', h, '_epoch')
for j = 1, #ARGV do out[n + 1 + j] = redis.call('HGET', h, ARGV[j]) end
return out
"""
# KEYS: value key, its rebuild lock, shown hash. A waiter's poll: {valid value or false, lock held, shown seq}.
POLL = SHOWN_OK + r"""
local v = redis.call('GET', KEYS[1])
if v and not shown_ok(v, KEYS[3]) then v = false end
return {v, redis.call('EXISTS', KEYS[2]), redis.call('HGET', KEYS[3], '_seq') or '0'}
"""
# KEYS: value key, shown hash; ARGV: TTL, epoch and seq read before the value was loaded, body,
# the products it shows. Stores the value unless one of those products changed since that read (its
# field above that seq) or the hash was lost: {1, seq, header} or {0, seq}.
STORE = r"""
local h = KEYS[2]
local seq = redis.call('HGET', h, '_seq') or '0'
if redis.call('HGET', h, '_epoch') ~= ARGV[2] then return {0, seq} end
local parts = {ARGV[2]}
for j = 5, #ARGV do
  local g = redis.call('HGET', h, ARGV[j])
  if g and tonumber(g) > tonumber(ARGV[3]) then return {0, seq} end
  parts[#parts + 1] = ARGV[j] .. '=' .. (g or '0')
end
local header = table.concat(parts, ' ')
redis.call('SET', KEYS[1], '\0' .. header .. '\n' .. ARGV[4], 'EX', ARGV[1])
return {1, seq, header}
"""
# KEYS: generation keys to bump, then (with products) the shown hash, then the scope's invalidation
# WAL position, the lease registry and the invalidation channel (lease.py); ARGV[1]: TTL of
# those keys in seconds ('0': none, the scope's own key); ARGV[2]: how many generation keys;
# ARGV[3]: the message to broadcast ('': none); ARGV[4]: the primary's WAL position after the
# write (16 hex digits, so that text order is number order; '': unknown); ARGV[5...]: products
# whose shown data changed (each gets a new number from `_seq`). The position kept is the highest
# given. Returns lease.BROADCAST's reply (the Redis clock, then the running leases).
BUMP = SHOWN_OK + BROADCAST + r"""
local n = tonumber(ARGV[2])
for i = 1, n do
  local k = KEYS[i]
  if redis.call('EXISTS', k) == 1 then
    redis.call('INCR', k)
  else
    local t = redis.call('TIME')
    redis.call('SET', k, string.format('%.0f', t[1] * 1000000 + t[2] + 1))
  end
  if ARGV[1] ~= '0' then redis.call('EXPIRE', k, ARGV[1]) end
end
if ARGV[4] ~= '' then
  local w = KEYS[#KEYS - 2]
  local was = redis.call('GET', w)
  if not was or was < ARGV[4] then redis.call('SET', w, ARGV[4]) end
end
if #ARGV > 4 then
  local h = KEYS[n + 1]
  shown_init(h)
  for j = 5, #ARGV do
    redis.call('HSET', h, ARGV[j], redis.call('HINCRBY', h, '_seq', 1))
  end
end
return broadcast(KEYS[#KEYS - 1], KEYS[#KEYS], ARGV[3])
"""
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The products a stored value shows and the shown numbers it was stored at: ((product, number), ...).
Fields = tuple[tuple[str, bytes], ...]


def split_value(raw: bytes) -> tuple[bytes, bytes | None, Fields]:
    """(body, shown epoch, fields) of a stored value (epoch None: it shows no products)."""
    if not raw.startswith(b"\0"):
        return raw, None, ()
    end = raw.index(b"\n")
    return raw[end + 1:], *parse_header(raw[1:end])


def parse_header(header: bytes) -> tuple[bytes, Fields]:
    """(shown epoch, fields) of a stored value's header, as STORE returns it."""
    epoch, *words = header.split(b" ")
    fields = []
    for word in words:
        product, _, g = word.partition(b"=")
        fields.append((product.decode(), g))
    return epoch, tuple(fields)


def wal_arg(lsn: int | None) -> str:
    """A WAL position as the bump script takes it: 16 hex digits (text order is number order)."""
    return "" if lsn is None else f"{lsn:016X}"


@dataclass
class Scripts:
    """The scripts registered on the client they run on; `redis` None until `bind` (no Redis
    configured, or not started yet) and after `unbind`."""
    redis: aioredis.Redis | None = None
    read: Any = None
    check: Any = None
    poll: Any = None
    store: Any = None
    bump: Any = None
    unlock: Any = None

    def bind(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.read = redis.register_script(READ)
        self.check = redis.register_script(CHECK)
        self.poll = redis.register_script(POLL)
        self.store = redis.register_script(STORE)
        self.bump = redis.register_script(BUMP)
        self.unlock = redis.register_script(UNLOCK)

    def unbind(self) -> None:
        """The client is closed; a script still called fails like any call to a closed client."""
        self.redis = None
