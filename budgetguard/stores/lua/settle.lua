-- Replace a lease by the actual cost, exactly once (mode 'settle'), or drop it (mode 'release').
-- KEYS: the distinct bases (KEYS[1] holds the lease)
-- ARGV: now_us|'' lease_id act_n act_t act_r estimated count_overshoot tomb_s grace mode n
--       then per counter: base_index scope per (used only for a lease this store never saw)
-- Returns 'settled' | 'late' | 'unreserved' | 'replay' (settle); 'released' | 'none' (release).
-- Releasing a lease that already expired refunds the estimate it was charged.
local now = now_us(ARGV[1])
local now_ms = math.floor(now / 1000)
local t = math.floor(now / 1000000)
local lease_id = ARGV[2]
local act = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local estimated, count_over = ARGV[6] == '1', ARGV[7] == '1'
local tomb_s, grace, mode, n = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end

local lbase = KEYS[1]
local lkey, xkey, dkey = lbase .. 'l:' .. lease_id, lbase .. 'x:' .. lease_id, lbase .. 'd:' .. lease_id
if redis.call('EXISTS', dkey) == 1 then
  if mode == 'release' then return 'none' end
  return 'replay'
end

local function done()
  redis.call('SET', dkey, '1', 'EX', I(tomb_s))
end

local function overshoot(ck, basis)
  if not count_over then return end
  if act[1] > basis[1] or act[2] > basis[2] or act[3] > basis[3] then
    add(ck, 'oc', 1)
    local names = {'on', 'ot', 'orq'}
    for q = 1, 3 do
      if act[q] > basis[q] then add(ck, names[q], act[q] - basis[q]) end
    end
  end
end

local f = redis.call('HMGET', lkey, 'n', 't', 'r', 'k')
if f[1] then
  local amt = {tonumber(f[1]), tonumber(f[2]), tonumber(f[3])}
  for _, ck in ipairs(cjson.decode(f[4])) do
    unreserve(ck, amt[1], amt[2], amt[3])
    if mode ~= 'release' then
      add(ck, 'sn', act[1]); add(ck, 'st', act[2]); add(ck, 'sr', act[3])
      overshoot(ck, amt)
      if estimated then add(ck, 'ec', 1) end
    end
    touch(ck, grace)
  end
  redis.call('DEL', lkey)
  for i = 1, #KEYS do redis.call('ZREM', KEYS[i] .. 'lx', lkey) end
  done()
  if mode == 'release' then return 'released' end
  return 'settled'
end

local x = redis.call('HMGET', xkey, 'n', 't', 'r', 'k')
if mode == 'release' then
  if not x[1] then
    done()  -- a reserve that arrives late (after a client timeout) must find the lease closed
    return 'none'
  end
  act = {0, 0, 0}  -- expired and charged, but the call never ran: refund the estimate
  count_over, estimated = false, false
end
if x[1] then
  -- expired earlier and charged its estimate: replace that charge by the actual
  local amt = {tonumber(x[1]), tonumber(x[2]), tonumber(x[3])}
  local names = {'sn', 'st', 'sr'}
  for _, ck in ipairs(cjson.decode(x[4])) do
    local cur = redis.call('HMGET', ck, 'sn', 'st', 'sr', 'ec')
    for q = 1, 3 do
      local v = (tonumber(cur[q] or '0') or 0) - amt[q] + act[q]
      if v < 0 then v = 0 end
      redis.call('HSET', ck, names[q], I(v))
    end
    local ec = (tonumber(cur[4] or '0') or 0) - 1  -- as apply_settle: un-count, floor, then count
    if ec < 0 then ec = 0 end
    if estimated then ec = ec + 1 end
    redis.call('HSET', ck, 'ec', I(ec))
    overshoot(ck, amt)
    touch(ck, grace)
  end
  redis.call('DEL', xkey)
  done()
  if mode == 'release' then return 'released' end
  return 'late'
end

-- never reserved here (or forgotten): record the actual on the current windows
for i = 1, n do
  local o = 11 + (i - 1) * 3
  local base = KEYS[tonumber(ARGV[o + 1])]
  local scope, per = ARGV[o + 2], ARGV[o + 3]
  local ck = counter_key(base, per, window_start(per, t), scope)
  add(ck, 'sn', act[1]); add(ck, 'st', act[2]); add(ck, 'sr', act[3])
  if estimated then add(ck, 'ec', 1) end
  touch(ck, grace)
  redis.call('SADD', base .. 's', scope .. '\t' .. per)
end
done()
return 'unreserved'
