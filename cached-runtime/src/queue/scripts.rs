//! The queue's Lua scripts: one per operation, each atomic on the server, each given every
//! key of the queue as `KEYS` (one slot: the queue's hash tag), and each reading the time
//! from Redis (`TIME`), so workers on hosts with skewed clocks agree on what is due.
//!
//! A job's state is where its id is: `wait` (runnable), `delayed` (due later), `active`
//! (leased), `dead` or `done`; its fields live in the `jobs` hash. A lease's token (`{id}:t`)
//! is the fencing token: only the holder of the current token can ack, fail, extend or hand
//! back the job; settling it writes `x:{token}` so that a retried settle is recognised.
//!
//! Markers (`marker`, a list) wake workers blocked in `BLPOP`: a push of a runnable job keeps
//! at least as many markers as runnable jobs (up to a cap), a change of the earliest due time
//! or lease deadline adds one so that an idle worker learns it, and a take that finds nothing
//! clears them (its caller now knows the next due time).

use std::sync::LazyLock;

use redis::Script;

/// Shared by every script: key names, the clock, scores, markers.
const PRELUDE: &str = r#"
local K_WAIT, K_DELAYED, K_ACTIVE, K_DEAD, K_DONE, K_JOBS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_IDS, K_FENCE, K_IDEM, K_IDEM_EXP, K_MARKER = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local MARKER_CAP = 512
local BATCH = 100
-- Priorities 0..15 (higher first) are bands of 2^48 scores; within a band, push order.
local BAND = 281474976710656

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function score(id)
  local p = tonumber(redis.call('HGET', K_JOBS, id .. ':p') or '0')
  return (15 - p) * BAND + tonumber(id)
end

-- Keeps at least n markers (at most the cap).
local function wake(n)
  if n > MARKER_CAP then n = MARKER_CAP end
  local have = redis.call('LLEN', K_MARKER)
  if have < n then
    local m = {}
    for i = 1, n - have do m[i] = '1' end
    redis.call('LPUSH', K_MARKER, unpack(m))
  end
end

local function is_first(key, id)
  return redis.call('ZRANGE', key, 0, 0)[1] == id
end

local FIELDS = {'', ':a', ':m', ':p', ':t', ':c', ':d', ':e', ':k'}
local function delete_job(id)
  local f = {}
  for i, s in ipairs(FIELDS) do f[i] = id .. s end
  redis.call('HDEL', K_JOBS, unpack(f))
end

-- The token check of every settle: 1 when `token` holds the lease, 0 when the job is gone,
-- -1 when another token holds it (a stale holder), 2 when this token already settled it.
local function holds(id, token)
  local t = redis.call('HGET', K_JOBS, id .. ':t')
  if not t then return 0 end
  if t == token then return 1 end
  if t == 'x:' .. token then return 2 end
  return -1
end

-- Due delayed jobs become runnable; jobs whose lease ran out are runnable again, or dead
-- when out of attempts. Bounded batches. Returns (lease expiries, of which dead).
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, BATCH)
  for _, id in ipairs(due) do
    redis.call('ZREM', K_DELAYED, id)
    redis.call('ZADD', K_WAIT, score(id), id)
  end
  local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, BATCH)
  local died = 0
  for _, id in ipairs(expired) do
    redis.call('ZREM', K_ACTIVE, id)
    redis.call('HSET', K_JOBS, id .. ':t', '0')
    local f = redis.call('HMGET', K_JOBS, id .. ':a', id .. ':m')
    if tonumber(f[1] or '0') >= tonumber(f[2] or '1') then
      redis.call('HSET', K_JOBS, id .. ':e', 'lease expired on the last attempt')
      redis.call('ZADD', K_DEAD, now, id)
      died = died + 1
    else
      redis.call('HSET', K_JOBS, id .. ':d', now)
      redis.call('ZADD', K_WAIT, score(id), id)
    end
  end
  return #expired, died
end

