-- budgetguard: helpers shared by every script (prepended to each one at load).
-- Money is integer nano-dollars; Lua numbers are doubles, exact to 2^53.
-- Key schema, under a base `<prefix>{<root scope>}:` (one Cluster slot per root):
--   c:<per>:<window start>:<scope>  counter hash, one integer per name in FIELDS:
--                                    sn st sr (spent) rn rt rr (reserved)
--                                    oc on ot orq (overshoots) ec (estimated settles)
--   l:<lease id>   live lease hash: n t r (amount) exp (ms) k (counter keys, a JSON array)
--   lx             zset of live lease keys by expiry (ms), in every root the lease touches
--   x:<lease id>   an expired lease, kept to reconcile a late settle
--   d:<lease id>   settled/released marker (replays are no-ops)
--   s              set of "<scope>\t<per>" ever used under this root
--
-- FIELDS (the hash fields, in the order of every reply) is not declared here: scripts.py
-- generates its line from budgetguard/stores/redis/codec.py's FIELDS and puts it first.
--
-- The arithmetic below mirrors budgetguard/reservation.py, function for function, so each
-- script reads: load the counters, apply the decision, write what changed.

-- Lua numbers reach Redis as "%.14g" text (1e+14 for big ones): always pass integers as text.
local function I(v)
  return string.format('%d', v)
end

