-- How publish.lua sends a room's message on Redis Cluster: a shard channel in the room's slot
-- (its hash tag), carried only by the shard that owns the room, not broadcast to every node.
local function deliver(channel, message) return redis.call('SPUBLISH', channel, message) end
