-- History and position. KEYS: meta, stream. ARGV: fresh epoch, historySize, historyTtlMs,
-- limit, since epoch ('' for the newest), first offset wanted (with since), min meta TTL ms,
-- max bytes of the page, the bytes counted per publication beyond payload and publisher.
-- Returns {epoch, offset, entries}; limit 0 is position(). One snapshot: the entries and the
-- top always agree. Entries are read a few at a time, so a page capped by bytes never copies
-- much more than it returns, however large the publications.
local meta, stream = KEYS[1], KEYS[2]
local epoch, offset = ensureMeta(meta, stream, ARGV[1])
-- Reading a stream keeps its epoch alive: subscribers of a quiet room hold positions in it.
if redis.call('PTTL', meta) < tonumber(ARGV[7]) then redis.call('PEXPIRE', meta, ARGV[7]) end
local size, ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local sinceEpoch = ARGV[5]
if limit <= 0 or size <= 0 or (sinceEpoch ~= '' and sinceEpoch ~= epoch) then return { epoch, offset, {} } end
local live = firstLive(stream, nowMs() - ttl)
if not live then return { epoch, offset, {} } end
local from = math.max(live, offset - size + 1)
if sinceEpoch == '' then from = math.max(from, offset - limit + 1) else from = math.max(from, tonumber(ARGV[6])) end
if from > offset then return { epoch, offset, {} } end
local maxBytes, overhead = tonumber(ARGV[8]), tonumber(ARGV[9])
local out, used = {}, 0
while #out < limit do
  local batch = redis.call('XRANGE', stream, int(from), '+', 'COUNT', math.min(16, limit - #out))
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    local bytes = #(fieldOf(entry, 'd') or '') + #(fieldOf(entry, 'f') or '') + overhead
    if #out > 0 and used + bytes > maxBytes then return { epoch, offset, out } end
    used = used + bytes
    out[#out + 1] = entry
  end
  from = offsetOf(batch[#batch]) + 1
end
return { epoch, offset, out }
