-- Reserve one amount on every counter, all or nothing, under a lease.
-- KEYS: the distinct bases of the counters (KEYS[1] holds the lease)
-- ARGV: now_us|'' lease_id ttl_ms force n amount_n amount_t amount_r tomb_s grace
--       then per counter: base_index scope per cap_n cap_t cap_r soft_n soft_t soft_r ('' = none)
-- Returns {1} when admitted; {admitted, index, quantity, soft, <1 + #FIELDS values per counter>}
-- when refused or forced (index 0 = no violation; quantity 1..3 = nanos, tokens, requests).
local now = now_us(ARGV[1])
local now_ms = math.floor(now / 1000)
local t = math.floor(now / 1000000)
local lease_id, ttl_ms, force, n = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local amount = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local tomb_s, grace = tonumber(ARGV[9]), tonumber(ARGV[10])  -- then the counters, from ARGV[11]
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end

local lbase = KEYS[1]
if redis.call('EXISTS', lbase .. 'l:' .. lease_id, lbase .. 'd:' .. lease_id, lbase .. 'x:' .. lease_id) > 0 then
  return {1}  -- a replayed reserve (live, closed or expired lease): never reserve twice
end

-- load what first_violation and apply_reserve read (and the estimated count: a counter that has
-- any field is not new)
local at = {1, 2, 3, 4, 5, 6, 11}  -- spent, reserved, estimated_count
local keys, starts, states, befores, fresh, specs, members = {}, {}, {}, {}, {}, {}, {}
for i = 1, n do
  local o = 10 + (i - 1) * 9
  local base = KEYS[tonumber(ARGV[o + 1])]
  local scope, per = ARGV[o + 2], ARGV[o + 3]
  starts[i] = window_start(per, t)
  keys[i] = counter_key(base, per, starts[i], scope)
  states[i], befores[i], fresh[i] = load(keys[i], at)
  specs[i] = {tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6]),  -- '' (none): nil
              tonumber(ARGV[o + 7]), tonumber(ARGV[o + 8]), tonumber(ARGV[o + 9])}
  if fresh[i] then members[i] = {base .. 's', scope .. '\t' .. per} end
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
  if fresh[i] then  -- a new counter: expire it after its window, list its scope
    touch(ck, grace)
    redis.call('SADD', members[i][1], members[i][2])
  end
end
local lkey = lbase .. 'l:' .. lease_id
redis.call('HSET', lkey, 'n', I(amount[1]), 't', I(amount[2]), 'r', I(amount[3]),
  'exp', I(now_ms + ttl_ms), 'k', cjson.encode(keys), 'b', lbase, 'id', lease_id)
redis.call('PEXPIRE', lkey, I(ttl_ms + tomb_s * 1000))
for i = 1, #KEYS do  -- every root's sweep can resolve it
  redis.call('ZADD', KEYS[i] .. 'lx', I(now_ms + ttl_ms), lkey)
end
if force then return report(1) end  -- the states after the reservation: "before" + request
return {1}
