-- Undo this slot's part of a reservation that another slot refused (Redis Cluster, several slots).
-- Unlike a release it leaves no tombstone: the caller may reserve again under the same lease id
-- (a smaller amount that fits). A lease that already ran out is refunded the estimate it was
-- charged, as a release would.
-- KEYS: the slot's distinct bases (KEYS[1] holds the lease).
-- ARGV: now_us|'' lease_id tomb_s grace ledger_maxlen ledger_age_ms (the ledger's retention, as settle's)
-- Returns 'released' | 'none'.
local now = now_us(ARGV[1])
local now_ms = math.floor(now / 1000)
local lease_id, tomb_s, grace = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
ledger_config(ARGV[5], ARGV[6])  -- the sweep and a refund below write ledger records
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end

local lbase = KEYS[1]
local f = lease_read(lbase, lease_id)
if f then
  local reserved = amount_of(f)
  local at = {4, 5, 6}  -- reserved
  for i, ck in ipairs(f[4]) do
    local st, before = load(ck, at)
    apply_release(st, reserved)
    write(ck, at, before, st)
    touch(ck, grace, now_ms, f[5][i] or 0)
  end
  redis.call('HDEL', lbase .. 'L', lease_id)
  local member = lbase .. 'l:' .. lease_id
  for i = 1, #KEYS do redis.call('ZREM', KEYS[i] .. 'lx', member) end
  return 'released'
end

local xkey = lbase .. 'x:' .. lease_id
local xv = redis.call('GET', xkey)
if not xv then return 'none' end
local x = cjson.decode(xv)
local charged = amount_of(x)
local act = {0, 0, 0}
local at = settle_fields(nil, charged, act, false, false)
local charges = {}
for i, ck in ipairs(x[4]) do
  local st, before = load(ck, at)
  local b = {st[1], st[2], st[3]}
  apply_settle(st, nil, charged, act, false, false)
  charge(charges, ck, b, st)
  write(ck, at, before, st)
  touch(ck, grace, now_ms, x[5][i] or 0)
end
redis.call('DEL', xkey)
ledger_add(lbase, now, 'refunded', lease_id, false, act, charges, '')
return 'released'
