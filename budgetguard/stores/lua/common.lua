-- budgetguard: helpers shared by every script (prepended to each one at load).
-- Money is integer nano-dollars; Lua numbers are doubles, exact to 2^53.
-- Key schema, under a base `<prefix>{<root scope>}:` (one Cluster slot per root):
--   c:<per>:<window start>:<scope>  counter hash: sn st sr (spent) rn rt rr (reserved)
--                                    oc on ot orq (overshoots) ec (estimated settles)
--   l:<lease id>   live lease hash: n t r (amount) exp (ms) k (counter keys, a JSON array)
--   lx             zset of live lease keys by expiry (ms), in every root the lease touches
--   x:<lease id>   an expired lease, kept to reconcile a late settle
--   d:<lease id>   settled/released marker (replays are no-ops)
--   s              set of "<scope>\t<per>" ever used under this root

local FIELDS = {'sn', 'st', 'sr', 'rn', 'rt', 'rr', 'oc', 'on', 'ot', 'orq', 'ec'}

-- Lua numbers reach Redis as "%.14g" text (1e+14 for big ones): always pass integers as text.
local function I(v)
  return string.format('%d', v)
end

local function now_us(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

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

-- Same rules as budgetguard.limits.window_start / window_end (UTC, weeks from Monday).
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

-- The counter's values, and whether it is new (no field set yet).
local function read_state(ck)
  local v = redis.call('HMGET', ck, unpack(FIELDS))
  local out, fresh = {}, true
  for i = 1, #FIELDS do
    if v[i] then fresh = false end
    out[i] = tonumber(v[i] or '0') or 0
  end
  return out, fresh
end

local function add(ck, field, delta)
  if delta ~= 0 then redis.call('HINCRBY', ck, field, I(delta)) end
end

-- reserved -= amount, never below zero (it can only dip after a reset)
local function unreserve(ck, n, t, r)
  local vals = {n, t, r}
  local names = {'rn', 'rt', 'rr'}
  for i = 1, 3 do
    if vals[i] ~= 0 then
      local v = redis.call('HINCRBY', ck, names[i], I(-vals[i]))
      if v < 0 then redis.call('HSET', ck, names[i], 0) end
    end
  end
end

-- An unsettled lease ran out: charge its estimate (the provider probably billed).
local function sweep(base, now_ms, tomb_s, grace)
  local zkey = base .. 'lx'
  local due = redis.call('ZRANGEBYSCORE', zkey, '-inf', I(now_ms), 'LIMIT', 0, 200)
  for _, lkey in ipairs(due) do
    local f = redis.call('HMGET', lkey, 'n', 't', 'r', 'k', 'b', 'id')
    if f[1] then
      local n, t, r = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
      for _, ck in ipairs(cjson.decode(f[4])) do
        unreserve(ck, n, t, r)
        add(ck, 'sn', n); add(ck, 'st', t); add(ck, 'sr', r); add(ck, 'ec', 1)
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

local function fmt_state(out, ws, st)
  out[#out + 1] = ws
  for i = 1, #st do out[#out + 1] = st[i] end
end