-- Milliseconds until the next delayed job is due or lease runs out; -1 when none.
local function next_in(now)
  local best = -1
  for _, key in ipairs({K_DELAYED, K_ACTIVE}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if best < 0 or at < best then best = at end
    end
  end
  if best < 0 then return -1 end
  local d = best - now
  if d < 0 then d = 0 end
  return d
end

local function counts()
  return {redis.call('ZCARD', K_WAIT), redis.call('ZCARD', K_DELAYED),
          redis.call('ZCARD', K_ACTIVE), redis.call('ZCARD', K_DEAD)}
end
"#;

/// A script made of the prelude and `body`.
fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// ARGV: payload, delay ms, due at (epoch ms, or empty), priority, max attempts, idempotency
/// key (or empty), its window ms. Returns `{1, id}`, or `{0, id}` when the key was seen
/// within its window (nothing pushed).
pub(crate) static PUSH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local stale = redis.call('ZRANGEBYSCORE', K_IDEM_EXP, '-inf', now, 'LIMIT', 0, BATCH)
if #stale > 0 then
  redis.call('HDEL', K_IDEM, unpack(stale))
  redis.call('ZREM', K_IDEM_EXP, unpack(stale))
end
local key = ARGV[6]
if key ~= '' then
  local until_ms = redis.call('ZSCORE', K_IDEM_EXP, key)
  local existing = redis.call('HGET', K_IDEM, key)
  if existing and until_ms and tonumber(until_ms) > now then return {0, existing} end
end
local id = tostring(redis.call('INCR', K_IDS))
local due = now + tonumber(ARGV[2])
if ARGV[3] ~= '' then due = tonumber(ARGV[3]) end
redis.call('HSET', K_JOBS, id, ARGV[1], id .. ':a', 0, id .. ':m', ARGV[5], id .. ':p', ARGV[4],
  id .. ':t', '0', id .. ':c', now, id .. ':d', due, id .. ':k', key)
if due > now then
  redis.call('ZADD', K_DELAYED, due, id)
  if is_first(K_DELAYED, id) then wake(1) end
else
  redis.call('ZADD', K_WAIT, score(id), id)
  wake(redis.call('ZCARD', K_WAIT))
end
if key ~= '' then
  redis.call('HSET', K_IDEM, key, id)
  redis.call('ZADD', K_IDEM_EXP, now + tonumber(ARGV[7]), key)
end
return {1, id}
"#,
    )
});

/// ARGV: lease ms, how many jobs at most. Promotes and reclaims, then leases the first
/// runnable jobs. Returns `{n, now ms, expiries, dead, counts…}` followed by `id, payload,
/// attempt, max attempts, token, due ms` for each of the `n` jobs, or, with none runnable,
/// `{0, next_in ms, expiries, dead, counts…}`.
pub(crate) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local expired, died = promote(now)
local popped = redis.call('ZPOPMIN', K_WAIT, tonumber(ARGV[2]))
if #popped == 0 then
  redis.call('DEL', K_MARKER)
  local c = counts()
  return {0, next_in(now), expired, died, c[1], c[2], c[3], c[4]}
end
local deadline = now + tonumber(ARGV[1])
local out = {#popped / 2, now, expired, died, 0, 0, 0, 0}
local first = true
for i = 1, #popped, 2 do
  local id = popped[i]
  local token = tostring(redis.call('INCR', K_FENCE))
  local attempt = redis.call('HINCRBY', K_JOBS, id .. ':a', 1)
  redis.call('HSET', K_JOBS, id .. ':t', token)
  redis.call('ZADD', K_ACTIVE, deadline, id)
  if first then
    local n = redis.call('ZCARD', K_WAIT)
    if is_first(K_ACTIVE, id) then n = n + 1 end
    wake(n)
    first = false
  end
  local f = redis.call('HMGET', K_JOBS, id, id .. ':m', id .. ':d')
  for _, v in ipairs({id, f[1] or '', attempt, tonumber(f[2] or '1'), token, tonumber(f[3] or now)}) do
    out[#out + 1] = v
  end
end
local c = counts()
out[5], out[6], out[7], out[8] = c[1], c[2], c[3], c[4]
return out
"#,
    )
});

/// No ARGV. Promotes and reclaims without taking anything (a worker with no free slot at a
/// due time). Returns `{next_in ms, expiries, dead, counts…}`.
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
local expired, died = promote(now)
wake(redis.call('ZCARD', K_WAIT))
local c = counts()
return {next_in(now), expired, died, c[1], c[2], c[3], c[4]}
"#,
    )
});

/// ARGV: id, token, completed jobs to keep, their age limit ms (0: none). Returns the
/// `holds` code: 1 acked now, 2 acked before (a retried ack), 0 gone, -1 stale.
pub(crate) static ACK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, token = ARGV[1], ARGV[2]
local h = holds(id, token)
if h ~= 1 then return h end
local now = now_ms()
redis.call('ZREM', K_ACTIVE, id)
local keep, age = tonumber(ARGV[3]), tonumber(ARGV[4])
if keep <= 0 then
  delete_job(id)
  return 1
