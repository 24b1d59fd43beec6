--[[
  What shards:verify needs to know of a batch of keys before it compares their
  values, in one round trip (verify/compare.ts). Reads only (so an instance over its
  maxmemory runs it too); a batch is a few hundred keys, so the script stays short.

  Variadic: KEYS  the keys of the batch
  ARGV[1]  PEXPIRETIME (absolute, Redis 7) or PTTL (relative, before)
  ARGV[2]  strings of at most this many bytes also give the SHA-1 of their value
           (a batch of short strings is then compared without reading their values)

  Returns one string, a line per key ("\n" between them), its fields apart by " ":
  type, expiry (-1: none; -2: no key), length (STRLEN, LLEN, SCARD, ZCARD, HLEN or
  XLEN; -1 for a type without one), memory and, for a string of at most ARGV[2]
  bytes, the SHA-1 of its value (else nothing). Memory is MEMORY USAGE (an estimate
  from a few elements: cheap whatever the key's size), but for a string its length.
  One string, not an array of five elements a key: both the server's reply and the
  caller's parsing cost a fraction.
]]
local lengths = {string = 'STRLEN', list = 'LLEN', set = 'SCARD', zset = 'ZCARD', hash = 'HLEN', stream = 'XLEN'}
local call = redis.call
local expiry = ARGV[1]
local digestBytes = tonumber(ARGV[2])
-- Whole numbers as all their digits: Lua's own conversion keeps 14 (an expiry in ms reaches 15).
local function int(n)
  return string.format('%.0f', n)
end
local out = {}
for i, key in ipairs(KEYS) do
  local t = call('TYPE', key)['ok']
  if t == 'none' then
    out[i] = 'none -2 0 0'
  elseif t == 'string' then
    -- A string short enough to digest is read whole in one call, its length with it;
    -- a longer one never is (a 100 MB value is not copied into the script).
    local head = digestBytes >= 0 and call('GETRANGE', key, 0, digestBytes) or ''
    local n = #head <= digestBytes and #head or call('STRLEN', key)
    local line = 'string ' .. int(call(expiry, key)) .. ' ' .. n .. ' ' .. n
    if n <= digestBytes then line = line .. ' ' .. redis.sha1hex(head) end
    out[i] = line
  else
    local length = lengths[t]
    out[i] = t .. ' ' .. int(call(expiry, key)) .. ' ' .. int(length and call(length, key) or -1) .. ' ' .. int(call('MEMORY', 'USAGE', key) or 0)
  end
end
return table.concat(out, '\n')
