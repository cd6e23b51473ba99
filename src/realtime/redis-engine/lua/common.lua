-- Functions every engine script starts with (the loader puts this file first).
-- Every script touches the keys of one room only (one hash tag), so it also runs on Redis
-- Cluster; times come from the server's clock (TIME), so every node agrees on them.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%.0f', n) end
local function offsetOf(entry) return tonumber(string.match(entry[1], '^(%d+)')) end
local function fieldOf(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do if f[i] == name then return f[i + 1] end end
  return nil
end
local function timeOf(entry) return tonumber(fieldOf(entry, 't') or 0) end
-- Bytes of the stream's publications before this entry, in this epoch (0 for entries stored
-- before streams counted bytes).
local function startOf(entry) return tonumber(fieldOf(entry, 'c') or 0) end
-- Offset of the oldest entry for which keep(entry) holds, where keep is false on a prefix of
-- the stream and true after it (entries are appended in time and byte order): binary search.
-- nil when it holds for none or none is held.
local function firstWhere(stream, keep)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if not first then return nil end
  if keep(first) then return offsetOf(first) end
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if not keep(last) then return nil end
  local lo, hi = offsetOf(first), offsetOf(last)
  local bound = hi
  while bound - lo > 1 do
    local mid = math.floor((lo + bound) / 2)
    local entry = redis.call('XRANGE', stream, int(mid), '+', 'COUNT', 1)[1]
    local o = offsetOf(entry)
    if o >= bound then bound = mid
    elseif keep(entry) then hi = o; bound = o
    else lo = o end
  end
  return hi
end
-- Offset of the oldest entry stored after cutoff, or nil when every entry expired.
local function firstLive(stream, cutoff)
  return firstWhere(stream, function(entry) return timeOf(entry) > cutoff end)
end
-- The room's epoch and offset, creating the stream (offset 0, the caller's fresh epoch) when
-- missing. A stream key left without its meta belongs to no epoch any more: it goes.
local function ensureMeta(meta, stream, newEpoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = newEpoch
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
  end
  return epoch, tonumber(redis.call('HGET', meta, 'offset'))
end
