-- Record limit definitions (budgetguard/definitions.py), idempotent: one hash field per
-- definition, its value the last time a guard wrote it.
-- KEYS[1]: <prefix>limits. ARGV: now (epoch seconds), then the definitions' texts.
local args = {KEYS[1]}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
  args[#args + 1] = ARGV[1]
end
if #args > 1 then redis.call('HSET', unpack(args)) end
return #ARGV - 1
