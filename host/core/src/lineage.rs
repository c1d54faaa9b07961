//! Child jobs: what a child inherits from the job that enqueued it, and
//! the quotas that bound what one run and one tree of jobs may enqueue.
//!
//! A job enqueued by a client is a *root*. A job enqueued by a running task
//! (`host.enqueue`) carries a [`Lineage`]: its root's id, its depth below
//! the root, the [`ChildQuota`] of the tree and a ceiling on its limits —
//! the limits its parent ran under. A child can narrow them, never widen
//! them, so an enqueue bomb cannot escape its parent's time, fuel or
//! memory, and the whole tree shares one count of descendants (kept in the
//! [`QuotaStore`](crate::store::QuotaStore), so it holds across workers).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Envelope, JobOptions, Limits};

/// How many children a run, and a tree of jobs, may enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildQuota {
    /// Children one run may enqueue.
    pub per_run: u32,
    /// Bytes of arguments one run's children may carry in all.
    pub per_run_args_bytes: u64,
    /// Deepest a descendant may be below its root (a root's children are
    /// at depth 1).
    pub max_depth: u32,
    /// Descendants one root job may have in all, over every worker and
    /// every retry.
    pub per_tree: u64,
}

impl Default for ChildQuota {
    fn default() -> Self {
        Self {
            per_run: 1_000,
            per_run_args_bytes: 1024 * 1024,
            max_depth: 16,
            per_tree: DEFAULT_MAX_DESCENDANTS,
        }
    }
}

/// Descendants one root may have in all, unless an operator says
/// otherwise: a job tree's jobs, a workflow tree's runs.
pub const DEFAULT_MAX_DESCENDANTS: u64 = 10_000;

/// An operator's changes to a [`ChildQuota`]: per plugin or task (`xylem
/// plugin push --max-children ...`) and per root job (`xylem enqueue
/// --max-children ...`). Never set by plugin code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildQuotaOverrides {
    /// Children one run may enqueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_children: Option<u32>,
    /// Bytes of arguments one run's children may carry in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_child_args_bytes: Option<u64>,
    /// Deepest a descendant may be below its root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// Descendants one root job may have in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_descendants: Option<u64>,
}

impl ChildQuotaOverrides {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl ChildQuota {
    /// This quota with `overrides` applied (each set field replaces ours,
    /// wider or narrower).
    pub fn with_overrides(mut self, overrides: &ChildQuotaOverrides) -> Self {
        if let Some(n) = overrides.max_children {
            self.per_run = n;
        }
        if let Some(n) = overrides.max_child_args_bytes {
            self.per_run_args_bytes = n;
        }
        if let Some(n) = overrides.max_depth {
            self.max_depth = n;
        }
        if let Some(n) = overrides.max_descendants {
            self.per_tree = n;
        }
        self
    }

    /// The quota of a root job's runs: the worker's, then its task's (set
    /// at push), then the job's own.
    pub fn for_root(self, task: &ChildQuotaOverrides, job: &JobOptions) -> Self {
        self.with_overrides(task).with_overrides(&job.child_quota)
    }
}

/// How long a tree's count of descendants is kept after its last child
/// was enqueued. A tree that enqueues nothing for this long starts again.
pub const TREE_QUOTA_TTL: Duration = Duration::from_secs(24 * 3600);

/// The key of a tree's descendant count in the quota store.
pub fn tree_quota_key(root: &str) -> String {
    format!("tree:{root}")
}

/// What a child job inherits from the run that enqueued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The id of the tree's root job.
    pub root: String,
    /// Depth below the root: 1 for the root's children.
    pub depth: u32,
    /// The tree's quota.
    pub quota: ChildQuota,
    /// The limits the parent ran under: the child's own are capped by them.
    pub ceiling: Limits,
    /// The parent's priority: a child cannot outrank it, so work a job
    /// spawns never jumps ahead of the work that was waiting beside it.
    #[serde(default = "highest_priority")]
    pub max_priority: u8,
}

fn highest_priority() -> u8 {
    9
}

impl Lineage {
    /// The lineage of a child of a run of `parent` under `limits` and
    /// `quota`.
    pub fn child_of(parent: &Envelope, quota: ChildQuota, limits: Limits) -> Self {
        let lineage = parent.lineage.as_ref();
        Self {
            root: lineage.map_or_else(|| parent.id.clone(), |p| p.root.clone()),
            depth: lineage.map_or(1, |p| p.depth.saturating_add(1)),
            quota,
            ceiling: limits,
            max_priority: parent.priority,
        }
    }

    /// Makes `child` a child of this lineage: it carries the lineage, and
    /// its priority is at most its parent's.
    pub fn adopt(&self, child: &mut Envelope) {
        child.priority = child.priority.min(self.max_priority);
        child.lineage = Some(self.clone());
    }
}

