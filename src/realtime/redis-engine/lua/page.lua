-- A page for reading back. KEYS: meta, stream. ARGV: fresh epoch, historySize, historyTtlMs,
-- limit, page epoch ('' for the current one), direction ('before' or 'after'), the offset it
-- starts from (exclusive), min meta TTL ms, max bytes of the page, the bytes counted per
-- publication beyond payload and publisher.
-- Returns {epoch, offset, more, entries}: entries newest first ('before') or oldest first
-- ('after'), within the window (size and TTL); more is 1 when entries remain beyond the page.
-- Read a few at a time, as history.lua does, so a page capped by bytes copies little more
-- than it returns.
local meta, stream = KEYS[1], KEYS[2]
local epoch, offset = ensureMeta(meta, stream, ARGV[1])
if redis.call('PTTL', meta) < tonumber(ARGV[8]) then redis.call('PEXPIRE', meta, ARGV[8]) end
local size, ttl, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pageEpoch, backward, bound = ARGV[5], ARGV[6] == 'before', tonumber(ARGV[7])
if limit <= 0 or size <= 0 or (pageEpoch ~= '' and pageEpoch ~= epoch) then return { epoch, offset, 0, {} } end
local live = firstLive(stream, nowMs() - ttl)
if not live then return { epoch, offset, 0, {} } end
local low = math.max(live, offset - size + 1)
local maxBytes, overhead = tonumber(ARGV[9]), tonumber(ARGV[10])
local out, used = {}, 0
local from, to
if backward then from, to = math.min(bound - 1, offset), low else from, to = math.max(low, bound + 1), offset end
while (backward and from >= to) or (not backward and from <= to) do
  -- One more than the page needs: whether it exists is `more`.
  local count = math.min(16, limit - #out + 1)
  local batch
  if backward then batch = redis.call('XREVRANGE', stream, int(from), int(to), 'COUNT', count)
  else batch = redis.call('XRANGE', stream, int(from), int(to), 'COUNT', count) end
  if #batch == 0 then break end
  for _, entry in ipairs(batch) do
    if #out >= limit then return { epoch, offset, 1, out } end
    local bytes = #(fieldOf(entry, 'd') or '') + #(fieldOf(entry, 'f') or '') + overhead
    if #out > 0 and used + bytes > maxBytes then return { epoch, offset, 1, out } end
    used = used + bytes
    out[#out + 1] = entry
  end
  if backward then from = offsetOf(batch[#batch]) - 1 else from = offsetOf(batch[#batch]) + 1 end
end
return { epoch, offset, 0, out }
