"""Redis key and channel names, and the Lua scripts, shared by the bus and the template.

Everything about one user lives under the hash tag ``{user}``, so on a Redis
Cluster a user's channels and stored messages share a slot and one script can
publish-or-store atomically. The user name inside the tag is escaped (``%``,
``{`` and ``}`` as ``%25``, ``%7B``, ``%7D``): a name with a brace would
otherwise end or empty the tag, putting a user's channel and store in
different slots (and EVALSHA then fails on every try).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import OfflineLimits

# KEYS[1] the (user, destination) shard channel, KEYS[2] its store list, KEYS[3] the
# user's store index. ARGV[1] payload, ARGV[2] max stored per (user, destination),
# ARGV[3] ttl ms, ARGV[4] broadcast channel ('' in directed mode), ARGV[5] user (for
# error texts), ARGV[6] destination, ARGV[7] max_message_bytes, ARGV[8]
# max_user_messages, ARGV[9] max_user_bytes, ARGV[10] max_user_destinations.
#
# Returns n > 0: delivered live to n nodes; 0: stored; -k: stored, and the k oldest
# messages of that (user, destination) dropped at its cap. An error reply refuses
# the message (neither delivered nor stored): TOOBIG, STOREFULL (a per-user limit:
# what the user has is kept), OOM (Redis at maxmemory).
#
# Subscribers of the shard channel are the nodes holding a subscription to that
# destination of that user, so Redis' own subscription table is the registry: a
# node that dies drops out of it the moment its connection closes.
#
# The index is a hash: n (messages), b (bytes), d (destinations), x (ms time before
# which no other list of the user can have expired), and per destination D c:D and
# s:D (its messages and bytes); n and b are always the sums of the records, d their
# number. A record is checked against its list (LLEN) whenever that destination is
# stored to: a list that expired, or was stored to before the index existed (or by an
# earlier release), is measured again. Other destinations' lists may have expired
# meanwhile: only when a limit is hit, and only once one of them can have (x), are
# their records checked (PTTL), at most max_user_destinations of them. The index
# expires no earlier than the user's last list. Each call's work is bounded: a few
# commands, the trimmed messages, a list measured once, and that rare check.
#
# Out of memory: a script without flags gets OOM at its first command that adds
# data, unless it wrote before (then Redis lets it finish). Everything before the
# RPUSH only reads, so an OOM there refuses the message cleanly: nothing was
# published (n == 0) and nothing written.
PUBLISH_USER = """
local n
if ARGV[4] == '' then
  n = redis.call('SPUBLISH', KEYS[1], ARGV[1])
else
  n = redis.call('PUBSUB', 'SHARDNUMSUB', KEYS[1])[2]
  if n > 0 then redis.call('PUBLISH', ARGV[4], ARGV[1]) end
end
if n > 0 then return n end

