#!lua flags=no-writes
--[[
  Read one SCAN page of keys for a restore's copy (see backup/copy.ts): each key's DUMP
  payload and its absolute expiry time, in one command instead of two per key. It runs
  on the temporary redis-server a restore loads a snapshot into, never on the fleet.

  Variadic: KEYS  the keys of the page
  Returns payload1, expireAt1, payload2, expireAt2, ...: a payload is nil for a key that
  is gone (expired: a replica no longer shows it); expireAt is PEXPIRETIME's answer, in
  milliseconds since the epoch (-1: no expiry, -2: gone).
]]
local out = {}
for i, key in ipairs(KEYS) do
  out[2 * i - 1] = redis.call('DUMP', key)
  out[2 * i] = redis.call('PEXPIRETIME', key)
end
return out
