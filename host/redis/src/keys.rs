//! The key layout under the store's namespace `P`, which is the prefix in
//! braces: `{xylem}`. The closing brace ends it (a prefix may not contain
//! one), so no key of one prefix is ever a key of another — `xylem` and
//! `xylem:staging` cannot alias — and, as a Redis Cluster hash tag, it puts
//! every key of a deployment in one slot, where its scripts can reach them.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:job:{id}` | hash | a queued job: `env` (envelope JSON), `queue`, `prio`, `run_at`, `attempt` (the envelope's), `status` (`ready`, `delayed`, `leased` or `dead`: the set it is in), `lease` and `deliveries` (absent: 0), `reason`, `dead_at` |
//! | `P:queues` | set | every queue name seen |
//! | `P:q:{queue}:ready` | zset | runnable ids, score `(9 - priority)·10¹³ + run_at` (ties: by id) |
//! | `P:q:{queue}:delayed` | zset | ids not yet due, score `run_at` |
//! | `P:q:{queue}:leased` | zset | leased ids, score `lease_until` (server clock) |
//! | `P:q:{queue}:dead` | zset | dead ids, score `dead_at` |
//! | `P:active` | set | queues whose ready set may be non-empty (every queue with a ready job is in it; a claim that finds one empty removes it), so a claim on all queues looks only at these |
//! | `P:due` | zset | queue → a time at or before the earliest score of its delayed and leased sets (absent: both empty), so a claim looks for due jobs and expired leases only in queues whose time has come |
//! | `P:wake` | channel | a message when jobs are queued or requeued |
//! | `P:task:{id}` | hash | the job record: `task`, `queue`, `state`, `args`, `attempt`, `max_retries`, `enqueued_at`, `updated_at`, and when set `result`, `error`, `usage`, `log`, `progress` (JSON), `plugin` |
//! | `P:hist:{id}` | list | history entries (JSON), oldest first |
//! | `P:tasks` | zset | record ids, score `enqueued_at` (expired ids are dropped when listed) |
//! | `P:plugin:{digest}` | hash | `bytes`, `size`, `tasks`, `pushed_at`, and `compiled:{engine}` per engine that compiled it (signed machine code, `put_compiled`) |
//! | `P:plugins` | zset | digests, score = push sequence |
//! | `P:routes` | hash | task → `{digest, spec}` JSON |
//! | `P:seq`, `P:routes_version` | counters | |
//! | `P:group:{id}`, `P:group:{id}:results` | hashes | a group's `size` and `claimed`; member index → result JSON |
//! | `P:lock:{name}` | string | the lock's owner, with a millisecond expiry |
//! | `P:quota:{key}` | string | a quota counter (descendants of a root job), with a millisecond expiry |
//! | `P:canvas:{id}` | string | a canvas definition (JSON), written once |
//! | `P:schedules`, `P:schedules:version`, `P:schedules:due` | hash, hash, sorted set | schedule documents and versions by name; enabled schedules by next run (ms) |
//! | `P:runs`, `P:runs:version`, `P:runs:due`, `P:runs:newest` | hash, hash, sorted set, sorted set | workflow run documents and versions by id; runs by wake time (ms); runs by start (ms), for listings |
//! | `P:worker:{id}`, `P:workers` | string, set | a worker's latest beat (JSON), expiring when the record is to be dropped; the ids written (lapsed ones removed when listed) |
//! | `P:rate:{key}` | string | a rate limiter's next free start slot (ms), expiring a while after it |
//! | `P:paused` | set | paused queues (`xylem queues pause`) |
//! | `P:cancel:{id}` | string | a cancel request for a running job (`xylem task cancel`), lapsing after a day |
//!
//! A result TTL expires `P:task:{id}` and `P:hist:{id}` together.
//! Scripts receive the prefix and build keys the same way (see `scripts.rs`).

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// The prefix as given (`xylem`).
    name: String,
    /// `{name}`: what every key starts with.
    prefix: String,
}

impl Keys {
    /// The keys under prefix `name`, which must not contain `{` or `}`.
    pub(crate) fn new(name: String) -> Self {
        debug_assert!(!name.contains(['{', '}']));
        Self {
            prefix: format!("{{{name}}}"),
            name,
        }
    }

    /// The prefix as the user gave it.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// What every key starts with (`{name}`), before its `:`.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    pub(crate) fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    pub(crate) fn queue(&self, queue: &str, part: &str) -> String {
        format!("{}:q:{queue}:{part}", self.prefix)
    }

    pub(crate) fn worker(&self, id: &str) -> String {
        format!("{}:worker:{id}", self.prefix)
    }

    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    pub(crate) fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    pub(crate) fn task(&self, id: &str) -> String {
        format!("{}:task:{id}", self.prefix)
    }

    pub(crate) fn history(&self, id: &str) -> String {
        format!("{}:hist:{id}", self.prefix)
    }

    pub(crate) fn tasks(&self) -> String {
        format!("{}:tasks", self.prefix)
    }

    pub(crate) fn plugin(&self, digest: &str) -> String {
        format!("{}:plugin:{digest}", self.prefix)
    }

    pub(crate) fn plugins(&self) -> String {
        format!("{}:plugins", self.prefix)
    }

    pub(crate) fn routes(&self) -> String {
        format!("{}:routes", self.prefix)
    }

    pub(crate) fn routes_version(&self) -> String {
        format!("{}:routes_version", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn no_key_of_one_prefix_is_a_key_of_another() {
        let plain = Keys::new("xylem".to_owned());
        let staging = Keys::new("xylem:staging".to_owned());
        // Once `xylem:staging:...` was also a key `xylem` could make (a
        // queue or lock named `staging:...`); the brace ends the prefix.
        assert_eq!(plain.job("1"), "{xylem}:job:1");
        assert_eq!(staging.job("1"), "{xylem:staging}:job:1");
        assert!(
            !staging
                .job("1")
                .starts_with(&format!("{}:", plain.prefix()))
        );
        assert!(
            !plain
                .queue("staging", "ready")
                .starts_with(staging.prefix())
        );
    }
}
