--[[
  Assign a batch of shard hashes, each only if it has no shard yet (set-if-absent),
  so that concurrent assigners always agree; publish one event for the batch.

  KEYS[1]   P.map   hash  shard hash -> shard id
  KEYS[2]   P.list  zset  shard id -> weight

  ARGV[1]   event channel
  ARGV[2]   event JSON; its "assigned" field is set to the number of new assignments
  ARGV[3]   "1" to overwrite existing assignments (explicit --force), else "0"
  ARGV[4..] pairs: shard hash, proposed shard id

  Returns {flags, id1, id2, ...}: flags has one character per pair, "1" where the
  proposed id was stored, "0" where an existing assignment was kept; idN is the
  shard the hash now points at. An id not in P.list fails the whole batch
  ("NOSHARD <id>") before anything is written.
]]
local known = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  if known[id] == nil then
    if redis.call('ZSCORE', KEYS[2], id) == false then
      return redis.error_reply('NOSHARD ' .. id)
    end
    known[id] = true
  end
end

local force = ARGV[3] == '1'
local flags = {}
local result = {''}
local assigned = 0
for i = 4, #ARGV, 2 do
  local hash, id = ARGV[i], ARGV[i + 1]
  local stored
  if force then
    stored = redis.call('HGET', KEYS[1], hash) ~= id
    if stored then redis.call('HSET', KEYS[1], hash, id) end
    result[#result + 1] = id
  elseif redis.call('HSETNX', KEYS[1], hash, id) == 1 then
    stored = true
    result[#result + 1] = id
  else
    stored = false
    result[#result + 1] = redis.call('HGET', KEYS[1], hash)
  end
  if stored then
    assigned = assigned + 1
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
result[1] = table.concat(flags)

if assigned > 0 then
  local event = cjson.decode(ARGV[2])
  event.assigned = assigned
  redis.call('PUBLISH', ARGV[1], cjson.encode(event))
end
return result
