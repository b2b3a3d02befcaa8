-- Reserve one amount on every counter, all or nothing, under a lease.
-- KEYS: the distinct bases of the counters (KEYS[1] holds the lease)
-- ARGV: now_us|'' lease_id ttl_ms force n amount_n amount_t amount_r tomb_s grace
--       then per counter: base_index scope per expire_after_ms (0 = none)
--                         cap_n cap_t cap_r soft_n soft_t soft_r ('' = none)
--       then the ledger's retention: maxlen age_ms (for the leases the sweep charges)
-- Returns {1} when admitted; {admitted, index, quantity, soft, <1 + #FIELDS values per counter>}
-- when refused or forced (index 0 = no violation; quantity 1..3 = nanos, tokens, requests).
local now = now_us(ARGV[1])
local now_ms = math.floor(now / 1000)
local t = math.floor(now / 1000000)
local lease_id, ttl_ms, force, n = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local amount = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local tomb_s, grace = tonumber(ARGV[9]), tonumber(ARGV[10])  -- then the counters, from ARGV[11]
ledger_config(ARGV[11 + n * 10], ARGV[12 + n * 10])
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end

local lbase = KEYS[1]
if redis.call('HEXISTS', lbase .. 'L', lease_id) == 1 or closed(lbase, lease_id, now, tomb_s)
  or redis.call('EXISTS', lbase .. 'x:' .. lease_id) == 1 then
  return {1}  -- a replayed reserve (live, closed or expired lease): never reserve twice
end

-- load what first_violation and apply_reserve read (and the estimated count: a counter that has
-- any field is not new)
local at = {1, 2, 3, 4, 5, 6, 11}  -- spent, reserved, estimated_count
local keys, starts, states, befores, fresh, specs, eas = {}, {}, {}, {}, {}, {}, {}
for i = 1, n do
  local o = 10 + (i - 1) * 10
  local base = KEYS[tonumber(ARGV[o + 1])]
  local scope, per = ARGV[o + 2], ARGV[o + 3]
  starts[i] = window_start(per, t)
  keys[i] = counter_key(base, per, starts[i], scope)
  states[i], befores[i], fresh[i] = load(keys[i], at)
  eas[i] = tonumber(ARGV[o + 4])
  specs[i] = {tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6]), tonumber(ARGV[o + 7]),  -- '' (none): nil
              tonumber(ARGV[o + 8]), tonumber(ARGV[o + 9]), tonumber(ARGV[o + 10])}
end

local vi, vq, soft = first_violation(specs, states, amount)

-- A refusal or a forced reserve reports every field: load the overshoots too.
local function report(admitted)
  local over = {7, 8, 9, 10}  -- overshoot_count, overshoot
  local out = {admitted, vi, vq, soft}
  for i = 1, n do
    local st, more = states[i], load(keys[i], over)
    for j = 1, #over do st[over[j]] = more[over[j]] end
    fmt_state(out, starts[i], st)
  end
  return out
end

if vi ~= 0 and not force then return report(0) end

-- apply, write (a counter listed twice gets both reservations: the second adds on)
local written = {}
for i = 1, n do
  local ck = keys[i]
  apply_reserve(states[i], amount)
  if not write(ck, at, befores[i], states[i], written[ck]) and fresh[i] then ensure(ck) end
  written[ck] = true
  if fresh[i] or eas[i] > 0 then  -- a new counter: expire it after its window, list its scope
    touch(ck, grace, now_ms, eas[i], fresh[i])  -- (an expiring one: at every use)
  end
end
redis.call('HSET', lbase .. 'L', lease_id, lease_text(amount, keys, eas))
local member = lbase .. 'l:' .. lease_id
for i = 1, #KEYS do  -- every root's sweep can resolve it
  redis.call('ZADD', KEYS[i] .. 'lx', I(now_ms + ttl_ms), member)
end
if force then return report(1) end  -- the states after the reservation: "before" + request
return {1}
