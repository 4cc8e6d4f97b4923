//! Web sessions in Redis, on this crate's connections: the store behind actix-session
//! (feature `session-actix`, [`actix`]) and tower-sessions (feature `session-tower`,
//! [`tower`]), so sessions get Cluster, Sentinel, TLS, the breaker, timeouts and metrics.
//!
//! # What a session is in Redis
//!
//! Two hashes under the session id's hash tag (one slot): `{prefix}{id}` holds the fields
//! (each value as the framework serialised it) and `{prefix}{id}:m` the meta data: the
//! version, the idle timeout, the absolute deadline and, per field, the version that last
//! wrote it. Ids are 128 bits from the operating system's CSPRNG, 32 hex digits.
//!
//! # No lost updates
//!
//! Both frameworks hand the store whole records. Each loaded record carries one extra entry,
//! [`META_FIELD`]: the id and version it was read at, and a digest of every field. On a write
//! the store compares the record with those digests and sends only what this request
//! changed (fields set, fields removed); one script applies them. Two concurrent requests that
//! change different fields therefore both persist. What cannot be merged: the same field
//! changed by two requests to different values. The script detects it (the field was written
//! after this request's version) and the later write wins; it is counted in
//! `redis_session_conflicts_total` and logged (without names or values). A record that lost
//! its meta entry (the application cleared the session and filled it again) replaces the
//! stored session whole.
//!
//! # Expiry
//!
//! A load slides the expiry (one `PEXPIREAT` in the same script) only when the remaining
//! time has fallen by [`SessionsBuilder::refresh_fraction`] of the idle timeout, so a read
//! costs one round trip and writes at most once per fraction. No expiry ever passes the
//! absolute deadline set when the session was created ([`SessionsBuilder::absolute_lifetime`]);
//! a rotation keeps it, and a write that finds its session gone (a request that loaded it
//! just before it expired) recreates it only before that deadline.
//!
//! # Rotation
//!
//! The frameworks renew an id by deleting the old one and saving the record anew. Here the
//! delete marks the old session ended (new requests no longer see it) and keeps it for
//! [`SessionsBuilder::rotation_grace`]; the save copies its current fields into the new id
//! with this request's changes merged, then points the old id at the new one. Requests
//! already in flight with the old id keep reading it during the grace period, and their
//! writes go to the new id (actix-session also moves their cookie to it). With a grace of 0
//! the old id stops working at once.
//!
//! # Logging out everywhere
//!
//! With [`SessionsBuilder::user_field`], a session whose record holds that field is listed in
//! the user's index (a sorted set on the user's own slot, scored by each session's absolute
//! deadline): [`Sessions::list`] and [`Sessions::end_all`]. Every index call drops the members
//! past their deadline, and the index expires with its last member, so it never outlives the
//! sessions in it.
//!
//! # Failures
//!
//! A value under a session key that is not a session of this store (another type, missing meta
//! data, a field that does not decode) starts a new session: logged and counted, never an
//! error. When Redis cannot answer, [`OnUnavailable`] decides: fail (the framework answers
//! with a server error), or go on with a fresh session that is not persisted. Ids and session
//! contents never appear in logs or `Debug` output.

#[cfg(feature = "session-actix")]
pub mod actix;
pub mod metrics;
mod scripts;
#[cfg(feature = "session-tower")]
pub mod tower;

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use redis::Value;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::metrics::{LoadResult, SessionMetrics, WriteKind};
use crate::{
    connection::{Redis, Script},
    error::CacheError,
    warn::WarnLimiter,
};

/// The record entry that carries what a write needs to merge: the id and version the record
/// was loaded at, and a digest of each field. Applications should leave it alone.
pub const META_FIELD: &str = "__session";

/// What a store does when Redis cannot answer (down, timed out, circuit open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnUnavailable {
    /// Return the error to the framework: actix-session answers `500`; tower-sessions hands a
    /// load's error to the handler (its `Session` methods return it) and answers a failed save
    /// with `500`.
    #[default]
    Fail,
    /// Go on as if the request had no session: loads find none, and writes are not persisted
    /// (the response carries a cookie that names nothing). Logged and counted.
    Fresh,
}

