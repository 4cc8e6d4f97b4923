//! The session scripts: one per operation, both keys of a session (`KEYS[1]` its fields,
//! `KEYS[2]` its meta hash) declared, Redis's clock. The meta hash holds `v` (the version),
//! `ttl` (the idle timeout, ms), `abs` (the absolute deadline, epoch ms), `exp` (when both keys
//! expire, epoch ms: a load reads it instead of sending `PTTL`), `end` (ended, kept
//! for the grace period), `fwd` (rotated: the new id) and `r:<field>` (the version that last
//! wrote each field, for the merge).

use std::sync::LazyLock;

use crate::connection::Script;

const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function kind(key) return redis.call('TYPE', key)['ok'] end
-- Both keys expire together, never past the absolute deadline; `exp` keeps the time, so a
-- load needs no PTTL.
local function expire_at(at)
  redis.call('HSET', KEYS[2], 'exp', at)
  redis.call('PEXPIREAT', KEYS[2], at)
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIREAT', KEYS[1], at) end
end
-- The meta fields asked for, or nil when KEYS[2] is not a hash.
local function meta(...)
  local ok, m = pcall(redis.call, 'HMGET', KEYS[2], ...)
  if ok then return m end
  return nil
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// ARGV: the refresh fraction (0..1]. Returns `{'missing'}`, `{'corrupt'}`, `{'ended'}` or
/// `{'ok', version, pttl, refreshed, {field, value, …}, fwd, abs}`. The expiry slides (one
/// `PEXPIREAT`) only once the remaining time has fallen by the fraction of the idle timeout,
/// and never past the absolute deadline.
pub(super) static LOAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local m = meta('v', 'ttl', 'abs', 'end', 'fwd', 'exp')
if not m then return {'corrupt'} end
local v, ttl, abs = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if not v then
  -- No meta data: nothing here, or something this store did not write.
  if m[2] or m[3] or redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {'corrupt'} end
  return {'missing'}
end
if not ttl or not abs then return {'corrupt'} end
local ok, data = pcall(redis.call, 'HGETALL', KEYS[1])
if not ok then return {'corrupt'} end
local now = now_ms()
if now >= abs then
  redis.call('UNLINK', KEYS[1], KEYS[2])
  return {'missing'}
end
-- Ended (logged out, or renewed and not yet forwarded): gone for new requests.
if m[4] and not m[5] then return {'ended'} end
local exp = tonumber(m[6]) or (now + redis.call('PTTL', KEYS[2]))
local pttl = exp - now
local refreshed = 0
if not m[5] and pttl <= ttl - math.floor(ttl * tonumber(ARGV[1])) then
  local at = math.min(now + ttl, abs)
  redis.call('HSET', KEYS[2], 'exp', at)
  redis.call('PEXPIREAT', KEYS[2], at)
  if #data > 0 then redis.call('PEXPIREAT', KEYS[1], at) end
  pttl = at - now
  refreshed = 1
end
return {'ok', v, pttl, refreshed, data, m[5] or '', abs}
"#,
    )
});

/// ARGV: mode (`u`: merge against the base version; `r`: replace, the ops are the whole
/// state), base version, idle timeout ms, op count, then `op field value` triples (`s` sets,
/// `d` deletes). Returns `{'missing'}`, `{'corrupt'}`, `{'fwd', id}` or
/// `{'ok', version, conflicts, expires_at, abs}`. A conflict is a field this write changes
/// that another write changed, to another value, after the base was read.
pub(super) static WRITE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local m = meta('v', 'abs', 'end', 'fwd')
if not m then return {'corrupt'} end
local v, abs = tonumber(m[1]), tonumber(m[2])
if not v and not m[2] and redis.call('EXISTS', KEYS[2]) == 0 then return {'missing'} end
if not v or not abs then return {'corrupt'} end
if m[4] then return {'fwd', m[4]} end
local dt = kind(KEYS[1])
if dt ~= 'none' and dt ~= 'hash' then return {'corrupt'} end
local now = now_ms()
if now >= abs then
  redis.call('UNLINK', KEYS[1], KEYS[2])
  return {'missing'}
end
local mode, base, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local nv, conflicts, seen = v + 1, 0, {}
for k = 0, n - 1 do
  local op, f, val = ARGV[5 + 3 * k], ARGV[6 + 3 * k], ARGV[7 + 3 * k]
  seen[f] = true
  if mode == 'u' then
    local rev = tonumber(redis.call('HGET', KEYS[2], 'r:' .. f)) or 0
    if rev > base then
      local cur = redis.call('HGET', KEYS[1], f)
      if not ((op == 's' and cur == val) or (op == 'd' and not cur)) then
        conflicts = conflicts + 1
      end
    end
  end
  if op == 's' then redis.call('HSET', KEYS[1], f, val) else redis.call('HDEL', KEYS[1], f) end
  redis.call('HSET', KEYS[2], 'r:' .. f, nv)
end
if mode == 'r' and redis.call('EXISTS', KEYS[1]) == 1 then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if not seen[f] then
      redis.call('HDEL', KEYS[1], f)
      redis.call('HSET', KEYS[2], 'r:' .. f, nv)
    end
  end
