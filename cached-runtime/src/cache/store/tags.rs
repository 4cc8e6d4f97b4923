//! The store's tag commands: an entry read together with its tags' versions, the versions
//! taken before a fill, and a tag's invalidation.
//!
//! On one server a read is one `MGET` of the entry and its tags (with `PTTL` in the same
//! pipeline when the near cache asks), and the other commands of a call go in one pipeline.
//! On a cluster a command or pipeline must stay in one slot, so the tag keys are grouped by
//! slot (an `MGET` or a pipeline each), all sent at once and beside the entry's `GET`: the
//! round trips overlap, so a read still waits for one.

use std::time::Duration;

use futures_util::future::try_join_all;

use crate::{
    cache::store::{Backend, Store},
    connection::{Gate, Redis, cluster::key_slot},
    error::CacheError,
    telemetry::Op,
};

/// An entry with how long Redis keeps it (when asked), and its tags' stored versions.
pub(crate) type TaggedEntry = (Option<(Vec<u8>, Option<Duration>)>, Vec<Option<Vec<u8>>>);

impl Store {
    /// `GET key` (and `PTTL key` when `with_ttl`) and `GET` of every tag key, in one round
    /// trip.
    pub(crate) async fn get_tagged(
        &self,
        key: &str,
        with_ttl: bool,
        tags: &[String],
    ) -> Result<TaggedEntry, CacheError> {
        match &self.backend {
            // One server: the entry and its tags in one `MGET`, so a tagged read sends as
            // many commands as an untagged one.
            Backend::Redis { redis, .. } if !redis.is_cluster() => {
                let (mut values, ttl): (Vec<Option<Vec<u8>>>, Option<Duration>) = if with_ttl {
                    let mut pipe = ::redis::pipe();
                    pipe.cmd("MGET").arg(key).arg(tags).cmd("PTTL").arg(key);
                    let (values, ms): (Vec<Option<Vec<u8>>>, i64) =
                        redis.pipeline(Op::Get, Gate::Guarded, key, &pipe).await?;
                    (values, pttl(ms))
                } else {
                    let mut cmd = ::redis::cmd("MGET");
                    cmd.arg(key).arg(tags);
                    let values = redis.command(Op::Get, Gate::Guarded, key, &cmd).await?;
                    (values, None)
                };
                if values.len() != tags.len() + 1 {
                    return Err(unexpected(format!(
                        "{} values for an MGET of {} keys",
                        values.len(),
                        tags.len() + 1
                    )));
                }
                let bytes = values.remove(0);
                Ok((bytes.map(|b| (b, ttl)), values))
            }
            Backend::Redis { redis, .. } => {
                let entry = async {
                    if with_ttl {
                        let mut pipe = ::redis::pipe();
                        pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
                        let (bytes, ttl): (Option<Vec<u8>>, i64) =
                            redis.pipeline(Op::Get, Gate::Guarded, key, &pipe).await?;
                        Ok::<_, CacheError>(bytes.map(|b| (b, pttl(ttl))))
                    } else {
                        let mut cmd = ::redis::cmd("GET");
                        cmd.arg(key);
                        let bytes: Option<Vec<u8>> =
                            redis.command(Op::Get, Gate::Guarded, key, &cmd).await?;
                        Ok(bytes.map(|b| (b, None)))
                    }
                };
                let versions = mget_by_slot(redis, tags);
                let (entry, versions) = futures_util::future::try_join(entry, versions).await?;
                Ok((entry, versions))
            }
            Backend::Memory(m) => {
                let entry = m
                    .get(key)
                    .map(|b| (b, m.ttl_ms(key).map(Duration::from_millis)));
                Ok((entry, tags.iter().map(|t| m.get(t)).collect()))
            }
        }
    }

