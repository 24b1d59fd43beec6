--[[
  Empty some databases of an instance in one step, as the last command of the split's
  release (see ops/split.ts): after the fence is lifted and before any other client's
  command runs, the source drops the databases that moved.

  Variadic: no keys (it empties whole databases).
  ARGV[1..]  database numbers

  Returns the number of databases emptied. A script's SELECT does not change the
  caller's database.
]]
for _, db in ipairs(ARGV) do
  redis.call('SELECT', tonumber(db))
  redis.call('FLUSHDB', 'ASYNC')
end
return #ARGV