end
redis.call('HSET', KEYS[2], 'v', nv, 'ttl', ttl)
local at = math.min(now + ttl, abs)
-- An ended session keeps its short grace expiry.
if m[3] then at = now + math.max(redis.call('PTTL', KEYS[2]), 1) end
expire_at(at)
return {'ok', nv, conflicts, at, abs}
"#,
    )
});

/// ARGV: idle timeout ms, absolute lifetime ms, absolute deadline (0: now + lifetime),
/// version, field count, then `field value revision` triples. Returns `{'exists'}`,
/// `{'expired'}` (the carried deadline has passed) or `{'ok', expires_at, abs}`.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return {'exists'} end
local now = now_ms()
local ttl, abs, v, n = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if abs == 0 then abs = now + tonumber(ARGV[2]) end
if now >= abs then return {'expired'} end
redis.call('HSET', KEYS[2], 'v', v, 'ttl', ttl, 'abs', abs)
for k = 0, n - 1 do
  local f, val, rev = ARGV[6 + 3 * k], ARGV[7 + 3 * k], ARGV[8 + 3 * k]
  redis.call('HSET', KEYS[1], f, val)
  redis.call('HSET', KEYS[2], 'r:' .. f, rev)
end
local at = math.min(now + ttl, abs)
expire_at(at)
return {'ok', at, abs}
"#,
    )
});

/// Reads a whole session for a rotation. Returns `{'missing'}`, `{'corrupt'}` or
/// `{'ok', version, abs, {field, value, …}, {r:field, rev, …}}`.
pub(super) static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local mt, dt = kind(KEYS[2]), kind(KEYS[1])
if mt == 'none' then return {'missing'} end
if mt ~= 'hash' or (dt ~= 'none' and dt ~= 'hash') then return {'corrupt'} end
local m = redis.call('HMGET', KEYS[2], 'v', 'abs', 'fwd')
local v, abs = tonumber(m[1]), tonumber(m[2])
if not v or not abs then return {'corrupt'} end
if m[3] then return {'missing'} end
local data = {}
if dt == 'hash' then data = redis.call('HGETALL', KEYS[1]) end
local revs = {}
for i, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(f, 1, 2) == 'r:' then
    revs[#revs + 1] = string.sub(f, 3)
    revs[#revs + 1] = redis.call('HGET', KEYS[2], f)
  end
end
return {'ok', v, abs, data, revs}
"#,
    )
});

/// Points a rotated session at its new id for the grace period (or removes it at once when
/// the grace is 0). ARGV: new id, the version the rotation copied, grace ms. Returns
/// `{'ok'}`, or `{'changed', {field, value-or-false, …}}`: the fields written after the copy,
/// to be applied to the new session.
pub(super) static FORWARD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if kind(KEYS[2]) ~= 'hash' then return {'ok'} end
local v = tonumber(redis.call('HGET', KEYS[2], 'v')) or 0
local copied, grace = tonumber(ARGV[2]), tonumber(ARGV[3])
local changed = {}
if v > copied then
  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
    if string.sub(f, 1, 2) == 'r:' and tonumber(redis.call('HGET', KEYS[2], f)) > copied then
      local name = string.sub(f, 3)
      changed[#changed + 1] = name
      changed[#changed + 1] = redis.call('HGET', KEYS[1], name) or false
    end
  end
end
if grace <= 0 then
  redis.call('UNLINK', KEYS[1], KEYS[2])
else
  redis.call('HSET', KEYS[2], 'fwd', ARGV[1], 'end', 1)
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl < 0 or pttl > grace then
    redis.call('PEXPIRE', KEYS[2], grace)
    if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], grace) end
  end
end
if #changed > 0 then return {'changed', changed} end
return {'ok'}
"#,
    )
});

/// Ends a session: removed at once when the grace is 0, else marked ended (new requests
/// no longer see it) and kept for the grace period, so a rotation that follows can still
/// copy it. ARGV: grace ms, the user field. Returns the user field's value, or false.
pub(super) static END: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if kind(KEYS[2]) ~= 'hash' then
  if kind(KEYS[1]) == 'hash' then redis.call('UNLINK', KEYS[1]) end
  return false
end
local user = false
if kind(KEYS[1]) == 'hash' then user = redis.call('HGET', KEYS[1], ARGV[2]) end
local grace = tonumber(ARGV[1])
if grace <= 0 then
  redis.call('UNLINK', KEYS[1], KEYS[2])
  return user
end
redis.call('HSET', KEYS[2], 'end', 1)
local pttl = redis.call('PTTL', KEYS[2])
if pttl < 0 or pttl > grace then
  redis.call('PEXPIRE', KEYS[2], grace)
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], grace) end
end
return user
"#,
    )
});

/// The user index (a sorted set of session ids scored by their absolute deadline), on the
/// user's own slot. ARGV: `add`/`remove`/`list`, session id. Expired members are dropped on
/// every call and the index expires with its last member, so it never outlives its sessions.
/// `list` returns the live ids.
pub(super) static INDEX: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local op = ARGV[1]
if op == 'add' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
elseif op == 'remove' then
  redis.call('ZREM', KEYS[1], ARGV[2])
elseif op == 'list' then
  return redis.call('ZRANGE', KEYS[1], 0, -1)
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return {}
"#,
    )
});
