-- Publish: number, store and deliver in one atomic step, so every node sees the same order.
-- deliver() comes before this file: deliver-pubsub.lua, or deliver-sharded.lua on a cluster.
-- KEYS: meta, stream, archive queue, archive queue bytes[, idempotency key]. ARGV: fresh
-- epoch, historySize, historyTtlMs, metaTtlMs, payload (JSON text or raw bytes: stored and sent
-- as they are), channel, idempotency window ms, publisher id, ts, kind (`json` or `binary`),
-- the publication's bytes, the room's byte cap, the channel message's head (codec.ts),
-- archive ('1': the room keeps a cluster archive), the archive queue's byte cap.
-- Returns {epoch, offset, duplicate}, or the error ARCHIVE_BACKLOG (nothing published) when
-- the room's archive queue is full: the database has not confirmed its inserts for too long.
--
-- An archived room's publication also goes into its archive queue, in this same step: it is
-- acknowledged only once queued, and leaves the queue only when PostgreSQL confirmed its row
-- (archiver.ts). The queue is not the history stream, which may keep nothing or expire.
--
-- Each entry records `c`, the bytes published in the epoch before it (the meta's `bytes` is
-- the running total), so the stream's size is `bytes - c` of its oldest entry whatever trimmed
-- it, and the byte cap is one binary search, not a walk over what is dropped.
local meta, stream, queue, queueBytes, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local epoch, _ = ensureMeta(meta, stream, ARGV[1])
if idem then
  local seen = redis.call('GET', idem)
  if seen then
    local at = string.find(seen, ':', 1, true)
    -- A key from an earlier epoch (history removed since) is stale: publish anew.
    if at and string.sub(seen, 1, at - 1) == epoch then
      return { epoch, tonumber(string.sub(seen, at + 1)), 1 }
    end
  end
end
local archive = ARGV[14] == '1'
local queued = archive and tonumber(redis.call('GET', queueBytes) or '0') or 0
-- Refused before it is numbered: a refused publish leaves no trace. An empty queue takes any
-- one publication, so a cap below a publication's size cannot block a room for good.
if archive and queued > 0 and queued + tonumber(ARGV[11]) > tonumber(ARGV[15]) then
  return redis.error_reply('ARCHIVE_BACKLOG the room\'s archive queue is full')
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
local now = nowMs()
local size, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if size > 0 and ttl > 0 then
  local start = tonumber(redis.call('HGET', meta, 'bytes') or '0')
  local total = start + tonumber(ARGV[11])
  redis.call('HSET', meta, 'bytes', int(total))
  redis.call('XADD', stream, 'MAXLEN', size, int(offset) .. '-0', 't', int(now), 'c', int(start),
    'f', ARGV[8], 's', ARGV[9], 'k', ARGV[10], 'd', ARGV[5])
  local cutoff, floor = now - ttl, total - tonumber(ARGV[12])
  -- The newest publication stays even alone over the room's cap: a room keeps its last word.
  local keep = firstWhere(stream, function(entry) return timeOf(entry) > cutoff and startOf(entry) >= floor end) or offset
  redis.call('XTRIM', stream, 'MINID', int(keep) .. '-0')
  redis.call('PEXPIRE', stream, ttl)
else
  redis.call('DEL', stream)
end
if archive then
  redis.call('XADD', queue, '*', 'e', epoch, 'o', int(offset), 't', int(now), 'f', ARGV[8], 's', ARGV[9],
    'k', ARGV[10], 'b', ARGV[11], 'd', ARGV[5])
  redis.call('INCRBY', queueBytes, ARGV[11])
end
redis.call('PEXPIRE', meta, ARGV[4])
if idem then redis.call('SET', idem, epoch .. ':' .. int(offset), 'PX', ARGV[7]) end
deliver(ARGV[6], 'm|' .. epoch .. '|' .. int(offset) .. '|' .. ARGV[13] .. ARGV[5])
return { epoch, offset, 0 }
