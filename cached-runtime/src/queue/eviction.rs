//! The check a queue makes at start: a Redis that may evict keys may drop jobs.

use crate::{
    connection::{Redis, Value, cmd},
    error::CacheError,
};

/// What a queue does at start when its Redis may evict its keys (`maxmemory-policy` is one
/// of the `allkeys-*` policies), or when it cannot tell.
///
/// `noeviction` is what a queue wants; the `volatile-*` policies evict only keys with a TTL,
/// and a queue's keys have none, so they pass too. The policy is read from `INFO memory` of
/// every primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictionCheck {
    /// Fail [`QueueBuilder::build`](super::QueueBuilder::build) with an error that names the
    /// policy (the default).
    #[default]
    Refuse,
    /// Log a warning and go on: for a Redis shared with a cache, where the risk is accepted.
    Warn,
}

/// The eviction policies under which a queue's keys (which have no TTL) may be evicted.
fn evicts_any_key(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// Every `maxmemory_policy` an `INFO` reply names (one per primary on a cluster).
fn policies(reply: &Value, out: &mut Vec<String>) {
    match reply {
        Value::BulkString(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            out.extend(text.lines().filter_map(|line| {
                line.strip_prefix("maxmemory_policy:")
                    .map(|p| p.trim().to_owned())
            }));
        }
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => {
            policies(&Value::BulkString(text.clone().into_bytes()), out);
        }
        Value::Array(items) | Value::Set(items) => {
            for item in items {
                policies(item, out);
            }
        }
        Value::Map(pairs) => {
            for (_, item) in pairs {
                policies(item, out);
            }
        }
        _ => {}
    }
}

/// Reads the eviction policy and acts as `check` says.
pub(crate) async fn check(
    redis: &Redis,
    queue: &str,
    check: EvictionCheck,
) -> Result<(), CacheError> {
    let problem = match redis.query::<Value>(cmd("INFO").arg("memory")).await {
        Ok(reply) => {
            let mut found = Vec::new();
            policies(&reply, &mut found);
            match found.iter().find(|p| evicts_any_key(p)) {
                Some(policy) => format!(
                    "redis at {} has maxmemory-policy {policy}, which may evict the jobs of queue {queue:?}: \
                     use a redis with noeviction (or a volatile-* policy) for queues",
                    redis.describe()
                ),
                None if found.is_empty() => format!(
                    "cannot tell whether redis at {} may evict the jobs of queue {queue:?}: \
                     INFO memory has no maxmemory_policy",
                    redis.describe()
                ),
                None => return Ok(()),
            }
        }
        Err(e) => format!(
            "cannot tell whether redis at {} may evict the jobs of queue {queue:?}: INFO memory failed: {e}",
            redis.describe()
        ),
    };
    match check {
        EvictionCheck::Refuse => Err(CacheError::Config(format!(
            "{problem} (or build the queue with EvictionCheck::Warn to start anyway)"
        ))),
        EvictionCheck::Warn => {
            tracing::warn!(queue, "{problem}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_read_from_every_node_of_a_reply() {
        let info = |p: &str| {
            Value::BulkString(
                format!("# Memory\r\nused_memory:1\r\nmaxmemory_policy:{p}\r\n").into_bytes(),
            )
        };
        let mut found = Vec::new();
        policies(&info("noeviction"), &mut found);
        assert_eq!(found, ["noeviction"]);
        let cluster = Value::Map(vec![
            (Value::SimpleString("a:1".into()), info("noeviction")),
            (Value::SimpleString("b:2".into()), info("allkeys-lru")),
        ]);
        let mut found = Vec::new();
        policies(&cluster, &mut found);
        assert_eq!(found, ["noeviction", "allkeys-lru"]);
        assert!(found.iter().any(|p| evicts_any_key(p)));
        assert!(!evicts_any_key("volatile-lru"));
        assert!(!evicts_any_key("noeviction"));
    }
}