/// Builds [`Sessions`]; every option has a default.
#[derive(Clone)]
pub struct SessionsBuilder {
    redis: Redis,
    prefix: String,
    idle_timeout: Duration,
    absolute_lifetime: Duration,
    refresh_fraction: f64,
    rotation_grace: Duration,
    user_field: Option<String>,
    on_unavailable: OnUnavailable,
    name: Option<String>,
}

impl fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("prefix", &self.prefix)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("refresh_fraction", &self.refresh_fraction)
            .field("rotation_grace", &self.rotation_grace)
            .field("user_field", &self.user_field)
            .field("on_unavailable", &self.on_unavailable)
            .finish_non_exhaustive()
    }
}

impl SessionsBuilder {
    /// The key prefix (default `session:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The idle timeout used when the framework gives none (default 1 day). actix-session
    /// passes its `state_ttl` on every write, tower-sessions its record's expiry date; the
    /// last one written is what loads slide by.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long a session may live at most from its creation, whatever its activity
    /// (default 7 days). Sliding never extends it; rotation keeps it.
    pub fn absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    /// The fraction of the idle timeout that must have passed since the expiry was last set
    /// before a load sets it again (default 0.25; within (0, 1]).
    pub fn refresh_fraction(mut self, fraction: f64) -> Self {
        self.refresh_fraction = fraction;
        self
    }

    /// How long a renewed or ended session keeps answering the requests already in flight
    /// with it (default 2 s; 0: not at all).
    pub fn rotation_grace(mut self, grace: Duration) -> Self {
        self.rotation_grace = grace;
        self
    }

    /// The session field that names the signed-in user (as the framework stores it, JSON),
    /// for [`Sessions::list`] and [`Sessions::end_all`]. Off by default.
    pub fn user_field(mut self, field: impl Into<String>) -> Self {
        self.user_field = Some(field.into());
        self
    }

    /// What to do when Redis cannot answer (default [`OnUnavailable::Fail`]).
    pub fn on_unavailable(mut self, policy: OnUnavailable) -> Self {
        self.on_unavailable = policy;
        self
    }

    /// The `store` label of this store's metrics (default `default`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks the options and builds the store.
    pub fn build(self) -> Result<Sessions, CacheError> {
        if !(self.refresh_fraction > 0.0 && self.refresh_fraction <= 1.0) {
            return Err(CacheError::Config(
                "a session refresh fraction must be within (0, 1]".into(),
            ));
        }
        if self.idle_timeout.as_millis() == 0 || self.absolute_lifetime.as_millis() == 0 {
            return Err(CacheError::Config(
                "session timeouts must be at least one millisecond".into(),
            ));
        }
        if self.prefix.contains(['{', '}']) {
            return Err(CacheError::Config(
                "a session prefix cannot hold `{` or `}`: the id is the hash tag".into(),
            ));
        }
        let name = self.name.clone().unwrap_or_else(|| "default".into());
        Ok(Sessions {
            inner: Arc::new(Inner {
                metrics: SessionMetrics::new(name.into()),
                warnings: WarnLimiter::default(),
                config: self,
            }),
        })
    }
}

/// A session store on one [`Redis`]: cheap to clone. It implements actix-session's and
/// tower-sessions' `SessionStore` (features `session-actix`, `session-tower`).
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    config: SessionsBuilder,
    metrics: SessionMetrics,
    warnings: WarnLimiter,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The merge state carried in a record under [`META_FIELD`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Base {
    /// The id the record was loaded from.
    id: String,
    /// Its version then.
    v: u64,
    /// A digest of each field then.
    h: HashMap<String, String>,
    /// The session's absolute deadline (epoch ms): a write that finds the session gone
    /// recreates it only before then, so a late write cannot extend its lifetime.
    #[serde(default)]
    a: i64,
}

impl Base {
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A loaded session: its fields as stored, and what a write needs to merge.
pub(crate) struct Loaded {
    pub(crate) fields: HashMap<String, String>,
    pub(crate) base: Base,
    /// Milliseconds until it expires (tower-sessions' records carry it).
    #[cfg_attr(not(feature = "session-tower"), allow(dead_code))]
    pub(crate) ttl_ms: u64,
}

/// A reply that is not the shape a script returns: the key holds something else.
struct Corrupt;

/// How a store call failed.
pub(crate) enum Failure {
    /// Redis could not answer, and the policy is to fail.
    Redis(CacheError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(e) => write!(f, "session store unavailable: {e}"),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Redis(e) => Some(e),
        }
    }
}

/// A new session id: 128 bits from the operating system's CSPRNG.
pub(crate) fn new_id() -> Result<u128, CacheError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| CacheError::Config(format!("no random source for session ids: {e}")))?;
    Ok(u128::from_le_bytes(bytes))
}

