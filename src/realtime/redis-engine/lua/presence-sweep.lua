-- Returns {earliest expiry ('' when the room is empty), vanished users}.
local vanished = purge(nowMs())
return { earliest(), vanished }
