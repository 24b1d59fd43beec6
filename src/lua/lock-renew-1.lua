--[[
  Renew or release the operator lock, only if we still hold it.

  KEYS[1]  P._lock
  ARGV[1]  our value
  ARGV[2]  lease in milliseconds to renew for, or "0" to release

  Returns 1 when we held it, 0 when we had lost it.
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
