--[[
  Write the operation journal, only while we hold the operator lock (fencing:
  a run whose lease expired can no longer record anything).

  KEYS[1]  P._lock     string  the lock
  KEYS[2]  P._journal  string  JSON of the operation in progress
  ARGV[1]  our lock value
  ARGV[2]  the journal JSON, or "" to delete it (operation finished)
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST the operator lock is no longer ours')
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
return 'OK'