    /// `SET tag version NX GET EX secs` for every tag: the version each tag has now, `None`
    /// where `versions[i]` was just set.
    pub(crate) async fn stamp_tags(
        &self,
        tags: &[String],
        versions: &[String],
        secs: u64,
    ) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                let version_of = |tag: &String| {
                    let i = tags.iter().position(|t| t == tag).unwrap_or(0);
                    versions.get(i).map_or("", String::as_str)
                };
                by_slot(redis, tags, Op::Set, Gate::Guarded, |pipe, tag| {
                    pipe.cmd("SET")
                        .arg(tag)
                        .arg(version_of(tag))
                        .arg("NX")
                        .arg("GET")
                        .arg("EX")
                        .arg(secs);
                })
                .await
            }
            Backend::Memory(m) => Ok(tags
                .iter()
                .zip(versions)
                .map(|(tag, version)| {
                    let old = m.get(tag);
                    if old.is_none() {
                        m.set_ex(tag, version.as_bytes(), secs);
                    }
                    old
                })
                .collect()),
        }
    }

    /// `UNLINK` of each tag key, one command per tag, sent together; not subject to the
    /// breaker. Returns how many existed.
    pub(crate) async fn unlink_tags(&self, tags: &[String]) -> Result<u64, CacheError> {
        match &self.backend {
            Backend::Redis { redis, .. } => {
                let found: Vec<Option<i64>> =
                    by_slot(redis, tags, Op::Unlink, Gate::Always, |pipe, tag| {
                        pipe.cmd("UNLINK").arg(tag);
                    })
                    .await?;
                Ok(found.into_iter().flatten().map(|n| n.max(0) as u64).sum())
            }
            Backend::Memory(m) => {
                let keys: Vec<&str> = tags.iter().map(String::as_str).collect();
                Ok(m.delete(&keys))
            }
        }
    }
}

/// `MGET` of `keys`, one per hash slot, sent together; the values in the order of `keys`.
async fn mget_by_slot(redis: &Redis, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let slot = key_slot(key.as_bytes());
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    let sends = groups.iter().map(|(_, members)| {
        let mut cmd = ::redis::cmd("MGET");
        for &i in members {
            cmd.arg(&keys[i]);
        }
        let first = &keys[members[0]];
        async move {
            let values: Vec<Option<Vec<u8>>> =
                redis.command(Op::Get, Gate::Guarded, first, &cmd).await?;
            Ok::<_, CacheError>(values)
        }
    });
    let replies = try_join_all(sends).await?;
    let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
    for ((_, members), values) in groups.iter().zip(replies) {
        if values.len() != members.len() {
            return Err(unexpected(format!(
                "{} values for an MGET of {} keys",
                values.len(),
                members.len()
            )));
        }
        for (&i, value) in members.iter().zip(values) {
            out[i] = value;
        }
    }
    Ok(out)
}

/// One command per key, in one pipeline per hash slot (one pipeline in all on one server),
/// sent together; the replies in the order of `keys`.
async fn by_slot<T: ::redis::FromRedisValue>(
    redis: &Redis,
    keys: &[String],
    op: Op,
    gate: Gate,
    command: impl Fn(&mut ::redis::Pipeline, &String),
) -> Result<Vec<T>, CacheError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let slot = if redis.is_cluster() {
            key_slot(key.as_bytes())
        } else {
            0
        };
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    let sends = groups.iter().map(|(_, members)| {
        let mut pipe = ::redis::pipe();
        for &i in members {
            command(&mut pipe, &keys[i]);
        }
        let first = &keys[members[0]];
        async move {
            let replies: Vec<::redis::Value> = redis.pipeline(op, gate, first, &pipe).await?;
            Ok::<_, CacheError>(replies)
        }
    });
    let replies = try_join_all(sends).await?;
    let mut out: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();
    for ((_, members), replies) in groups.iter().zip(replies) {
        if replies.len() != members.len() {
            return Err(unexpected(format!(
                "{} replies to a pipeline of {} commands",
                replies.len(),
                members.len()
            )));
        }
        for (&i, reply) in members.iter().zip(replies) {
            out[i] = Some(from_value(Some(reply))?);
        }
    }
    out.into_iter()
        .map(|v| v.ok_or_else(|| unexpected("a pipeline reply is missing".to_owned())))
        .collect()
}

fn from_value<T: ::redis::FromRedisValue>(value: Option<::redis::Value>) -> Result<T, CacheError> {
    let value = value.ok_or_else(|| unexpected("a pipeline reply is missing".to_owned()))?;
    T::from_redis_value(value).map_err(|e| CacheError::Command {
        code: None,
        source: Box::new(e),
    })
}

/// A reply of an unexpected shape.
fn unexpected(what: String) -> CacheError {
    CacheError::Command {
        code: None,
        source: what.into(),
    }
}

/// `PTTL`'s reply: -1 no expiry; -2 (expired right after the `GET`) keeps nothing.
fn pttl(ms: i64) -> Option<Duration> {
    match ms {
        -1 => None,
        ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    }
}
