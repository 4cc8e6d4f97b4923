-- GCRA over several limits of one client, decided together: the request is allowed only
-- when every limit admits it, and then every limit is charged; a denied request charges none.
--
-- KEYS[i]: the theoretical arrival time (TAT) of limit i, in microseconds of Redis's clock;
--          all keys share one hash tag (one slot).
-- ARGV[1]: the cost (0 reads the state and charges nothing).
-- ARGV[2i], ARGV[2i+1]: limit i's emission interval and capacity ((burst + 1) x interval), µs.
--
-- Returns {allowed, now_s, now_us, then per limit: remaining, reset_us, retry_us}:
-- remaining requests of cost 1 admitted now, microseconds until the limit is whole again,
-- and (when this limit refused) microseconds until this request would conform.

-- Redis before 5 replicates scripts verbatim, and TIME would differ on a replica.
if redis.replicate_commands then redis.replicate_commands() end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cost = tonumber(ARGV[1])
local tat = {}
local allowed = 1
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local capacity = tonumber(ARGV[2 * i + 1])
  local stored = tonumber(redis.call('GET', KEYS[i]) or '')
  local t = now
  if stored and stored > now then t = stored end
  tat[i] = t
  if t + cost * interval - now > capacity then allowed = 0 end
end

local out = {allowed, tonumber(clock[1]), tonumber(clock[2])}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local capacity = tonumber(ARGV[2 * i + 1])
  local t = tat[i]
  local charged = t + cost * interval
  local retry = 0
  if charged - now > capacity then retry = charged - now - capacity end
  if allowed == 1 and cost > 0 then
    t = charged
    -- Gone when whole again: a missing key reads as an idle client.
    redis.call('SET', KEYS[i], string.format('%.0f', t), 'PX', math.ceil((t - now) / 1000))
  end
  out[#out + 1] = math.floor((capacity - (t - now)) / interval)
  out[#out + 1] = t - now
  out[#out + 1] = retry
end
return out
