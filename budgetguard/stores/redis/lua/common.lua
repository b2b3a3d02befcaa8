-- budgetguard: helpers shared by every script (prepended to each one at load).
-- Money is integer nano-dollars; Lua numbers are doubles, exact to 2^53.
-- Key schema, under a base `<prefix>{<root scope>}:` (one Cluster slot per root):
--   c:<per>:<window start>:<scope>  counter hash, one integer per name in FIELDS:
--                                    sn st sr (spent) rn rt rr (reserved)
--                                    oc on ot orq (overshoots) ec (estimated settles)
--   L              live leases: field lease id -> JSON [n, t, r, counter keys, expire_after ms]
--                  (no TTL: a lease is resolved however long its root stays idle)
--   lx             zset of live leases by expiry (ms), member `<base>l:<id>`, in every root the
--                  lease touches (no TTL)
--   x:<lease id>   an expired lease (same JSON), kept tombstone_ttl to reconcile a late settle
--   d              zset of closed (settled/released) lease ids by close time (us): replays are
--                  no-ops; at most settled_cap ids, none older than tombstone_ttl
--   sz             zset of "<scope>\t<per>" used under this root, by when the counter is
--                  forgotten (ms; inf for limits without expire_after)
--   ledger         stream: one entry per change to spent (budgetguard/ledger.py), trimmed to
--                  about LEDGER_MAXLEN entries and to LEDGER_AGE_MS; expires when idle that long
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
  if per == 'minute' then return start + 60 end
  if per == 'hour' then return start + 3600 end
  if per == 'day' then return start + 86400 end
  return start + 604800  -- week (window_start refused any other period)
end

local function counter_key(base, per, ws, scope)
  return base .. 'c:' .. per .. ':' .. I(ws) .. ':' .. scope
end

-- Set when a counter is forgotten: `grace` seconds after its window closes, or `ea` ms after
-- this use (expire_after; 0 = none), whichever comes first; an expiring scope's entry in `sz`
-- follows it (and `sz` drops entries already gone). `fresh`: list a new permanent scope.
local function touch(ck, grace, now_ms, ea, fresh)
  -- anchored on the tag's closing brace: braces in scopes are percent-encoded, so a crafted
  -- scope cannot fake a period here
  local base, per, ws, scope = string.match(ck, '^(.-}:)c:(%a+):(%d+):(.*)$')
  if not per then return end
  local at
  if per ~= 'lifetime' then at = (window_end(per, tonumber(ws)) + grace) * 1000 end
  if ea > 0 and (at == nil or now_ms + ea < at) then at = now_ms + ea end
  if at then redis.call('PEXPIREAT', ck, I(at)) end
  local sz = base .. 'sz'
  if ea > 0 then  -- the list lives as long as its last entry, or for ever once it has a permanent one
    local left = redis.call('PTTL', sz)
    redis.call('ZADD', sz, I(at), scope .. '\t' .. per)
    redis.call('ZREMRANGEBYSCORE', sz, '-inf', I(now_ms))
    if left == -2 or (left >= 0 and now_ms + left < at) then redis.call('PEXPIREAT', sz, I(at)) end
  elseif fresh then
    redis.call('ZADD', sz, 'inf', scope .. '\t' .. per)
    redis.call('PERSIST', sz)
  end
end

-- ------------------------------------------------------------------ counters (reservation.CounterState)

-- Amounts are {nanos, tokens, requests}, indexed by q = 1..3. A CounterState is the list of a
-- counter's values in FIELDS order (codec.FIELDS; test_redis pins these positions):
--   st[q]      spent          st[3 + q]  reserved          st[7 + q]  overshoot
--   st[7]      overshoot_count                             st[11]     estimated_count
-- (Plain numbers rather than named constants: a script builds every function below on each
-- call, and each local a function captures adds to that cost.)

-- Which fields a script loads: a list of positions, as each apply_* needs only some of them.
-- A field left out stays nil in the state, so an apply that touches it fails loudly instead
-- of writing a wrong value.

-- load: the fields at positions `at` (every field if nil) as a state, the values read (in the
-- order of `at`, to diff against), and whether the counter is new (none of them set yet).
local function load(ck, at)
  local names = FIELDS
  if at ~= nil then
    names = at.names
    if names == nil then  -- the HMGET arguments, made once per list
      names = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}  -- #FIELDS slots
      for j = 1, #at do names[j] = FIELDS[at[j]] end
      at.names = names
    end
  end
  local v = redis.call('HMGET', ck, unpack(names))
  local st, fresh = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, true  -- #FIELDS slots
  for j = 1, #v do
    local x = v[j]
    if x then
      fresh = false
      x = tonumber(x) or 0
    else
      x = 0
    end
    v[j] = x
    st[at and at[j] or j] = x
  end
  return st, v, fresh
end

