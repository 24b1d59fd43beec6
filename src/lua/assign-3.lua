--[[
  Assign a batch of shard hashes, each only if it has no shard yet (set-if-absent),
  so that concurrent assigners always agree; publish one event for the batch, and
  record the run in the history: one entry per run, whatever its number of batches.

  KEYS[1]   P.map       hash  shard hash -> shard id
  KEYS[2]   P.list      zset  shard id -> weight
  KEYS[3]   P._history  list  the audit log

  ARGV[1]   event channel
  ARGV[2]   event JSON, with a "run" field naming this run; its "assigned" field is set
            to the number of new assignments, "moved" to the hashes that had another
            shard (--force only); the history entry also has "perShard", the hashes each
            shard got (not published: the event stays small)
  ARGV[3]   how the ids were chosen:
              "draw"   drawn by weight: each must still be listed with a weight above 0
              "shard"  named by the operator (--shard): it must still be listed
              "force"  named, and existing assignments are overwritten (--shard --force)
  ARGV[4]   history length to keep
  ARGV[5..] pairs: shard hash, proposed shard id

  Returns {flags, id, id, ...}: flags has one character per pair, "1" where the
  proposed id was stored, "0" where the hash kept its assignment, "2" where it was
  moved from another shard (force). Only the kept assignments' ids, and the moved
  hashes' previous ids, follow, in order (the caller knows the ids it proposed): a
  short reply. The history entry counts the moved hashes by the shard they left
  ("movedFrom"): their keys are still there. Before anything is written, the whole batch is refused when an id
  no longer qualifies: "STALE <id>" for a drawn id whose shard is gone or drained
  (weight 0: the caller re-reads the weights and draws again), "NOSHARD <id>" for a
  named one that is gone. A drain therefore takes effect with the next batch, whatever
  weights the caller still holds.

  The history: when one of its RECENT newest entries is this run's (a few concurrent
  runs or changes may have come between), the batch's counts are added to it, where it
  is; otherwise the batch starts a new entry.
]]
local call = redis.call
local map = KEYS[1]
local history = KEYS[3]
local n = #ARGV
local mode = ARGV[3]
local RECENT = 16

-- Scripts are not rolled back on error: everything that could fail is checked first.
local historyType = call('TYPE', history)['ok']
if historyType ~= 'list' and historyType ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. history .. ' is a ' .. historyType .. ', expected list')
end

local known = {}
for i = 6, n, 2 do
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
local moved = 0
local movedFrom = {}
local perShard = {}
for i = 5, n, 2 do
  local hash = ARGV[i]
  local id = ARGV[i + 1]
  local stored = false
  local from = false
  if force then
    local current = call('HGET', map, hash)
    if current ~= id then
      call('HSET', map, hash, id)
      if current then
        moved = moved + 1
        movedFrom[current] = (movedFrom[current] or 0) + 1
        from = current
      end
      stored = true
    end
  elseif call('HSETNX', map, hash, id) == 1 then
    stored = true
  else
    kept = kept + 1
    result[kept] = call('HGET', map, hash)
  end
  if from then
    assigned = assigned + 1
    perShard[id] = (perShard[id] or 0) + 1
    flags[#flags + 1] = '2'
    kept = kept + 1
    result[kept] = from
  elseif stored then
    assigned = assigned + 1
    perShard[id] = (perShard[id] or 0) + 1
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
result[1] = table.concat(flags)

if assigned > 0 then
  local event = cjson.decode(ARGV[2])
  event.assigned = assigned
  if moved > 0 then event.moved = moved end
  call('PUBLISH', ARGV[1], cjson.encode(event))
  event.perShard = perShard
  if moved > 0 then event.movedFrom = movedFrom end

  local entry = nil
  local at = 0
  local mark = '"run":"' .. tostring(event.run) .. '"'
  for i, line in ipairs(call('LRANGE', history, 0, RECENT - 1)) do
    -- Decoded only when it names the run (a plain search): other entries cost nothing.
    if string.find(line, mark, 1, true) then
      local ok, last = pcall(cjson.decode, line)
      if ok and type(last) == 'table' and last.run == event.run and last.type == event.type then
        entry = last
        at = i - 1
        break
      end
    end
  end
  if entry then
    entry.assigned = (tonumber(entry.assigned) or 0) + assigned
    if moved > 0 then
      entry.moved = (tonumber(entry.moved) or 0) + moved
      if type(entry.movedFrom) ~= 'table' then entry.movedFrom = {} end
      for id, count in pairs(movedFrom) do entry.movedFrom[id] = (tonumber(entry.movedFrom[id]) or 0) + count end
    end
    if type(entry.perShard) ~= 'table' then entry.perShard = {} end
    for id, count in pairs(perShard) do entry.perShard[id] = (tonumber(entry.perShard[id]) or 0) + count end
    call('LSET', history, at, cjson.encode(entry))
  else
    call('LPUSH', history, cjson.encode(event))
    call('LTRIM', history, 0, tonumber(ARGV[4]) - 1)
  end
end
return result