/// The text form of an id, as keys and actix-session cookies carry it.
pub(crate) fn id_text(id: u128) -> String {
    format!("{id:032x}")
}

/// Whether `text` is an id this store could have made (anything else is never looked up).
fn valid_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn digest(value: &str) -> String {
    let hash = Sha256::digest(value.as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|t| t.parse().ok()),
    }
}

fn pairs(v: &Value) -> Option<Vec<(String, Option<String>)>> {
    let Value::Array(items) = v else {
        return None;
    };
    items
        .chunks(2)
        .map(|c| match c {
            [k, Value::Nil] => Some((text(k)?, None)),
            [k, v] => Some((text(k)?, Some(text(v)?))),
            _ => None,
        })
        .collect()
}

/// A script's reply: its status word and the rest.
fn reply(v: Value) -> Result<(String, Vec<Value>), Corrupt> {
    let Value::Array(mut items) = v else {
        return Err(Corrupt);
    };
    if items.is_empty() {
        return Err(Corrupt);
    }
    let status = text(&items.remove(0)).ok_or(Corrupt)?;
    Ok((status, items))
}

/// What a write changes: `s` (set) or `d` (delete) of a field.
type Ops = Vec<(&'static str, String, String)>;

/// A write's outcome.
struct Written {
    id: String,
    abs: i64,
    /// Made by this write (new, renewed, or recreated): its user, if any, is indexed.
    created: bool,
}

impl Sessions {
    /// A builder for a store on `redis`.
    pub fn builder(redis: &Redis) -> SessionsBuilder {
        SessionsBuilder {
            redis: redis.clone(),
            prefix: "session:".into(),
            idle_timeout: Duration::from_secs(24 * 3600),
            absolute_lifetime: Duration::from_secs(7 * 24 * 3600),
            refresh_fraction: 0.25,
            rotation_grace: Duration::from_secs(2),
            user_field: None,
            on_unavailable: OnUnavailable::Fail,
            name: None,
        }
    }

    fn config(&self) -> &SessionsBuilder {
        &self.inner.config
    }

    fn redis(&self) -> &Redis {
        &self.inner.config.redis
    }

    fn keys(&self, id: &str) -> [String; 2] {
        let prefix = &self.config().prefix;
        [format!("{prefix}{{{id}}}"), format!("{prefix}{{{id}}}:m")]
    }

    fn index_key(&self, user: &str) -> String {
        let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{}user:{{{hex}}}", self.config().prefix)
    }

    pub(crate) fn default_ttl(&self) -> Duration {
        self.config().idle_timeout
    }

    pub(crate) fn policy(&self) -> OnUnavailable {
        self.config().on_unavailable
    }

    async fn eval(
        &self,
        script: &Script,
        keys: &[String],
        args: Vec<String>,
    ) -> Result<Value, CacheError> {
        self.redis().eval(script, keys, args).await
    }

    /// Redis could not answer: an error, or (policy `Fresh`) nothing, logged either way.
    fn unavailable(&self, what: &str, e: CacheError) -> Result<(), Failure> {
        if let Some(suppressed) = self.inner.warnings.admit() {
            tracing::warn!(error = %e, suppressed, "session store: {what} failed");
        }
        match self.policy() {
            OnUnavailable::Fail => Err(Failure::Redis(e)),
            OnUnavailable::Fresh => Ok(()),
        }
    }

    fn corrupt(&self) {
        self.inner.metrics.load(LoadResult::Corrupt);
        if let Some(suppressed) = self.inner.warnings.admit() {
            tracing::warn!(
                suppressed,
                "session store: a session key holds a value this store did not write; \
                 starting a new session"
            );
        }
    }

    /// Loads the session `id`; `None` when there is none (or it was unreadable, or Redis is
    /// down under [`OnUnavailable::Fresh`]).
    pub(crate) async fn load(&self, id: &str) -> Result<Option<Loaded>, Failure> {
        if !valid_id(id) {
            self.inner.metrics.load(LoadResult::Missing);
            return Ok(None);
        }
        let keys = self.keys(id);
        let reply = match self
            .eval(
                &scripts::LOAD,
                &keys,
                vec![self.config().refresh_fraction.to_string()],
            )
            .await
        {
            Ok(v) => v,
            Err(e) => {
                self.inner.metrics.load(LoadResult::Unavailable);
                self.unavailable("load", e)?;
                return Ok(None);
            }
        };
        match self.parse_load(id, reply) {
            Ok(loaded) => Ok(loaded),
            Err(Corrupt) => {
                self.corrupt();
                Ok(None)
            }
        }
    }

    fn parse_load(&self, id: &str, reply: Value) -> Result<Option<Loaded>, Corrupt> {
        let (status, rest) = self::reply(reply)?;
        match status.as_str() {
            "missing" => {
                self.inner.metrics.load(LoadResult::Missing);
                return Ok(None);
            }
            "ended" => {
                self.inner.metrics.load(LoadResult::Ended);
                return Ok(None);
            }
            "ok" => {}
            _ => return Err(Corrupt),
        }
        let [v, pttl, refreshed, data, _fwd, abs] = rest.as_slice() else {
            return Err(Corrupt);
        };
        let version = int(v).and_then(|v| u64::try_from(v).ok()).ok_or(Corrupt)?;
        let ttl_ms = int(pttl).and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        if int(refreshed) == Some(1) {
            self.inner.metrics.refreshed();
        }
        let mut fields = HashMap::new();
        let mut h = HashMap::new();
        for (k, v) in pairs(data).ok_or(Corrupt)? {
            let v = v.ok_or(Corrupt)?;
            h.insert(k.clone(), digest(&v));
            fields.insert(k, v);
        }
        self.inner.metrics.load(LoadResult::Found);
        Ok(Some(Loaded {
            fields,
            base: Base {
                id: id.to_owned(),
                v: version,
                h,
                a: int(abs).ok_or(Corrupt)?,
            },
            ttl_ms,
        }))
    }

    /// Writes a record: an update of `id` merged against `base`, a rotation (no `id`, a base
    /// from another id), or a new session. Returns the id the record now lives under.
    /// `keep_id`: a write whose session is gone recreates it under the same id (tower-sessions
    /// cannot take a new id on `save`) instead of a new one.
    pub(crate) async fn write(
        &self,
        id: Option<&str>,
        mut fields: HashMap<String, String>,
        ttl: Duration,
        keep_id: bool,
    ) -> Result<String, Failure> {
        let base = fields.remove(META_FIELD).and_then(|t| Base::decode(&t));
        let ttl_ms = ttl.as_millis().max(1);
        // The user index is written when a session is made or its user changes, not on
        // every write of a signed-in session.
        let user_changed = |base: &Base| {
            self.config()
                .user_field
                .as_ref()
                .is_some_and(|f| base.h.get(f) != fields.get(f).map(|v| digest(v)).as_ref())
        };
        let (result, index) = match (id, base) {
            (Some(id), Some(base)) if base.id == id && valid_id(id) => (
                self.update(id, &fields, &base, ttl_ms, keep_id).await,
                user_changed(&base),
            ),
            (Some(id), _) if valid_id(id) => {
                (self.replace(id, &fields, ttl_ms, keep_id).await, true)
            }
            (_, Some(base)) if valid_id(&base.id) => {
                (self.rotate(&base, &fields, ttl_ms).await, true)
            }
            _ => (self.create(None, &fields, ttl_ms, 0, None).await, true),
        };
        match result {
            Ok(written) => {
                if index || written.created {
                    self.index(&fields, &written).await;
                }
                Ok(written.id)
            }
            Err(e) => {
                self.unavailable("write", e)?;
                self.inner.metrics.write(WriteKind::Unpersisted);
                match id {
                    Some(id) => Ok(id.to_owned()),
                    None => new_id().map(id_text).map_err(Failure::Redis),
                }
            }
        }
    }

    async fn update(
        &self,
        id: &str,
        fields: &HashMap<String, String>,
        base: &Base,
        ttl_ms: u128,
        keep_id: bool,
    ) -> Result<Written, CacheError> {
        let mut ops: Ops = Vec::new();
        for (k, v) in fields {
            if base.h.get(k) != Some(&digest(v)) {
                ops.push(("s", k.clone(), v.clone()));
            }
        }
        for k in base.h.keys() {
            if !fields.contains_key(k) {
                ops.push(("d", k.clone(), String::new()));
            }
        }
        if ops.is_empty() {
            // Nothing changed: the load already slid the expiry.
            return Ok(Written {
                id: id.to_owned(),
                abs: 0,
                created: false,
            });
        }
        self.apply(
            id,
            "u",
            base.v,
            &ops,
            fields,
            ttl_ms,
            keep_id,
            WriteKind::Update,
            base.a,
        )
        .await
    }

    async fn replace(
        &self,
        id: &str,
        fields: &HashMap<String, String>,
        ttl_ms: u128,
        keep_id: bool,
    ) -> Result<Written, CacheError> {
        let ops: Ops = fields
            .iter()
            .map(|(k, v)| ("s", k.clone(), v.clone()))
            .collect();
        self.apply(
            id,
            "r",
            0,
            &ops,
            fields,
            ttl_ms,
            keep_id,
            WriteKind::Replace,
            0,
        )
        .await
    }

    /// Sends `ops` to `id`, following a rotation's forward; a session that is gone is
    /// created anew with the whole record.
    #[allow(clippy::too_many_arguments)]
    async fn apply(
        &self,
        id: &str,
        mode: &str,
        base: u64,
        ops: &Ops,
        fields: &HashMap<String, String>,
        ttl_ms: u128,
        keep_id: bool,
        kind: WriteKind,
        abs: i64,
    ) -> Result<Written, CacheError> {
        let mut target = id.to_owned();
        // A forward names a newer id; a chain longer than this is not one this store made.
        for _ in 0..4 {
            let mut args = vec![
                mode.to_owned(),
                base.to_string(),
                ttl_ms.to_string(),
                ops.len().to_string(),
            ];
            for (op, k, v) in ops {
                args.extend([(*op).to_owned(), k.clone(), v.clone()]);
            }
            let reply = self
                .eval(&scripts::WRITE, &self.keys(&target), args)
                .await?;
            match self::reply(reply) {
                Ok((s, rest)) if s == "ok" => {
                    self.inner.metrics.write(kind);
                    let conflicts = rest.get(1).and_then(int).unwrap_or(0);
                    if conflicts > 0 {
                        self.inner.metrics.conflicts(conflicts.unsigned_abs());
                        tracing::info!(
                            conflicts,
                            "session store: concurrent requests changed the same fields; \
                             the later write won"
                        );
                    }
                    let abs = rest.get(3).and_then(int).unwrap_or(0);
                    return Ok(Written {
                        id: target,
                        abs,
                        created: false,
                    });
                }
                Ok((s, rest)) if s == "fwd" => match rest.first().and_then(text) {
                    Some(next) if valid_id(&next) => target = next,
                    _ => break,
                },
                Ok((s, _)) if s == "missing" => {
                    let keep = keep_id.then_some(target.as_str());
                    return self.create(keep, fields, ttl_ms, abs, None).await;
                }
                _ => {
                    self.corrupt();
                    // A damaged session is not written over: the record moves to a new id.
                    return self.create(None, fields, ttl_ms, abs, None).await;
                }
            }
        }
        self.corrupt();
        self.create(None, fields, ttl_ms, abs, None).await
    }

    /// Creates a session with `fields` under `id` (or a new id), its absolute deadline `abs`
    /// (0: from now) and the per-field revisions `revs` carried by a rotation.
    async fn create(
        &self,
        id: Option<&str>,
        fields: &HashMap<String, String>,
        ttl_ms: u128,
        abs: i64,
        revs: Option<(u64, &HashMap<String, u64>)>,
    ) -> Result<Written, CacheError> {
        let lifetime = self.config().absolute_lifetime.as_millis();
        let version = revs.map_or(1, |(v, _)| v);
        for attempt in 0..3 {
            let target = match (id, attempt) {
                (Some(id), 0) => id.to_owned(),
                _ => id_text(new_id()?),
            };
            let mut args = vec![
                ttl_ms.to_string(),
                lifetime.to_string(),
                abs.to_string(),
                version.to_string(),
                fields.len().to_string(),
            ];
            for (k, v) in fields {
                let rev = revs.and_then(|(_, r)| r.get(k).copied()).unwrap_or(version);
                args.extend([k.clone(), v.clone(), rev.to_string()]);
            }
            let reply = self
                .eval(&scripts::CREATE, &self.keys(&target), args)
                .await?;
            match self::reply(reply) {
                Ok((s, rest)) if s == "ok" => {
                    self.inner.metrics.write(WriteKind::Create);
                    let abs = rest.get(1).and_then(int).unwrap_or(0);
                    return Ok(Written {
                        id: target,
                        abs,
                        created: true,
                    });
                }
                // A carried deadline that has passed: the session is over and stays over;
                // the request goes on with an id that names nothing.
                Ok((s, _)) if s == "expired" => {
                    return Ok(Written {
                        id: id_text(new_id()?),
                        abs: 0,
                        created: false,
                    });
                }
                // `exists`: another session has this id (only a kept id can, in practice).
                _ => continue,
            }
        }
        Err(CacheError::Config(
            "could not find a free session id".into(),
        ))
    }

    /// A renewal: copies the old session (with this request's changes merged) to a new id,
    /// then points the old id at it and applies what was written to it in between.
    async fn rotate(
        &self,
        base: &Base,
        fields: &HashMap<String, String>,
        ttl_ms: u128,
    ) -> Result<Written, CacheError> {
        let old = self.keys(&base.id);
        let snap = self.eval(&scripts::SNAPSHOT, &old, Vec::new()).await?;
        let Some((version, abs, mut current, mut revs)) = parse_snapshot(snap) else {
            // Gone (or unreadable): the record is all there is, within its lifetime.
            return self.create(None, fields, ttl_ms, base.a, None).await;
        };
        let nv = version + 1;
        let mut conflicts = 0u64;
        let mut touch = |k: &str, new: Option<&String>, current: &mut HashMap<String, String>| {
            if revs.get(k).copied().unwrap_or(0) > base.v && current.get(k) != new {
                conflicts += 1;
            }
            revs.insert(k.to_owned(), nv);
            match new {
                Some(v) => current.insert(k.to_owned(), v.clone()),
                None => current.remove(k),
            };
        };
        for (k, v) in fields {
            if base.h.get(k) != Some(&digest(v)) {
                touch(k, Some(v), &mut current);
            }
        }
        for k in base.h.keys() {
            if !fields.contains_key(k) {
                touch(k, None, &mut current);
            }
        }
        self.inner.metrics.conflicts(conflicts);
        let written = self
            .create(None, &current, ttl_ms, abs, Some((nv, &revs)))
            .await?;
        self.inner.metrics.write(WriteKind::Rotate);
        let grace = self.config().rotation_grace.as_millis();
        let fwd = self
            .eval(
                &scripts::FORWARD,
                &old,
                vec![written.id.clone(), version.to_string(), grace.to_string()],
            )
            .await?;
        if let Ok((s, rest)) = reply(fwd)
            && s == "changed"
            && let Some(changed) = rest.first().and_then(pairs)
        {
            // Written to the old id after the copy: applied to the new one, merged against
            // the copied version.
            let ops: Ops = changed
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => ("s", k, v),
                    None => ("d", k, String::new()),
                })
                .collect();
            return self
                .apply(
                    &written.id,
                    "u",
                    version,
                    &ops,
                    &current,
                    ttl_ms,
                    false,
                    WriteKind::Update,
                    abs,
                )
                .await;
        }
        Ok(written)
    }

    /// Ends the session `id` (the frameworks' delete): marked ended for the rotation grace,
    /// then gone; removed from its user's index.
    pub(crate) async fn end(&self, id: &str) -> Result<(), Failure> {
        if !valid_id(id) {
            return Ok(());
        }
        let grace = self.config().rotation_grace.as_millis();
        self.end_with(id, grace).await
    }

    async fn end_with(&self, id: &str, grace: u128) -> Result<(), Failure> {
        let user_field = self.config().user_field.clone().unwrap_or_default();
        match self
            .eval(
                &scripts::END,
                &self.keys(id),
                vec![grace.to_string(), user_field],
            )
            .await
        {
            Ok(user) => {
                self.inner.metrics.write(WriteKind::End);
                if let Some(user) = text(&user)
                    && self.config().user_field.is_some()
                {
                    let key = self.index_key(&user);
                    let args = vec!["remove".to_owned(), id.to_owned()];
                    if let Err(e) = self.eval(&scripts::INDEX, &[key], args).await {
                        // The index drops the member at its deadline anyway.
                        tracing::debug!(error = %e, "session store: index removal failed");
                    }
                }
                Ok(())
            }
            Err(e) => self.unavailable("delete", e),
        }
    }

    /// Adds a written session to its user's index when the record names a user.
    async fn index(&self, fields: &HashMap<String, String>, written: &Written) {
        let Some(field) = &self.config().user_field else {
            return;
        };
        let Some(user) = fields.get(field) else {
            return;
        };
        if written.abs <= 0 {
            return;
        }
        let args = vec![
            "add".to_owned(),
            written.id.clone(),
            written.abs.to_string(),
        ];
        if let Err(e) = self
            .eval(&scripts::INDEX, &[self.index_key(user)], args)
            .await
            && let Some(suppressed) = self.inner.warnings.admit()
        {
            tracing::warn!(error = %e, suppressed, "session store: user index update failed");
        }
    }

    /// The live sessions of `user` (the value of the [`user_field`](SessionsBuilder::user_field)
    /// as the framework stores it: serialised to JSON here), as opaque ids.
    pub async fn list<U: Serialize + ?Sized>(&self, user: &U) -> Result<Vec<String>, CacheError> {
        let user = serde_json::to_string(user).map_err(|e| CacheError::Encode(Box::new(e)))?;
        let ids: Vec<String> = self
            .redis()
            .eval(
                &scripts::INDEX,
                &[self.index_key(&user)],
                vec!["list".to_owned(), String::new()],
            )
            .await?;
        Ok(ids)
    }

    /// Ends every session of `user` at once (no grace): "log out everywhere". Returns how
    /// many were listed.
    pub async fn end_all<U: Serialize + ?Sized>(&self, user: &U) -> Result<usize, CacheError> {
        let ids = self.list(user).await?;
        let ended = futures_util::future::join_all(ids.iter().map(|id| async move {
            self.redis()
                .eval::<Value, _, _>(
                    &scripts::END,
                    &self.keys(id),
                    vec!["0".to_owned(), String::new()],
                )
                .await
        }))
        .await;
        for result in ended {
            result?;
            self.inner.metrics.write(WriteKind::End);
        }
        let user = serde_json::to_string(user).map_err(|e| CacheError::Encode(Box::new(e)))?;
        self.redis()
            .query::<()>(redis::cmd("UNLINK").arg(self.index_key(&user)))
            .await?;
        Ok(ids.len())
    }
}

