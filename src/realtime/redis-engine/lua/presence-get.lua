-- Returns {live connection count, distinct users of the live connections}. Read-only.
local live = redis.call('ZRANGEBYSCORE', expiries, '(' .. int(nowMs()), '+inf')
if #live == 0 then return { 0, {} } end
local seen, out, count = {}, {}, 0
-- HMGET in slices: unpack() of a huge room would overflow Lua's stack.
for i = 1, #live, 500 do
  local owners = redis.call('HMGET', conns, unpack(live, i, math.min(i + 499, #live)))
  for _, user in ipairs(owners) do
    if user then
      count = count + 1
      if not seen[user] then seen[user] = true; out[#out + 1] = user end
    end
  end
end
return { count, out }
