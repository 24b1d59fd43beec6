--[[
  What shards:verify needs to know of a batch of keys before it compares their
  values, in one round trip (verify/compare.ts). Reads only (so an instance over its
  maxmemory runs it too); a batch is a few hundred keys, so the script stays short.

  Variadic: KEYS  the keys of the batch
  ARGV[1]  PEXPIRETIME (absolute, Redis 7) or PTTL (relative, before); "" for the
           type alone (a key looked up for existence)
  ARGV[2]  strings of at most this many bytes also give the SHA-1 of their value
           (a batch of short strings is then compared without reading their values)

  Returns per key: its type; and unless ARGV[1] is "", its expiry (-1: none), its
  length (STRLEN, LLEN, SCARD, ZCARD, HLEN or XLEN; -1 for a type without one) and
  its MEMORY USAGE (an estimate from a few elements: cheap whatever its size), and
  the SHA-1 of a string of at most ARGV[2] bytes ("" for any other key).
]]
local lengths = {string = 'STRLEN', list = 'LLEN', set = 'SCARD', zset = 'ZCARD', hash = 'HLEN', stream = 'XLEN'}
local out = {}
for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)['ok']
  out[#out + 1] = t
  if ARGV[1] ~= '' then
    if t == 'none' then
      out[#out + 1] = -2
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = ''
    else
      out[#out + 1] = redis.call(ARGV[1], key)
      local length = lengths[t]
      local n = length and redis.call(length, key) or -1
      out[#out + 1] = n
      out[#out + 1] = redis.call('MEMORY', 'USAGE', key) or 0
      if t == 'string' and n <= tonumber(ARGV[2]) then
        out[#out + 1] = redis.sha1hex(redis.call('GET', key))
      else
        out[#out + 1] = ''
      end
    end
  end
end
return out