-- write: store the fields at `at` (every field if nil) that changed since load read `before`,
-- in one HSET: nothing else can move them within the script. `add` adds the differences
-- instead (HINCRBY): for a counter that one reserve lists twice. Returns whether any changed.
local function write(ck, at, before, st, add)
  local args, n = {ck, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}, 1
  for j = 1, at and #at or #FIELDS do
    local i = at and at[j] or j
    local x = st[i]
    if x ~= before[j] then
      n = n + 2
      if add then
        redis.call('HINCRBY', ck, FIELDS[i], I(x - before[j]))
      else
        args[n - 1] = FIELDS[i]
        args[n] = I(x)
      end
    end
  end
  if n == 1 then return false end
  if not add then redis.call('HSET', unpack(args, 1, n)) end
  return true
end

-- Create the hash if it is missing, changing no value (a counter a lease was reserved on).
local function ensure(ck)
  redis.call('HINCRBY', ck, 'rn', 0)
end

-- ------------------------------------------------------------------ decisions (reservation.py)

-- THE refusal rule: spent + reserved + request > cap (nil: no cap).
local function exceeds(cap, spent, reserved, request)
  return cap ~= nil and spent + reserved + request > cap
end

-- The first cap the request would break, hard caps before soft ones: counter index, quantity
-- (1..3 = nanos, tokens, requests) and 1 for a soft cap; 0, 0, 0 if none.
-- specs[i]: {cap_n, cap_t, cap_r, soft_n, soft_t, soft_r}, nil for none.
local function first_violation(specs, states, request)
  for soft = 0, 1 do
    for i = 1, #specs do
      local caps, st = specs[i], states[i]
      for q = 1, 3 do
        if exceeds(caps[soft * 3 + q], st[q], st[3 + q], request[q]) then return i, q, soft end
      end
    end
  end
  return 0, 0, 0
end

-- reads and changes: reserved
local function apply_reserve(st, amount)
  for q = 1, 3 do st[3 + q] = st[3 + q] + amount[q] end
end

-- reads and changes: reserved
local function apply_release(st, amount)
  for q = 1, 3 do st[3 + q] = math.max(st[3 + q] - amount[q], 0) end
end

-- An unsettled lease ran out: charge its estimate (the provider probably billed).
-- reads and changes: spent, reserved, estimated_count
local function apply_expire(st, amount)
  for q = 1, 3 do
    st[3 + q] = math.max(st[3 + q] - amount[q], 0)
    st[q] = st[q] + amount[q]
  end
  st[11] = st[11] + 1
end

-- Replace a reservation with the actual cost. `reserved`: the live lease's amount, or nil;
-- `charged`: what an expired lease already charged, to reconcile against, or nil.
-- reads and changes: what settle_fields lists for the same arguments
local function apply_settle(st, reserved, charged, actual, estimated, count_overshoot)
  if reserved ~= nil then
    for q = 1, 3 do st[3 + q] = math.max(st[3 + q] - reserved[q], 0) end
  end
  local basis = reserved or charged
  if count_overshoot and basis ~= nil
    and (actual[1] > basis[1] or actual[2] > basis[2] or actual[3] > basis[3]) then  -- Amount.exceeds
    st[7] = st[7] + 1
    for q = 1, 3 do st[7 + q] = st[7 + q] + math.max(actual[q] - basis[q], 0) end
  end
  if charged ~= nil then
    for q = 1, 3 do st[q] = math.max(st[q] - charged[q] + actual[q], 0) end
    st[11] = math.max(st[11] - 1, 0)
  else
    for q = 1, 3 do st[q] = st[q] + actual[q] end
  end
  if estimated then st[11] = st[11] + 1 end
end

