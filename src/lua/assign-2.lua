--[[
  Assign a batch of shard hashes, each only if it has no shard yet (set-if-absent),
  so that concurrent assigners always agree; publish one event for the batch.

  KEYS[1]   P.map   hash  shard hash -> shard id
  KEYS[2]   P.list  zset  shard id -> weight

  ARGV[1]   event channel
  ARGV[2]   event JSON; its "assigned" field is set to the number of new assignments
  ARGV[3]   how the ids were chosen:
              "draw"   drawn by weight: each must still be listed with a weight above 0
              "shard"  named by the operator (--shard): it must still be listed
              "force"  named, and existing assignments are overwritten (--shard --force)
  ARGV[4..] pairs: shard hash, proposed shard id

  Returns {flags, id, id, ...}: flags has one character per pair, "1" where the
  proposed id was stored, "0" where the hash kept its assignment. Only the kept
  assignments' ids follow, in order (the caller knows the ids it proposed): a
  short reply. Before anything is written, the whole batch is refused when an id
  no longer qualifies: "STALE <id>" for a drawn id whose shard is gone or drained
  (weight 0: the caller re-reads the weights and draws again), "NOSHARD <id>" for a
  named one that is gone. A drain therefore takes effect with the next batch, whatever
  weights the caller still holds.
]]
local call = redis.call
local map = KEYS[1]
local n = #ARGV
local mode = ARGV[3]

local known = {}
for i = 5, n, 2 do
  local id = ARGV[i]
  if known[id] == nil then
    local weight = call('ZSCORE', KEYS[2], id)
    if mode == 'draw' then
      if weight == false or not (tonumber(weight) > 0) then
        return redis.error_reply('STALE ' .. id)
      end
    elseif weight == false then
      return redis.error_reply('NOSHARD ' .. id)
    end
    known[id] = true
  end
end

local force = mode == 'force'
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