end
redis.call('HSET', K_JOBS, id .. ':t', 'x:' .. token)
redis.call('ZADD', K_DONE, now, id)
if age > 0 then
  local old = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', now - age, 'LIMIT', 0, BATCH)
  for _, o in ipairs(old) do
    redis.call('ZREM', K_DONE, o)
    delete_job(o)
  end
end
local excess = redis.call('ZCARD', K_DONE) - keep
if excess > 0 then
  if excess > BATCH then excess = BATCH end
  local popped = redis.call('ZPOPMIN', K_DONE, excess)
  for i = 1, #popped, 2 do delete_job(popped[i]) end
end
return 1
"#,
    )
});

/// ARGV: id, token, error text, retry delay ms (-1: dead now). Returns the `holds` code
/// when it is not 1; else 3 (retry scheduled) or 4 (dead).
pub(crate) static FAIL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, token = ARGV[1], ARGV[2]
local h = holds(id, token)
if h ~= 1 then return h end
local now = now_ms()
redis.call('ZREM', K_ACTIVE, id)
redis.call('HSET', K_JOBS, id .. ':t', 'x:' .. token, id .. ':e', ARGV[3])
local f = redis.call('HMGET', K_JOBS, id .. ':a', id .. ':m')
local delay = tonumber(ARGV[4])
if delay < 0 or tonumber(f[1] or '0') >= tonumber(f[2] or '1') then
  redis.call('ZADD', K_DEAD, now, id)
  return 4
end
local due = now + delay
redis.call('HSET', K_JOBS, id .. ':d', due)
if delay == 0 then
  redis.call('ZADD', K_WAIT, score(id), id)
  wake(redis.call('ZCARD', K_WAIT))
else
  redis.call('ZADD', K_DELAYED, due, id)
  if is_first(K_DELAYED, id) then wake(1) end
end
return 3
"#,
    )
});

/// ARGV: id, token, lease ms. Returns the `holds` code (1: extended).
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, token = ARGV[1], ARGV[2]
local h = holds(id, token)
if h ~= 1 then return h end
redis.call('ZADD', K_ACTIVE, now_ms() + tonumber(ARGV[3]), id)
return 1
"#,
    )
});

/// ARGV: id, token. Hands a leased job back, runnable at once, its attempt not counted.
/// Returns the `holds` code (1: handed back).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, token = ARGV[1], ARGV[2]
local h = holds(id, token)
if h ~= 1 then return h end
redis.call('ZREM', K_ACTIVE, id)
redis.call('HSET', K_JOBS, id .. ':t', 'x:' .. token, id .. ':d', now_ms())
redis.call('HINCRBY', K_JOBS, id .. ':a', -1)
redis.call('ZADD', K_WAIT, score(id), id)
wake(redis.call('ZCARD', K_WAIT))
return 1
"#,
    )
});

/// ARGV: id (or empty: the oldest), how many at most. Dead jobs become runnable with their
/// attempts reset. Returns how many were requeued.
pub(crate) static REQUEUE_DEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local ids
if ARGV[1] ~= '' then ids = {ARGV[1]} else ids = redis.call('ZRANGE', K_DEAD, 0, tonumber(ARGV[2]) - 1) end
local now = now_ms()
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', K_DEAD, id) == 1 then
    redis.call('HSET', K_JOBS, id .. ':a', 0, id .. ':d', now, id .. ':t', '0')
    redis.call('ZADD', K_WAIT, score(id), id)
    n = n + 1
  end
end
wake(redis.call('ZCARD', K_WAIT))
return n
"#,
    )
});

/// ARGV: id. Deletes a dead job for good. Returns 1 when it was dead, else 0.
pub(crate) static DELETE_DEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('ZREM', K_DEAD, ARGV[1]) == 0 then return 0 end
delete_job(ARGV[1])
return 1
"#,
    )
});

/// ARGV: offset, count. Dead jobs, oldest first: a flat list of `id, died ms, payload,
/// attempts, error, created ms` per job.
pub(crate) static LIST_DEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local off, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local dead = redis.call('ZRANGE', K_DEAD, off, off + n - 1, 'WITHSCORES')
local out = {}
for i = 1, #dead, 2 do
  local id = dead[i]
  local f = redis.call('HMGET', K_JOBS, id, id .. ':a', id .. ':e', id .. ':c')
  for _, v in ipairs({id, dead[i + 1], f[1] or '', f[2] or '0', f[3] or '', f[4] or '0'}) do
    out[#out + 1] = v
  end
end
return out
"#,
    )
});