-- The positions apply_settle reads or changes with these arguments.
local function settle_fields(reserved, charged, actual, estimated, count_overshoot)
  local at = {1, 2, 3, nil, nil, nil, nil, nil, nil, nil, nil}  -- spent, and room for the rest
  if reserved ~= nil then
    at[4], at[5], at[6] = 4, 5, 6
  end
  local basis = reserved or charged
  if count_overshoot and basis ~= nil
    and (actual[1] > basis[1] or actual[2] > basis[2] or actual[3] > basis[3]) then
    for i = 7, 10 do at[#at + 1] = i end  -- overshoot_count, overshoot
  end
  if charged ~= nil or estimated then at[#at + 1] = 11 end
  return at
end

-- ------------------------------------------------------------------ the ledger (ledger.py)

-- Retention, set by each script from its last two arguments (ledger_config) before it sweeps:
-- about this many entries per root (0: no ledger), and this age in ms (0: no age bound).
local LEDGER_MAXLEN, LEDGER_AGE_MS = 0, 0
local function ledger_config(maxlen, age_ms)
  LEDGER_MAXLEN, LEDGER_AGE_MS = tonumber(maxlen) or 0, tonumber(age_ms) or 0
end

-- What a change added to a counter's spent: {per, window start, scope, n, t, r} (text: exact),
-- from the spent values before (`b`) and the state after (`st`).
local function charge(list, ck, b, st)
  local _, per, ws, scope = string.match(ck, '^(.-}:)c:(%a+):(%d+):(.*)$')
  if not per then return end
  list[#list + 1] = {per, ws, scope, I(st[1] - b[1]), I(st[2] - b[2]), I(st[3] - b[3])}
end

-- Append one record to the root's ledger stream, in this script (so atomically with the counters).
local function ledger_add(base, now, outcome, lease_id, estimated, amount, charges, note)
  if LEDGER_MAXLEN <= 0 then return end
  local key = base .. 'ledger'
  local id = redis.call('XADD', key, 'MAXLEN', '~', I(LEDGER_MAXLEN), '*',
    't', I(now), 'o', outcome, 'l', lease_id, 'e', estimated and '1' or '0',
    'a', I(amount[1]) .. ' ' .. I(amount[2]) .. ' ' .. I(amount[3]),
    'c', cjson.encode(charges), 'm', note or '')
  if LEDGER_AGE_MS > 0 then  -- by the entry ids' clock (the server's), whatever clock `now` is
    local ms = tonumber(string.match(id, '^(%d+)'))
    redis.call('XTRIM', key, 'MINID', I(ms - LEDGER_AGE_MS))
    redis.call('PEXPIRE', key, I(LEDGER_AGE_MS))
  end
end

-- ------------------------------------------------------------------ leases

-- A lease's amount, from its n t r fields.
local function amount_of(f)
  return {tonumber(f[1]), tonumber(f[2]), tonumber(f[3])}
end

-- A lease as stored in `L` and `x:<id>`: amount (as text: cjson rounds big numbers), counter
-- keys, and each counter's expire_after (ms, 0 = none).
local function lease_text(amount, keys, eas)
  return cjson.encode({I(amount[1]), I(amount[2]), I(amount[3]), keys, eas})
end

-- A lease read back: {n, t, r, keys, eas}, or nil. A lease hash left by an older version
-- (`l:<id>`: fields n t r k, no expire_after) is read too, so an upgrade strands nothing.
local function lease_read(base, id)
  local v = redis.call('HGET', base .. 'L', id)
  if v then return cjson.decode(v) end
  local f = redis.call('HMGET', base .. 'l:' .. id, 'n', 't', 'r', 'k')
  if not f[1] then return nil end
  redis.call('DEL', base .. 'l:' .. id)
  return {f[1], f[2], f[3], cjson.decode(f[4]), {}}
end

-- Whether lease `id` was closed (settled or released) under `base` within tombstone_ttl.
local function closed(base, id, now, tomb_s)
  local s = redis.call('ZSCORE', base .. 'd', id)
  return s ~= false and s ~= nil and tonumber(s) > now - tomb_s * 1000000
end

-- Remember lease `id` as closed: the newest `cap` ids of the root, for tombstone_ttl at most
-- (an idle root's whole list goes with its TTL). Memory per root is bounded by `cap`.
-- Scored in microseconds, so that the oldest go first.
local function close(base, id, now, tomb_s, cap)
  local dk = base .. 'd'
  redis.call('ZADD', dk, I(now), id)
  redis.call('ZREMRANGEBYRANK', dk, 0, -(cap + 1))
  redis.call('EXPIRE', dk, I(tomb_s))
end

-- Charge the leases of one root that ran out (apply_expire on each of their counters).
-- At most SWEEP_CAP leases per root per script call: a call's cost stays bounded however
-- many leases ran out at once; the rest are charged by the next calls on that root. Until
-- then an overdue lease still counts, as reserved instead of spent, and a settle that
-- reaches it first settles it as a live lease. Reads only keys without a TTL.
local SWEEP_CAP = 200
local function sweep(base, now_ms, tomb_s, grace)
  local zkey = base .. 'lx'
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', I(now_ms), 'LIMIT', 0, SWEEP_CAP)
  if #due == 0 then return end
  local at = {1, 2, 3, 4, 5, 6, 11}  -- what apply_expire reads and changes
  for _, member in ipairs(due) do
    local lbase, id = string.match(member, '^(.-}:)l:(.*)$')
    local lease = lease_read(lbase, id)
    if lease then
      local amount = amount_of(lease)
      local charges = {}
      for i, ck in ipairs(lease[4]) do
        local st, before = load(ck, at)
        local b = {st[1], st[2], st[3]}
        apply_expire(st, amount)
        write(ck, at, before, st)
        touch(ck, grace, now_ms, lease[5][i] or 0)
        charge(charges, ck, b, st)
      end
      ledger_add(lbase, now_ms * 1000, 'expired', id, true, amount, charges, '')
      redis.call('HDEL', lbase .. 'L', id)
      redis.call('SET', lbase .. 'x:' .. id, cjson.encode(lease), 'EX', I(tomb_s))
    end
    redis.call('ZREM', zkey, member)
  end
end

-- A reply's counter: its window start, then the FIELDS values.
local function fmt_state(out, ws, st)
  out[#out + 1] = ws
  for i = 1, #FIELDS do out[#out + 1] = st[i] end
end