type Snapshot = (u64, i64, HashMap<String, String>, HashMap<String, u64>);

fn parse_snapshot(v: Value) -> Option<Snapshot> {
    let (status, rest) = reply(v).ok()?;
    if status != "ok" {
        return None;
    }
    let [v, abs, data, revs] = rest.as_slice() else {
        return None;
    };
    let fields = pairs(data)?
        .into_iter()
        .map(|(k, v)| Some((k, v?)))
        .collect::<Option<HashMap<_, _>>>()?;
    let revs = pairs(revs)?
        .into_iter()
        .map(|(k, v)| Some((k, v?.parse().ok()?)))
        .collect::<Option<HashMap<_, _>>>()?;
    Some((u64::try_from(int(v)?).ok()?, int(abs)?, fields, revs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bits_of_hex_and_differ() {
        let a = id_text(new_id().expect("random"));
        let b = id_text(new_id().expect("random"));
        assert!(valid_id(&a) && valid_id(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn anything_but_an_id_is_never_looked_up() {
        assert!(!valid_id("abc"));
        assert!(!valid_id(&"g".repeat(32)));
        assert!(!valid_id("{0000000000000000000000000000000}"));
    }

    #[test]
    fn the_base_survives_its_text_form() {
        let base = Base {
            id: "a".repeat(32),
            v: 7,
            h: HashMap::from([("cart".to_owned(), digest("[1]"))]),
            a: 1_796_851_296_965,
        };
        let back = Base::decode(&base.encode()).expect("decodes");
        assert_eq!(
            (back.id, back.v, back.h, back.a),
            (base.id, base.v, base.h, base.a)
        );
    }
}
