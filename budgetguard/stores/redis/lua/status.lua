-- Read the current-window state of several counters in one round trip.
-- KEYS: the distinct bases. ARGV: now_us|'' tomb_s grace n, then per counter: base_index scope per expire_after_ms,
-- then the ledger's retention: maxlen age_ms (for the leases the sweep charges)
-- Returns 1 + #FIELDS values per counter: window start, then the FIELDS.
local now = now_us(ARGV[1])
local now_ms = math.floor(now / 1000)
local t = math.floor(now / 1000000)
local tomb_s, grace, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
ledger_config(ARGV[5 + n * 4], ARGV[6 + n * 4])
for i = 1, #KEYS do sweep(KEYS[i], now_ms, tomb_s, grace) end
local out = {}
for i = 1, n do
  local o = 4 + (i - 1) * 4
  local base = KEYS[tonumber(ARGV[o + 1])]
  local per = ARGV[o + 3]
  local ws = window_start(per, t)
  fmt_state(out, ws, (load(counter_key(base, per, ws, ARGV[o + 2]))))
end
return out
