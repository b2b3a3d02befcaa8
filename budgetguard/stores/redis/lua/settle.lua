-- Replace a lease by the actual cost, exactly once (mode 'settle'), or drop it (mode 'release').
-- KEYS: the distinct bases (KEYS[1] holds the lease)
-- ARGV: now_us|'' lease_id act_n act_t act_r estimated count_overshoot tomb_s grace mode n cap
--       then per counter: base_index scope per expire_after_ms (used only for a lease this store
--       never saw)
--       then the ledger's: maxlen age_ms note (JSON: model, provider, tokens, run id)
-- Returns 'settled' | 'late' | 'unreserved' | 'replay' (settle); 'released' | 'none' (release).
-- Releasing a lease that already expired refunds the estimate it was charged.
local now = now_us(ARGV[1])
local now_ms = math.floor(now / 1000)
local t = math.floor(now / 1000000)
local lease_id = ARGV[2]
local act = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local estimated, count_over = ARGV[6] == '1', ARGV[7] == '1'
local tomb_s, grace, mode, n = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local cap = tonumber(ARGV[12])
local release = mode == 'release'
local g = 12 + n * 4
ledger_config(ARGV[g + 1], ARGV[g + 2])
local note = ARGV[g + 3] or ''
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end

local lbase = KEYS[1]
local xkey = lbase .. 'x:' .. lease_id
if closed(lbase, lease_id, now, tomb_s) then
  if release then return 'none' end
  return 'replay'
end

local charges = {}  -- what this settle added to each counter's spent, for its ledger record
local function done(outcome)
  close(lbase, lease_id, now, tomb_s, cap)
  if release then
    if outcome == 'late' then ledger_add(lbase, now, 'refunded', lease_id, false, act, charges, note) end
    return 'released'
  end
  ledger_add(lbase, now, outcome, lease_id, estimated, act, charges, note)
  return outcome
end

-- a live lease: apply_release, or apply_settle against its reservation
local f = lease_read(lbase, lease_id)
if f then
  local reserved = amount_of(f)
  local create = reserved[1] ~= 0 or reserved[2] ~= 0 or reserved[3] ~= 0  -- keep the hash
  local at = release and {4, 5, 6}  -- reserved
    or settle_fields(reserved, nil, act, estimated, count_over)
  for i, ck in ipairs(f[4]) do
    local st, before = load(ck, at)
    if release then
      apply_release(st, reserved)
    else
      local b = {st[1], st[2], st[3]}
      apply_settle(st, reserved, nil, act, estimated, count_over)
      charge(charges, ck, b, st)
    end
    if not write(ck, at, before, st) and create then ensure(ck) end
    touch(ck, grace, now_ms, f[5][i] or 0)
  end
  redis.call('HDEL', lbase .. 'L', lease_id)
  local member = lbase .. 'l:' .. lease_id
  for i = 1, #KEYS do redis.call('ZREM', KEYS[i] .. 'lx', member) end
  return done('settled')
end

-- an expired lease, charged its estimate: apply_settle replaces that charge by the actual
local xv = redis.call('GET', xkey)
local x = xv and cjson.decode(xv)
if release then
  if not x then
    close(lbase, lease_id, now, tomb_s, cap)  -- a reserve that arrives late (after a client
    return 'none'                                -- timeout) must find the lease closed
  end
  act = {0, 0, 0}  -- expired and charged, but the call never ran: refund the estimate
  count_over, estimated = false, false
end
if x then
  local charged = amount_of(x)
  local at = settle_fields(nil, charged, act, estimated, count_over)
  for i, ck in ipairs(x[4]) do
    local st, before = load(ck, at)
    local b = {st[1], st[2], st[3]}
    apply_settle(st, nil, charged, act, estimated, count_over)
    charge(charges, ck, b, st)
    if not write(ck, at, before, st) then ensure(ck) end
    touch(ck, grace, now_ms, x[5][i] or 0)
  end
  redis.call('DEL', xkey)
  return done('late')
end

-- never reserved here (or forgotten): apply_settle with no lease on the current windows
local at = settle_fields(nil, nil, act, estimated, true)
for i = 1, n do
  local o = 12 + (i - 1) * 4
  local base = KEYS[tonumber(ARGV[o + 1])]
  local scope, per = ARGV[o + 2], ARGV[o + 3]
  local ck = counter_key(base, per, window_start(per, t), scope)
  local st, before = load(ck, at)
  local b = {st[1], st[2], st[3]}
  apply_settle(st, nil, nil, act, estimated, true)
  charge(charges, ck, b, st)
  write(ck, at, before, st)
  touch(ck, grace, now_ms, tonumber(ARGV[o + 4]), true)
end
return done('unreserved')
