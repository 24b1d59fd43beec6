--[[
  Take the operator lock (a lease) if it is free, or if it still holds exactly
  the value of a holder known to be dead.

  KEYS[1]  P._lock  string  JSON of the holder, with a random token
  ARGV[1]  our value
  ARGV[2]  lease in milliseconds
  ARGV[3]  the value of a dead holder we may replace, or ""

  Returns "OK", or {current value, remaining ms} when someone else holds it.
]]
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 'OK'
end
local current = redis.call('GET', KEYS[1])
if ARGV[3] ~= '' and current == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'OK'
end
return {current, redis.call('PTTL', KEYS[1])}