local function now_us(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- ------------------------------------------------------------------ windows

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

-- Same rules as budgetguard.windows.window_start / window_end (UTC, weeks from Monday).
local function window_start(per, t)
  if per == 'lifetime' then return 0 end
  if per == 'minute' then return t - t % 60 end
  if per == 'hour' then return t - t % 3600 end
  if per == 'day' then return t - t % 86400 end
  if per == 'week' then return t - (t - 345600) % 604800 end
  if per == 'month' then
    local y, m = civil_from_days(math.floor(t / 86400))
    return days_from_civil(y, m, 1) * 86400
  end
  error('unknown period ' .. tostring(per))
end

local function window_end(per, start)
  if per == 'lifetime' then return nil end
  if per == 'month' then
    local y, m = civil_from_days(math.floor(start / 86400))
    if m == 12 then y, m = y + 1, 1 else m = m + 1 end
    return days_from_civil(y, m, 1) * 86400
  end
  local step = {minute = 60, hour = 3600, day = 86400, week = 604800}
  return start + step[per]
end

local function counter_key(base, per, ws, scope)
  return base .. 'c:' .. per .. ':' .. I(ws) .. ':' .. scope
end

-- Forget a window's counter `grace` seconds after it closes.
local function touch(ck, grace)
  -- anchored on the tag's closing brace: braces in scopes are percent-encoded, so a crafted
  -- scope cannot fake a period here
  local per, ws = string.match(ck, '}:c:(%a+):(%d+):')
  if per and per ~= 'lifetime' then
    redis.call('EXPIREAT', ck, I(window_end(per, tonumber(ws)) + grace))
  end
end

-- ------------------------------------------------------------------ amounts (reservation.Amount)

local function plus(a, b) return {a[1] + b[1], a[2] + b[2], a[3] + b[3]} end
local function minus(a, b) return {a[1] - b[1], a[2] - b[2], a[3] - b[3]} end
local function floor0(a) return {math.max(a[1], 0), math.max(a[2], 0), math.max(a[3], 0)} end
local function larger(a, b) return a[1] > b[1] or a[2] > b[2] or a[3] > b[3] end  -- Amount.exceeds
local function nonzero(a) return a[1] ~= 0 or a[2] ~= 0 or a[3] ~= 0 end

local function amount_of(f)  -- a lease's n t r fields
  return {tonumber(f[1]), tonumber(f[2]), tonumber(f[3])}
end

-- ------------------------------------------------------------------ counters (reservation.CounterState)

-- The FIELDS values as a CounterState, and back (the same order as codec.decode_state).
local function as_state(v)
  return {spent = {v[1], v[2], v[3]}, reserved = {v[4], v[5], v[6]}, overshoot_count = v[7],
          overshoot = {v[8], v[9], v[10]}, estimated_count = v[11]}
end

local function as_values(st)
  local s, r, o = st.spent, st.reserved, st.overshoot
  return {s[1], s[2], s[3], r[1], r[2], r[3], st.overshoot_count, o[1], o[2], o[3], st.estimated_count}
end

-- load: the counter's state, and whether it is new (no field set yet).
local function load(ck)
  local v = redis.call('HMGET', ck, unpack(FIELDS))
  local out, fresh = {}, true
  for i = 1, #FIELDS do
    if v[i] then fresh = false end
    out[i] = tonumber(v[i] or '0') or 0
  end
  return as_state(out), fresh
end

-- write: add what changed since `before` (HINCRBY, so two counters on one key both count).
-- Returns whether anything changed.
local function write(ck, before, st)
  local after, changed = as_values(st), false
  for i = 1, #FIELDS do
    if after[i] ~= before[i] then
      redis.call('HINCRBY', ck, FIELDS[i], I(after[i] - before[i]))
      changed = true
    end
  end
  return changed
end

-- Create the hash if it is missing, changing no value (a counter a lease was reserved on).
local function ensure(ck)
  redis.call('HINCRBY', ck, 'rn', 0)
end

-- load -> apply -> write for one counter; `apply` is one of the apply_* below, and `create`
-- keeps the hash even if the apply changed nothing.
local function update(ck, create, apply, ...)
  local st = load(ck)
  local before = as_values(st)
  apply(st, ...)
  if not write(ck, before, st) and create then ensure(ck) end
end

-- ------------------------------------------------------------------ decisions (reservation.py)

-- THE refusal rule: spent + reserved + request > cap (nil: no cap).
local function exceeds(cap, spent, reserved, request)
  return cap ~= nil and spent + reserved + request > cap
end

-- The first cap the request would break, hard caps before soft ones: counter index, quantity
-- (1..3 = nanos, tokens, requests) and 1 for a soft cap; 0, 0, 0 if none.
local function first_violation(specs, states, request)
  for pass = 1, 2 do
    local which = pass == 1 and 'caps' or 'soft'
    for i = 1, #specs do
      local caps, st = specs[i][which], states[i]
      for q = 1, 3 do
        if exceeds(caps[q], st.spent[q], st.reserved[q], request[q]) then return i, q, pass - 1 end
      end
    end
  end
  return 0, 0, 0
end

local function apply_reserve(st, amount)
  st.reserved = plus(st.reserved, amount)
end

local function apply_release(st, amount)
  st.reserved = floor0(minus(st.reserved, amount))
end

-- An unsettled lease ran out: charge its estimate (the provider probably billed).
local function apply_expire(st, amount)
  st.reserved = floor0(minus(st.reserved, amount))
  st.spent = plus(st.spent, amount)
  st.estimated_count = st.estimated_count + 1
end

-- Replace a reservation with the actual cost. `reserved`: the live lease's amount, or nil;
-- `charged`: what an expired lease already charged, to reconcile against, or nil.
local function apply_settle(st, reserved, charged, actual, estimated, count_overshoot)
  if reserved ~= nil then st.reserved = floor0(minus(st.reserved, reserved)) end
  local basis = reserved or charged
  if count_overshoot and basis ~= nil and larger(actual, basis) then
    st.overshoot_count = st.overshoot_count + 1
    st.overshoot = plus(st.overshoot, floor0(minus(actual, basis)))
  end
  if charged ~= nil then
    st.spent = floor0(plus(minus(st.spent, charged), actual))
    st.estimated_count = math.max(st.estimated_count - 1, 0)
  else
    st.spent = plus(st.spent, actual)
  end
  if estimated then st.estimated_count = st.estimated_count + 1 end
end

-- ------------------------------------------------------------------ leases

-- Charge the leases of one root that ran out (apply_expire on each of their counters).
-- At most SWEEP_CAP leases per root per script call: a call's cost stays bounded however
-- many leases ran out at once; the rest are charged by the next calls on that root. Until
-- then an overdue lease still counts, as reserved instead of spent, and a settle that
-- reaches it first settles it as a live lease.
local SWEEP_CAP = 200
local function sweep(base, now_ms, tomb_s, grace)
  local zkey = base .. 'lx'
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', I(now_ms), 'LIMIT', 0, SWEEP_CAP)
  for _, lkey in ipairs(due) do
    local f = redis.call('HMGET', lkey, 'n', 't', 'r', 'k', 'b', 'id')
    if f[1] then
      local amount = amount_of(f)
      for _, ck in ipairs(cjson.decode(f[4])) do
        update(ck, false, apply_expire, amount)
        touch(ck, grace)
      end
      local xkey = f[5] .. 'x:' .. f[6]
      redis.call('RENAME', lkey, xkey)
      redis.call('PERSIST', xkey)
      redis.call('EXPIRE', xkey, I(tomb_s))
    end
    redis.call('ZREM', zkey, lkey)
  end
end

local function opt(v)
  if v == '' then return nil end
  return tonumber(v)
end

-- A reply's counter: its window start, then the FIELDS values.
local function fmt_state(out, ws, st)
  out[#out + 1] = ws
  for _, v in ipairs(as_values(st)) do out[#out + 1] = v end
end