local list, index, dest = KEYS[2], KEYS[3], ARGV[6]
local size, ttl = #ARGV[1], tonumber(ARGV[3])
local max_dest, max_msg, max_n, max_b, max_d =
  tonumber(ARGV[2]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local who = "user '" .. string.gsub(ARGV[5], '%c', '?') .. "'"
if size > max_msg then
  return redis.error_reply(string.format(
    'TOOBIG a message of %d bytes for %s cannot be stored: larger than offline.max_message_bytes = %d',
    size, who, max_msg))
end

local function sizes(first, last)
  local out = {}
  for i, item in ipairs(redis.call('LRANGE', list, first, last)) do out[i] = #item end
  return out
end
local function sum(t, upto)
  local total = 0
  for i = 1, math.min(upto, #t) do total = total + t[i] end
  return total
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local cf, sf = 'c:' .. dest, 's:' .. dest
local h = redis.call('HMGET', index, 'n', 'b', 'd', 'x', cf, sf)
local recorded = h[5] ~= false
local count, held = tonumber(h[5]) or 0, tonumber(h[6]) or 0
-- The user's other destinations, as the index has them.
local others_n, others_b = (tonumber(h[1]) or 0) - count, (tonumber(h[2]) or 0) - held
local others_d = (tonumber(h[3]) or 0) - (recorded and 1 or 0)
local recheck = tonumber(h[4]) or 0
-- This destination as it is. Its record is checked against the list: a list that expired,
-- or was stored to before the index existed, or taken by an earlier release, is measured
-- (at most the cap it was stored under) and recorded anew if the message is stored.
local len = redis.call('LLEN', list)
local measured = nil
local real = held
if not recorded or count ~= len then
  measured = (len > 0) and sizes(0, -1) or {}
  real = sum(measured, len)
end
local drop = len + 1 - max_dest
if drop < 0 then drop = 0 end
local freed = 0
if drop > 0 then freed = sum(measured or sizes(0, drop - 1), drop) end

local function over()
  if others_d >= max_d then
    return string.format(
      'STOREFULL %s has stored messages for %d destinations ' ..
      '(offline.max_user_destinations = %d)',
      who, others_d, max_d)
  end
  if others_n + len + 1 - drop > max_n then
    return string.format('STOREFULL %s has %d stored messages (offline.max_user_messages = %d)',
      who, others_n + len, max_n)
  end
  if others_b + real + size - freed > max_b then
    return string.format(
      'STOREFULL %s has %d bytes of stored messages; ' ..
      'a message of %d bytes would pass offline.max_user_bytes = %d',
      who, others_b + real, size, max_b)
  end
  return nil
end
local stale = {}
local reconciled = false
local refusal = over()
local now = nil
if refusal then
  now = now_ms()
  if now >= recheck then
    -- Some other list of the user may have expired: drop the records of those that did,
    -- and note when the next one can (this list included: it is another's other).
    local fields = redis.call('HGETALL', index)
    local record = {}
    for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
    local base = string.sub(list, 1, #list - #dest)
    local soonest = ttl
    local mine = redis.call('PTTL', list)
    if mine >= 0 then soonest = mine end
    for field, c in pairs(record) do
      if string.sub(field, 1, 2) == 'c:' and field ~= cf then
        local other = string.sub(field, 3)
        local left = redis.call('PTTL', base .. other)
        if left == -2 then
          others_n = others_n - tonumber(c)
          others_b = others_b - (tonumber(record['s:' .. other]) or 0)
          others_d = others_d - 1
          stale[#stale + 1] = field
          stale[#stale + 1] = 's:' .. other
        elseif left >= 0 and left < soonest then
          soonest = left
        end
      end
    end
    recheck = now + soonest
    reconciled = true
    refusal = over()
  end
end

local function fmt(v) return string.format('%d', v) end
if refusal then
  if reconciled then
    -- What was learnt is kept (this destination's record as it was). Out of memory this
    -- first write fails, and nothing is.
    local ok = redis.pcall('HSET', index, 'n', fmt(others_n + count), 'b', fmt(others_b + held),
      'd', fmt(others_d + (recorded and 1 or 0)), 'x', fmt(recheck))
    if not (type(ok) == 'table' and ok.err) then
      if #stale > 0 then redis.call('HDEL', index, unpack(stale)) end
      if redis.call('PTTL', index) == -1 then redis.call('PEXPIRE', index, ttl) end
    end
  end
  return redis.error_reply(refusal)
end

local pushed = redis.pcall('RPUSH', list, ARGV[1])
if type(pushed) == 'table' and pushed.err then
  if string.sub(pushed.err, 1, 4) == 'OOM ' then
    return redis.error_reply('OOM redis is out of memory (used memory > maxmemory): a message for ' .. who ..
      ' was not stored')
  end
  return pushed
end
if drop > 0 then redis.call('LTRIM', list, drop, -1) end
redis.call('PEXPIRE', list, ttl)
if recheck > 0 then
  -- A list stored now expires after the others, unless ttl differs between publishers.
  now = now or now_ms()
  if now + ttl < recheck then recheck = now + ttl end
end
local c, b = len + 1 - drop, real + size - freed
redis.call('HSET', index, 'n', fmt(others_n + c), 'b', fmt(others_b + b), 'd', fmt(others_d + 1),
  'x', fmt(recheck), cf, fmt(c), sf, fmt(b))
if #stale > 0 then redis.call('HDEL', index, unpack(stale)) end
if redis.call('PTTL', index) < ttl then redis.call('PEXPIRE', index, ttl) end
return -drop
"""

# KEYS[1] a store list, KEYS[2] its user's store index; ARGV[1] the destination.
# All of the list, oldest first, and gone; its record leaves the index. DEL first:
# it adds nothing, so the index updates after it run even when Redis is out of memory;
# they cannot fail the call (the list is already deleted, its messages must come back).
TAKE_STORED = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
-- The index is bookkeeping: whatever becomes of it (pcall), the messages taken are returned.
local cf, sf = 'c:' .. ARGV[1], 's:' .. ARGV[1]
local h = redis.pcall('HMGET', KEYS[2], cf, sf)
if type(h) == 'table' and not h.err and h[1] then
  redis.pcall('HDEL', KEYS[2], cf, sf)
  local left = redis.pcall('HINCRBY', KEYS[2], 'd', -1)
  if type(left) == 'number' and left <= 0 then
    redis.pcall('DEL', KEYS[2])
  else
    -- '%d': a Lua -0 would be written '-0', which HINCRBY refuses
    redis.pcall('HINCRBY', KEYS[2], 'n', string.format('%d', -(tonumber(h[1]) or 0)))
    redis.pcall('HINCRBY', KEYS[2], 'b', string.format('%d', -(tonumber(h[2]) or 0)))
  end
end
return items
"""


def publish_user_args(limits: OfflineLimits, broadcast: str, user: str, destination: str) -> list[Any]:
    """PUBLISH_USER's ARGV after the payload."""
    return [  # fmt: skip
        limits.max_messages, max(1, int(limits.ttl_s * 1000)), broadcast, user, destination,
        limits.max_message_bytes, limits.max_user_messages, limits.max_user_bytes,
        limits.max_user_destinations,
    ]


def tag(user: str) -> str:
    """A user name as it sits inside a hash tag: no brace can end the tag early or empty it."""
    if "%" in user or "{" in user or "}" in user:
        return user.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return user


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        # Broker-destination (topic/queue) messages: one shard channel every node
        # SSUBSCRIBEs, so on a Cluster they load one shard instead of the whole bus.
        self.topics = f"{prefix}:{{topics}}"
        self.user_pattern = f"{prefix}:ub:*"  # broadcast mode: every node PSUBSCRIBEs
        self.nodes = f"{prefix}:nodes"  # ZSET node id -> last heartbeat (ms)
        # Admin commands (bus/admin.py): one shard channel every node holds, in the topics
        # slot so that it rides the main pub/sub connection on a Cluster too.
        self.admin = f"{prefix}:{{topics}}:admin"

    def publish_keys(self, user: str, destination: str) -> tuple[str, str, str]:
        """PUBLISH_USER's KEYS: the user's channel, store and store index (one escape of the name)."""
        base = f"{self.prefix}:{{{tag(user)}}}:"
        return base + "d:" + destination, base + "o:" + destination, base + "oi"

    def user_channel(self, user: str, destination: str) -> str:
        """Shard channel of one user's destination (data in directed mode, marker in broadcast)."""
        return f"{self.prefix}:{{{tag(user)}}}:d:{destination}"

    def store(self, user: str, destination: str) -> str:
        return f"{self.prefix}:{{{tag(user)}}}:o:{destination}"

    def store_index(self, user: str) -> str:
        """HASH: what the user has stored, in total and per destination (see PUBLISH_USER)."""
        return f"{self.prefix}:{{{tag(user)}}}:oi"

    def user_broadcast(self, user: str) -> str:
        return f"{self.prefix}:ub:{user}"

    def node_users(self, node_id: str) -> str:
        """HASH user -> sessions this node holds."""
        return f"{self.prefix}:node:{node_id}:users"

    def admin_reply(self, request_id: str) -> str:
        """LIST the nodes push their answers to one admin command to (short-lived)."""
        return f"{self.prefix}:admin:reply:{request_id}"

    def probe(self, node_id: str) -> str:
        """Shard channel a node publishes to itself: in the topics slot, on the same connection."""
        return f"{self.prefix}:{{topics}}:probe:{node_id}"
