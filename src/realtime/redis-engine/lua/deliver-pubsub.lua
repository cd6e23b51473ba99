-- How publish.lua sends a room's message on one Redis (or through Sentinels): a plain channel.
local function deliver(channel, message) return redis.call('PUBLISH', channel, message) end
