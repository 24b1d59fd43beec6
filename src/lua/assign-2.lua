--[[
  Assign a batch of shard hashes, each only if it has no shard yet (set-if-absent),
  so that concurrent assigners always agree; publish one event for the batch.

  KEYS[1]   P.map   hash  shard hash -> shard id
  KEYS[2]   P.list  zset  shard id -> weight

  ARGV[1]   event channel
  ARGV[2]   event JSON; its "assigned" field is set to the number of new assignments
  ARGV[3]   "1" to overwrite existing assignments (explicit --force), else "0"
  ARGV[4..] pairs: shard hash, proposed shard id

  Returns {flags, id, id, ...}: flags has one character per pair, "1" where the
  proposed id was stored, "0" where the hash kept its assignment. Only the kept
  assignments' ids follow, in order (the caller knows the ids it proposed): a
  short reply. An id not in P.list fails the whole batch ("NOSHARD <id>")
  before anything is written.
]]
local call = redis.call
local map = KEYS[1]
local n = #ARGV

local known = {}
for i = 5, n, 2 do
  local id = ARGV[i]
  if known[id] == nil then
    if call('ZSCORE', KEYS[2], id) == false then
      return redis.error_reply('NOSHARD ' .. id)
    end
    known[id] = true
  end
end

local force = ARGV[3] == '1'
local flags = {}
local result = {''}
local kept = 1
local assigned = 0
for i = 4, n, 2 do
  local hash = ARGV[i]
  if force then
    local id = ARGV[i + 1]
    if call('HGET', map, hash) ~= id then
      call('HSET', map, hash, id)
      assigned = assigned + 1
      flags[#flags + 1] = '1'
    else
      flags[#flags + 1] = '0'
    end
  elseif call('HSETNX', map, hash, ARGV[i + 1]) == 1 then
    assigned = assigned + 1
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
    kept = kept + 1
    result[kept] = call('HGET', map, hash)
  end
end
result[1] = table.concat(flags)

if assigned > 0 then
  local event = cjson.decode(ARGV[2])
  event.assigned = assigned
  call('PUBLISH', ARGV[1], cjson.encode(event))
end
return result
