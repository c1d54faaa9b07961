//! The key layout under the store's prefix `P`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:job:{id}` | hash | `env` (envelope JSON), `queue`, `prio`, `run_at`, `status`, `lease`, `deliveries`, `reason`, `dead_at` |
//! | `P:queues` | set | every queue name seen |
//! | `P:q:{queue}:ready` | zset | runnable ids, score `(9 - priority)·10¹³ + run_at` |
//! | `P:q:{queue}:delayed` | zset | ids not yet due, score `run_at` |
//! | `P:q:{queue}:leased` | zset | leased ids, score `lease_until` |
//! | `P:q:{queue}:dead` | zset | dead ids, score `dead_at` |
//! | `P:wake` | channel | a message on every publish / requeue |
//! | `P:task:{id}` | hash | the job record's fields |
//! | `P:hist:{id}` | list | history entries (JSON) |
//! | `P:tasks` | zset | record ids, score `enqueued_at` |
//! | `P:plugin:{digest}` | hash | `bytes`, `size`, `tasks`, `pushed_at` |
//! | `P:plugins` | zset | digests, score = push sequence |
//! | `P:routes` | hash | task → `{digest, spec}` JSON |
//! | `P:seq`, `P:routes_version` | counters | |
//!
//! Scripts receive the prefix and build keys the same way (see `scripts.rs`).

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: String) -> Self {
        Self { prefix }
    }

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
