//! The keys of one queue: every one under the queue's hash tag, so they share one cluster
//! slot and every script can declare them all.

use crate::error::CacheError;

/// The longest queue name.
const MAX_NAME: usize = 64;

/// The keys of one queue, in the order the scripts read them as `KEYS[1]`…`KEYS[11]`.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    all: [String; 11],
}

/// Each key's suffix, by its `KEYS` index (the scripts' prelude names them the same way).
const SUFFIXES: [&str; 11] = [
    // Runnable jobs, scored by priority band and push order.
    "wait",
    // Jobs due later (pushed with a delay, or waiting out a retry's backoff), scored by due ms.
    "delayed", // Jobs under a lease, scored by the lease's deadline in ms.
    "active",  // Jobs out of attempts, scored by when they died.
    "dead",
    // Completed jobs kept for a while (bounded), scored by when they completed.
    "done",
    // Each job's payload (field `{id}`) and state (`{id}:a` attempts, `{id}:t` lease token …).
    "jobs",  // The last job id handed out.
    "ids",   // The last lease token handed out (fencing).
    "fence", // Idempotency key → job id.
    "idem",  // Idempotency key → when it stops deduplicating (ms).
    "idem-exp",
    // Markers that wake blocked workers: "there may be something to take".
    "marker",
];

impl Keys {
    /// The keys of queue `name` under `prefix`: `{prefix}{{name}}:wait` and so on.
    pub(crate) fn new(prefix: &str, name: &str) -> Result<Self, CacheError> {
        validate_name(name)?;
        validate_prefix(prefix)?;
        Ok(Self {
            all: SUFFIXES.map(|suffix| format!("{prefix}{{{name}}}:{suffix}")),
        })
    }

    /// Every key, for a script's `KEYS`.
    pub(crate) fn all(&self) -> &[String] {
        &self.all
    }

    pub(crate) fn wait(&self) -> &str {
        &self.all[0]
    }

    pub(crate) fn delayed(&self) -> &str {
        &self.all[1]
    }

    pub(crate) fn active(&self) -> &str {
        &self.all[2]
    }

    pub(crate) fn dead(&self) -> &str {
        &self.all[3]
    }

    pub(crate) fn done(&self) -> &str {
        &self.all[4]
    }

    pub(crate) fn marker(&self) -> &str {
        &self.all[10]
    }
}

/// A queue name: 1 to 64 of `A-Z a-z 0-9 _ . : -` (no braces: it is the hash tag).
fn validate_name(name: &str) -> Result<(), CacheError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::Config(format!(
            "invalid queue name {name:?}: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ . : -"
        )))
    }
}

/// A key prefix: up to 64 of `A-Z a-z 0-9 _ . : / -`, possibly empty (no braces: the
/// queue's name must be the first hash tag of its keys).
fn validate_prefix(prefix: &str) -> Result<(), CacheError> {
    let ok = prefix.len() <= MAX_NAME
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CacheError::Config(format!(
            "invalid queue key prefix {prefix:?}: use up to {MAX_NAME} of A-Z a-z 0-9 _ . : / -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::cluster::key_slot;

    #[test]
    fn every_key_of_a_queue_hashes_to_one_slot() {
        let keys = Keys::new("queue:", "mail").expect("valid");
        let slot = key_slot(b"mail");
        for key in keys.all() {
            assert!(key.starts_with("queue:{mail}:"), "{key}");
            assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(keys.wait(), "queue:{mail}:wait");
        assert_eq!(keys.marker(), "queue:{mail}:marker");
    }

    #[test]
    fn names_and_prefixes_that_would_break_the_hash_tag_are_rejected() {
        for bad in ["", "a{b", "a}b", "with space", &"x".repeat(65)] {
            assert!(Keys::new("queue:", bad).is_err(), "{bad:?}");
        }
        for bad in ["{app}:", "app}"] {
            assert!(Keys::new(bad, "mail").is_err(), "{bad:?}");
        }
        assert!(Keys::new("", "mail-2.v1:x_y").is_ok());
    }
}
