--[[
  Write the operation journal, only while we hold the operator lock (fencing:
  a run whose lease expired can no longer record anything). Each write renews the
  lease too: an operation that is making progress keeps its lock even when the
  renewal timer is starved.

  KEYS[1]  P._lock     string  the lock
  KEYS[2]  P._journal  string  JSON of the operation in progress
  ARGV[1]  our lock value
  ARGV[2]  the journal JSON, "" to delete it (operation finished), or "?" to only
           prove the lock is still ours (before acting on an instance)
  ARGV[3]  lease in milliseconds
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LOCKLOST the operator lock is no longer ours')
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2])
elseif ARGV[2] ~= '?' then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 'OK'
