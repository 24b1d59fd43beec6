--[[
  Read a slice of shard hashes in one call: a snapshot of hundreds or thousands of
  shards takes a few script calls instead of a command per shard, and each call is
  short (the caller bounds the slice), so applications reading the registry never wait
  long between them.

  Variadic: KEYS are P.<id> hashes.

  Returns one element per key, in order: its HGETALL reply (a flat field, value list;
  empty when the key does not exist), or the error reply of reading it (WRONGTYPE for a
  key that is not a hash), so that one broken shard does not hide the others.
]]
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.pcall('HGETALL', key)
end
return out
