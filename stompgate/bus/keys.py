"""Redis key and channel names, and the Lua scripts, shared by the bus and the template.

Everything about one user lives under the hash tag ``{user}``, so on a Redis
Cluster a user's channels and stored messages share a slot and one script can
publish-or-store atomically. The user name inside the tag is escaped (``%``,
``{`` and ``}`` as ``%25``, ``%7B``, ``%7D``): a name with a brace would
otherwise end or empty the tag, putting a user's channel and store in
different slots (and EVALSHA then fails on every try).
"""

from __future__ import annotations

# KEYS[1] the (user, destination) shard channel, KEYS[2] its store list.
# ARGV[1] payload, ARGV[2] max stored, ARGV[3] ttl ms, ARGV[4] broadcast channel
# ('' in directed mode). Returns how many nodes got it live; 0 means stored.
# Subscribers of the shard channel are the nodes holding a subscription to that
# destination of that user, so Redis' own subscription table is the registry:
# a node that dies drops out of it the moment its connection closes.
PUBLISH_USER = """
local n
if ARGV[4] == '' then
  n = redis.call('SPUBLISH', KEYS[1], ARGV[1])
else
  n = redis.call('PUBSUB', 'SHARDNUMSUB', KEYS[1])[2]
  if n > 0 then redis.call('PUBLISH', ARGV[4], ARGV[1]) end
end
if n > 0 then return n end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""

# KEYS[1] a store list: all of it, oldest first, and gone.
TAKE_STORED = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return items
"""


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

    def user_channel(self, user: str, destination: str) -> str:
        """Shard channel of one user's destination (data in directed mode, marker in broadcast)."""
        return f"{self.prefix}:{{{tag(user)}}}:d:{destination}"

    def store(self, user: str, destination: str) -> str:
        return f"{self.prefix}:{{{tag(user)}}}:o:{destination}"

    def user_broadcast(self, user: str) -> str:
        return f"{self.prefix}:ub:{user}"

    def node_users(self, node_id: str) -> str:
        """HASH user -> sessions this node holds."""
        return f"{self.prefix}:node:{node_id}:users"

    def probe(self, node_id: str) -> str:
        """Shard channel a node publishes to itself: in the topics slot, on the same connection."""
        return f"{self.prefix}:{{topics}}:probe:{node_id}"
