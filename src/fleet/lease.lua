-- aperture: lease tokens from fleet-wide token buckets (one Redis hash per rule and client).
-- KEYS[i]: the bucket of asked rule i. ARGV, four per rule: rate (tokens per second), burst
-- (capacity), need (1: the request needs a token of this rule now; 0: a top-up), want (tokens
-- to take at most). Atomic: either every needed rule has a token and each rule grants
-- min(want, whole tokens held) -> {1, grant_1, ..., grant_n}, or nothing is taken and the answer
-- says how long each rule waits for a token (microseconds, 0 when it has one) -> {0, wait_1, ...}.
-- Time is the Redis server's clock (TIME), so instances' clocks never need to agree. A new bucket
-- starts full; a bucket that would be full again is indistinguishable from a missing one, so
-- keys expire once they would be full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tokens = {}
local blocked = false
local waits = {0}
for i = 1, n do
  local rate = tonumber(ARGV[4 * i - 3])
  local burst = tonumber(ARGV[4 * i - 2])
  local need = tonumber(ARGV[4 * i - 1])
  local s = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tk, ts = tonumber(s[1]), tonumber(s[2])
  if tk == nil or ts == nil then
    tk, ts = burst, now
  end
  if now > ts and tk < burst then
    tk = math.min(burst, tk + (now - ts) * rate / 1000000)
  end
  tokens[i] = tk
  local w = 0
  if need == 1 and (burst < 1 or tk < 1) then
    blocked = true
    if burst < 1 then w = 1000000 else w = math.ceil((1 - tk) / rate * 1000000) end
  end
  waits[i + 1] = w
end
if blocked then
  return waits
end
local out = {1}
for i = 1, n do
  local rate = tonumber(ARGV[4 * i - 3])
  local burst = tonumber(ARGV[4 * i - 2])
  local want = tonumber(ARGV[4 * i])
  local grant = math.min(want, math.floor(tokens[i]))
  if grant < 0 then grant = 0 end
  local left = tokens[i] - grant
  redis.call('HSET', KEYS[i], 't', string.format('%.17g', left), 'ts', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - left) / rate * 1000) + 1000)
  out[i + 1] = grant
end
return out