/// Why a running task's `enqueue` was refused. Nothing was enqueued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildEnqueueError {
    /// The run or its tree used up a quota (count, bytes or depth).
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// No pushed plugin provides the task.
    #[error("{0}")]
    UnknownTask(String),
    /// Bad arguments or options.
    #[error("{0}")]
    InvalidArguments(String),
    /// The store could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// What one run has enqueued so far, checked against its quota.
#[derive(Debug, Default)]
pub struct RunChildren {
    count: u32,
    args_bytes: u64,
}

impl RunChildren {
    /// Charges one child with `args_bytes` of arguments to a run whose
    /// children would sit at `depth`, or says which quota it would pass.
    pub fn charge(
        &mut self,
        quota: &ChildQuota,
        depth: u32,
        args_bytes: u64,
    ) -> Result<(), ChildEnqueueError> {
        self.charge_many(quota, depth, 1, args_bytes)
    }

    /// [`charge`](Self::charge) for `children` at once (a canvas's tasks),
    /// all or none.
    pub fn charge_many(
        &mut self,
        quota: &ChildQuota,
        depth: u32,
        children: u32,
        args_bytes: u64,
    ) -> Result<(), ChildEnqueueError> {
        if depth > quota.max_depth {
            return Err(ChildEnqueueError::QuotaExceeded(format!(
                "a child here would be {depth} levels below its root job, over the limit of {}",
                quota.max_depth
            )));
        }
        if self.count.saturating_add(children) > quota.per_run {
            return Err(ChildEnqueueError::QuotaExceeded(format!(
                "this run has enqueued {} child jobs; {children} more would pass its limit of {}",
                self.count, quota.per_run
            )));
        }
        let bytes = self.args_bytes.saturating_add(args_bytes);
        if bytes > quota.per_run_args_bytes {
            return Err(ChildEnqueueError::QuotaExceeded(format!(
                "this run's child jobs would carry {bytes} bytes of arguments, over its limit of {}",
                quota.per_run_args_bytes
            )));
        }
        self.count += children;
        self.args_bytes = bytes;
        Ok(())
    }
}

impl Limits {
    /// These limits, each capped by `ceiling`'s.
    pub fn capped_by(self, ceiling: &Limits) -> Self {
        Self {
            hard_time_limit: self.hard_time_limit.min(ceiling.hard_time_limit),
            soft_time_limit: match (self.soft_time_limit, ceiling.soft_time_limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            fuel: self.fuel.min(ceiling.fuel),
            max_memory: self.max_memory.min(ceiling.max_memory),
            max_output: self.max_output.min(ceiling.max_output),
            max_log: self.max_log.min(ceiling.max_log),
            max_log_entries: self.max_log_entries.min(ceiling.max_log_entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_held_to_its_count_bytes_and_depth() {
        let quota = ChildQuota {
            per_run: 2,
            per_run_args_bytes: 10,
            max_depth: 3,
            per_tree: 100,
        };
        let mut run = RunChildren::default();
        assert!(matches!(
            run.charge(&quota, 4, 1),
            Err(ChildEnqueueError::QuotaExceeded(m)) if m.contains("4 levels")
        ));
        run.charge(&quota, 3, 6).unwrap();
        assert!(matches!(
            run.charge(&quota, 3, 5),
            Err(ChildEnqueueError::QuotaExceeded(m)) if m.contains("11 bytes")
        ));
        run.charge(&quota, 3, 4).unwrap();
        assert!(matches!(
            run.charge(&quota, 3, 0),
            Err(ChildEnqueueError::QuotaExceeded(m)) if m.contains("has enqueued 2 child jobs")
        ));
    }

    #[test]
    fn a_child_inherits_its_root_depth_and_ceiling() {
        let quota = ChildQuota::default();
        let limits = Limits {
            fuel: 1_000,
            ..Limits::default()
        };
        let mut root = Envelope::new("t", "{}");
        root.priority = 3;
        let first = Lineage::child_of(&root, quota, limits);
        assert_eq!((first.root.as_str(), first.depth), (root.id.as_str(), 1));
        let mut child = Envelope::new("t", "{}");
        child.priority = 9;
        first.adopt(&mut child);
        assert_eq!(child.priority, 3, "a child cannot outrank its parent");
        let second = Lineage::child_of(&child, quota, limits);
        assert_eq!((second.root.as_str(), second.depth), (root.id.as_str(), 2));
        let own = Limits {
            fuel: 5_000,
            hard_time_limit: Duration::from_secs(1),
            ..Limits::default()
        };
        let capped = own.capped_by(&second.ceiling);
        assert_eq!(capped.fuel, 1_000, "a child cannot widen its parent's fuel");
        assert_eq!(
            capped.hard_time_limit,
            Duration::from_secs(1),
            "but can narrow"
        );
    }
}
