//! Unique jobs: a job enqueued with `unique` is not enqueued again while
//! an equal one was enqueued within the TTL — the duplicate enqueue returns
//! the first job's id and says so (Sidekiq's and Celery-once's "unique
//! until TTL").
//!
//! Equal means the same key: the caller's, or by default a hash of the
//! task, the queue and the arguments in canonical form (object keys
//! sorted, no whitespace), so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are
//! one job. The key is a lock in the store ([`crate::store::LockStore`])
//! owned by the first job's id for the TTL: taking it and reading its owner
//! are atomic on every store, so two clients racing get one job.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// What makes a job unique, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unique {
    /// The key; `None`: a hash of task, queue and canonical arguments.
    pub key: Option<String>,
    /// How long after the first enqueue a duplicate is refused.
    pub ttl: Duration,
}

/// The store lock a unique job holds: `unique:` and the caller's key, or
/// the hash of `task`, `queue` and the canonical form of `args` (JSON).
pub fn lock_name(key: Option<&str>, task: &str, queue: &str, args: &str) -> String {
    match key {
        Some(key) => format!("unique:key:{key}"),
        None => {
            let canonical = serde_json::from_str::<serde_json::Value>(args)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| args.to_owned());
            let mut hash = Sha256::new();
            for part in [task, queue, &canonical] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
            format!("unique:{}", hex::encode(hash.finalize()))
        }
    }
}

/// What a unique enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueOutcome {
    /// No equal job within the TTL: this one was enqueued.
    Enqueued(Box<crate::Envelope>),
    /// An equal job was enqueued within the TTL: nothing was; its id.
    Duplicate(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_jobs_share_a_key_whatever_the_argument_spelling() {
        let a = lock_name(None, "t", "q", r#"{"a":1,"b":[1,2]}"#);
        assert_eq!(a, lock_name(None, "t", "q", r#"{ "b": [1, 2], "a": 1 }"#));
        assert_ne!(a, lock_name(None, "t", "other", r#"{"a":1,"b":[1,2]}"#));
        assert_ne!(a, lock_name(None, "u", "q", r#"{"a":1,"b":[1,2]}"#));
        assert_ne!(a, lock_name(None, "t", "q", r#"{"a":2,"b":[1,2]}"#));
        assert_eq!(lock_name(Some("k1"), "t", "q", "{}"), "unique:key:k1");
    }
}
