--[[
  Apply one change to the registry atomically, after checking its preconditions,
  then record it in the history and publish its event.

  Variadic: the caller passes numkeys.
  KEYS[1]   history list (bounded audit log)
  KEYS[2..] keys the checks and operations refer to, by index into KEYS

  ARGV[1]   JSON {checks: [...], ops: [...]}
            checks: {t="type", k, is}        TYPE of key k is one of the list is ("none" = absent)
                    {t="hget", k, f, v}      field f of hash k equals v (v absent: field absent)
                    {t="zmember", k, m, in}  member m is (in=true) / is not (in=false) in zset k
                    {t="get", k, v}          string key k holds v (the operator lock: fencing)
                    {t="nodes", k, v}        hash k's node fields (master, slaveN, persistN) are
                                             exactly v (a field -> address table): none added,
                                             none changed, none gone; other fields are free
                    {t="instance", k, p, at, ids}
                                             the shards of zset k (keys p .. id) whose master
                                             starts with "at" ("host:port/") are exactly ids
                    {t="absent", k}          key k does not exist (it appeared: conflict)
            ops:    {op="hset", k, fields}   {op="hdel", k, fields}   {op="del", k}
                    {op="hsetargv", k, from, n}
                                             HSET k with n field/value pairs taken from
                                             ARGV[5 + from] on: bytes JSON cannot carry
                    {op="zadd", k, m, score} {op="zrem", k, m}
                    {op="rename", k, to}     RENAME k to KEYS[to] (O(1): a staged hash into place)
                    {op="merge", k, to, limit, nx, cas}
                                             move hash k's fields into hash KEYS[to], at most
                                             `limit` of them (all when absent); with nx, a field
                                             KEYS[to] has meanwhile keeps its value; with cas
                                             (a key index), a field is set only while KEYS[to]
                                             still holds the value hash KEYS[cas] has for it
                                             (taken from KEYS[cas] too)
  ARGV[2]   event channel
  ARGV[3]   event JSON (published as is, and pushed to the history)
  ARGV[4]   history length to keep
  ARGV[5..] values of hsetargv operations

  Returns the number of fields a merge left as they were because they held another
  value than the one it brings (assigned or moved meanwhile), or an error reply
  "CONFLICT <what differs>" and changes nothing.
]]
local change = cjson.decode(ARGV[1])

-- Scripts are not rolled back on error: everything that could fail is checked
-- before the first write, the history's type included.
local historyType = redis.call('TYPE', KEYS[1])['ok']
if historyType ~= 'list' and historyType ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is a ' .. historyType .. ', expected list')
end

