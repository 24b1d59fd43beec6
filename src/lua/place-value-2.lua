--[[
  Put a value built in pieces under a temporary key onto its key, with its expiry, in
  one step: a reader sees no key, then the whole value.

  KEYS[1]  the temporary key the pieces built
  KEYS[2]  the value's key
  ARGV[1]  its absolute expiry in milliseconds since the epoch, or "0" for none

  Returns OK; a BUSYKEY error (the temporary key untouched) when the key exists, as
  RESTORE without REPLACE would.
]]
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('BUSYKEY Target key name already exists.')
end
redis.call('RENAME', KEYS[1], KEYS[2])
if ARGV[1] ~= '0' then
  redis.call('PEXPIREAT', KEYS[2], ARGV[1])
end
return 'OK'
