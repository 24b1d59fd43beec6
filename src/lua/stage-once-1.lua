--[[
  Stage a batch of an import's map entries, each hash once (registry/document.ts).

  KEYS[1]  a staging hash
  ARGV     hash, id, hash, id, ...

  Each entry is set only if the staging hash lacks its hash. Returns the first hash
  that was staged already: the document names it twice (JSON keeps the last of two
  equal names silently; an import must not), and nothing after it is staged. false
  when every hash was new.
]]
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 0 then
    return ARGV[i]
  end
end
return false
