-- Reserve one amount on every counter, all or nothing, under a lease.
-- KEYS: the distinct bases of the counters (KEYS[1] holds the lease)
-- ARGV: now_us|'' lease_id ttl_ms force n amount_n amount_t amount_r tomb_s grace
--       then per counter: base_index scope per cap_n cap_t cap_r soft_n soft_t soft_r ('' = none)
-- Returns {1} when admitted; {admitted, index, quantity, soft, <12 values per counter>} when
-- refused or forced (index 0 = no violation; quantity 1..3 = nanos, tokens, requests).
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

local keys, states, caps, softs, members = {}, {}, {}, {}, {}
for i = 1, n do
  local o = 10 + (i - 1) * 9
  local base = KEYS[tonumber(ARGV[o + 1])]
  local scope, per = ARGV[o + 2], ARGV[o + 3]
  local ws = window_start(per, t)
  keys[i] = counter_key(base, per, ws, scope)
  local st, fresh = read_state(keys[i])
  states[i] = {ws, st}
  caps[i] = {opt(ARGV[o + 4]), opt(ARGV[o + 5]), opt(ARGV[o + 6])}
  softs[i] = {opt(ARGV[o + 7]), opt(ARGV[o + 8]), opt(ARGV[o + 9])}
  members[i] = fresh and {base, scope .. '\t' .. per} or false
end

-- THE refusal rule: spent + reserved + request > cap. Hard caps first, then soft ones.
local vi, vq, soft = 0, 0, 0
for pass = 1, 2 do
  local which = pass == 1 and caps or softs
  for i = 1, n do
    local st = states[i][2]
    for q = 1, 3 do
      local cap = which[i][q]
      if vi == 0 and cap ~= nil and st[q] + st[q + 3] + amount[q] > cap then
        vi, vq, soft = i, q, pass - 1
      end
    end
  end
end

local function report(admitted)
  local out = {admitted, vi, vq, soft}
  for i = 1, n do fmt_state(out, states[i][1], states[i][2]) end
  return out
end

if vi ~= 0 and not force then return report(0) end

for i = 1, n do
  add(keys[i], 'rn', amount[1]); add(keys[i], 'rt', amount[2]); add(keys[i], 'rr', amount[3])
  if members[i] then  -- a new counter: expire it after its window, list its scope
    if amount[1] == 0 and amount[2] == 0 and amount[3] == 0 then redis.call('HSET', keys[i], 'rn', 0) end
    touch(keys[i], grace)
    redis.call('SADD', members[i][1] .. 's', members[i][2])
  end
end
local lkey = lbase .. 'l:' .. lease_id
redis.call('HSET', lkey, 'n', I(amount[1]), 't', I(amount[2]), 'r', I(amount[3]),
  'exp', I(now_ms + ttl_ms), 'k', cjson.encode(keys), 'b', lbase, 'id', lease_id)
redis.call('PEXPIRE', lkey, I(ttl_ms + tomb_s * 1000))
for i = 1, #KEYS do  -- every root's sweep can resolve it
  redis.call('ZADD', KEYS[i] .. 'lx', I(now_ms + ttl_ms), lkey)
end
if force then  -- report the states after the reservation, as for a refusal's "before" + request
  for i = 1, n do
    for q = 1, 3 do states[i][2][q + 3] = states[i][2][q + 3] + amount[q] end
  end
  return report(1)
end
return {1}
