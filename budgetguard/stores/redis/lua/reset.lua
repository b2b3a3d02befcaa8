-- Zero a scope's counters in every period it has used (current windows; older ones expire).
-- KEYS[1]: the scope's base. ARGV: now_us|'' scope ledger_maxlen ledger_age_ms
-- The ledger gets one 'reset' record taking back what the counters had spent.
local now = now_us(ARGV[1])
local t = math.floor(now / 1000000)
local scope = ARGV[2]
ledger_config(ARGV[3], ARGV[4])
local charges = {}
local removed = 0
local members = redis.call('ZRANGE', KEYS[1] .. 'sz', 0, -1)
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1] .. 's')) do members[#members + 1] = m end  -- older versions
local done = {}
for _, member in ipairs(members) do
  local s, per = string.match(member, '^(.*)\t(%a+)$')
  if s == scope and not done[per] then
    done[per] = true
    local ck = counter_key(KEYS[1], per, window_start(per, t), scope)
    local st = load(ck, {1, 2, 3})
    charge(charges, ck, st, {0, 0, 0})
    removed = removed + redis.call('DEL', ck)
  end
end
if removed > 0 then ledger_add(KEYS[1], now, 'reset', '', false, {0, 0, 0}, charges, '') end
return removed