for _, c in ipairs(change.checks or {}) do
  local key = KEYS[c.k]
  if c.t == 'type' then
    local actual = redis.call('TYPE', key)['ok']
    local allowed = false
    for _, t in ipairs(c.is) do
      if t == actual then allowed = true end
    end
    if not allowed then
      return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. actual .. ', expected ' .. table.concat(c.is, ' or '))
    end
  elseif c.t == 'hget' then
    local actual = redis.call('HGET', key, c.f)
    local expected = c.v
    if expected == nil or expected == cjson.null then expected = false end
    if actual ~= expected then
      return redis.error_reply('CONFLICT ' .. key .. ' ' .. c.f .. ' changed underneath (now ' .. tostring(actual) .. ')')
    end
  elseif c.t == 'zmember' then
    local present = redis.call('ZSCORE', key, c.m) ~= false
    if present ~= c['in'] then
      return redis.error_reply('CONFLICT ' .. c.m .. (present and ' is' or ' is not') .. ' in ' .. key)
    end
  elseif c.t == 'get' then
    if redis.call('GET', key) ~= c.v then
      return redis.error_reply('LOCKLOST the operator lock is no longer ours')
    end
  elseif c.t == 'absent' then
    if redis.call('EXISTS', key) == 1 then
      return redis.error_reply('CONFLICT ' .. key .. ' appeared meanwhile')
    end
  elseif c.t == 'nodes' then
    local flat = redis.call('HGETALL', key)
    local seen = 0
    for i = 1, #flat, 2 do
      local f = flat[i]
      if f == 'master' or string.match(f, '^slave%d+$') or string.match(f, '^persist%d+$') then
        if c.v[f] == nil then
          return redis.error_reply('CONFLICT ' .. key .. ' gained ' .. f .. ' (' .. flat[i + 1] .. ') underneath')
        elseif c.v[f] ~= flat[i + 1] then
          return redis.error_reply('CONFLICT ' .. key .. ' ' .. f .. ' changed underneath (now ' .. flat[i + 1] .. ')')
        end
        seen = seen + 1
      end
    end
    local expected = 0
    for _ in pairs(c.v) do expected = expected + 1 end
    if seen ~= expected then
      return redis.error_reply('CONFLICT ' .. key .. ' nodes changed underneath (' .. seen .. ' now, ' .. expected .. ' planned)')
    end
  elseif c.t == 'instance' then
    local wanted = {}
    for _, id in ipairs(c.ids) do wanted[id] = true end
    local found = 0
    for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      local master = redis.call('HGET', c.p .. id, 'master')
      if master and string.sub(master, 1, #c.at) == c.at then
        if not wanted[id] then
          return redis.error_reply('CONFLICT shard ' .. id .. ' was registered on ' .. string.sub(c.at, 1, -2) .. ' meanwhile')
        end
        found = found + 1
      end
    end
    if found ~= #c.ids then
      return redis.error_reply('CONFLICT the shards on ' .. string.sub(c.at, 1, -2) .. ' changed underneath')
    end
  else
    return redis.error_reply('ERR unknown check ' .. tostring(c.t))
  end
end

local kept = 0
for _, o in ipairs(change.ops or {}) do
  local key = KEYS[o.k]
  if o.op == 'hset' then
    local args = {}
    for f, v in pairs(o.fields) do
      args[#args + 1] = f
      args[#args + 1] = v
    end
    if #args > 0 then redis.call('HSET', key, unpack(args)) end
  elseif o.op == 'hsetargv' then
    if o.n > 0 then
      local args = {}
      for j = 1, 2 * o.n do args[j] = ARGV[4 + o.from + j] end
      redis.call('HSET', key, unpack(args))
    end
  elseif o.op == 'hdel' then
    if #o.fields > 0 then redis.call('HDEL', key, unpack(o.fields)) end
  elseif o.op == 'del' then
    redis.call('DEL', key)
  elseif o.op == 'zadd' then
    redis.call('ZADD', key, o.score, o.m)
  elseif o.op == 'zrem' then
    redis.call('ZREM', key, o.m)
  elseif o.op == 'rename' then
    if redis.call('EXISTS', key) == 1 then redis.call('RENAME', key, KEYS[o.to]) end
  elseif o.op == 'merge' then
    local moved = 0
    local limit = o.limit or math.huge
    local cursor = '0'
    repeat
      -- Follow the cursor: a page can be empty while the hash is not (emptied buckets).
      local reply = redis.call('HSCAN', key, cursor, 'COUNT', 500)
      cursor = reply[1]
      local page = reply[2]
      local fields = {}
      for i = 1, #page, 2 do fields[#fields + 1] = page[i] end
      if #page == 0 then
        -- nothing in this page
      elseif o.nx then
        for i = 1, #page, 2 do
          if redis.call('HSETNX', KEYS[o.to], page[i], page[i + 1]) == 0 and redis.call('HGET', KEYS[o.to], page[i]) ~= page[i + 1] then
            kept = kept + 1
          end
        end
      elseif o.cas then
        for i = 1, #page, 2 do
          local now = redis.call('HGET', KEYS[o.to], page[i])
          if now == redis.call('HGET', KEYS[o.cas], page[i]) then
            redis.call('HSET', KEYS[o.to], page[i], page[i + 1])
          elseif now ~= page[i + 1] then
            kept = kept + 1
          end
        end
        if #fields > 0 then redis.call('HDEL', KEYS[o.cas], unpack(fields)) end
      else
        redis.call('HSET', KEYS[o.to], unpack(page))
      end
      if #fields > 0 then redis.call('HDEL', key, unpack(fields)) end
      moved = moved + #fields
    until cursor == '0' or moved >= limit
  else
    return redis.error_reply('ERR unknown operation ' .. tostring(o.op))
  end
end

redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[4]) - 1)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return kept
