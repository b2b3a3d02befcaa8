-- Zero a scope's counters in every period it has used (current windows; older ones expire).
-- KEYS[1]: the scope's base. ARGV: now_us|'' scope
local now = now_us(ARGV[1])
local t = math.floor(now / 1000000)
local scope = ARGV[2]
local removed = 0
local members = redis.call('ZRANGE', KEYS[1] .. 'sz', 0, -1)
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1] .. 's')) do members[#members + 1] = m end  -- older versions
local done = {}
for _, member in ipairs(members) do
  local s, per = string.match(member, '^(.*)\t(%a+)$')
  if s == scope and not done[per] then
    done[per] = true
    removed = removed + redis.call('DEL', counter_key(KEYS[1], per, window_start(per, t), scope))
  end
end
return removed
