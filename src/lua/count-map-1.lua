--[[
  Count the hashes of one HSCAN slice of the map per shard, on the server: the map
  never crosses the network, and each call is bounded by its COUNT (a few ms), so the
  registry keeps answering applications between slices.

  KEYS[1]  P.map  hash  shard hash -> shard id
  ARGV[1]  HSCAN cursor ("0" to start)
  ARGV[2]  COUNT hint for the slice

  Returns {next cursor, entries scanned, id, count, id, count, ...}.
]]
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local flat = reply[2]
local counts = {}
for i = 2, #flat, 2 do
  local id = flat[i]
  counts[id] = (counts[id] or 0) + 1
end
local out = {reply[1], tostring(#flat / 2)}
for id, n in pairs(counts) do
  out[#out + 1] = id
  out[#out + 1] = tostring(n)
end
return out
