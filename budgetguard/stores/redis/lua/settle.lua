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
local release = mode == 'release'
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end

local lbase = KEYS[1]
local lkey, xkey, dkey = lbase .. 'l:' .. lease_id, lbase .. 'x:' .. lease_id, lbase .. 'd:' .. lease_id
if redis.call('EXISTS', dkey) == 1 then
  if release then return 'none' end
  return 'replay'
end

local function done(outcome)
  redis.call('SET', dkey, '1', 'EX', I(tomb_s))
  if release then return 'released' end
  return outcome
end

-- a live lease: apply_release, or apply_settle against its reservation
local f = redis.call('HMGET', lkey, 'n', 't', 'r', 'k')
if f[1] then
  local reserved = amount_of(f)
  local create = reserved[1] ~= 0 or reserved[2] ~= 0 or reserved[3] ~= 0  -- keep the hash
  local at = release and {4, 5, 6}  -- reserved
    or settle_fields(reserved, nil, act, estimated, count_over)
  for _, ck in ipairs(cjson.decode(f[4])) do
    local st, before = load(ck, at)
    if release then
      apply_release(st, reserved)
    else
      apply_settle(st, reserved, nil, act, estimated, count_over)
    end
    if not write(ck, at, before, st) and create then ensure(ck) end
    touch(ck, grace)
  end
  redis.call('DEL', lkey)
  for i = 1, #KEYS do redis.call('ZREM', KEYS[i] .. 'lx', lkey) end
  return done('settled')
end

-- an expired lease, charged its estimate: apply_settle replaces that charge by the actual
local x = redis.call('HMGET', xkey, 'n', 't', 'r', 'k')
if release then
  if not x[1] then
    redis.call('SET', dkey, '1', 'EX', I(tomb_s))  -- a reserve that arrives late (after a client
    return 'none'                                   -- timeout) must find the lease closed
  end
  act = {0, 0, 0}  -- expired and charged, but the call never ran: refund the estimate
  count_over, estimated = false, false
end
if x[1] then
  local charged = amount_of(x)
  local at = settle_fields(nil, charged, act, estimated, count_over)
  for _, ck in ipairs(cjson.decode(x[4])) do
    local st, before = load(ck, at)
    apply_settle(st, nil, charged, act, estimated, count_over)
    if not write(ck, at, before, st) then ensure(ck) end
    touch(ck, grace)
  end
  redis.call('DEL', xkey)
  return done('late')
end

-- never reserved here (or forgotten): apply_settle with no lease on the current windows
local at = settle_fields(nil, nil, act, estimated, true)
for i = 1, n do
  local o = 11 + (i - 1) * 3
  local base = KEYS[tonumber(ARGV[o + 1])]
  local scope, per = ARGV[o + 2], ARGV[o + 3]
  local ck = counter_key(base, per, window_start(per, t), scope)
  local st, before = load(ck, at)
  apply_settle(st, nil, nil, act, estimated, true)
  write(ck, at, before, st)
  touch(ck, grace)
  redis.call('SADD', base .. 's', scope .. '\t' .. per)
end
return done('unreserved')
