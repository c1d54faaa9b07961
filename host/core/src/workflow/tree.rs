//! Trees of runs, and the quota that bounds what one tree may start.
//!
//! A run started from outside (`xylem workflow start`, the dashboard) is a
//! *root*. A run started by a run — a `child-workflow`, a `schedule-at`,
//! or the successor of a `continue-as-new` — belongs to its starter's
//! tree. Every run a tree's code starts with `child-workflow` or
//! `schedule-at` takes one from the tree's count, kept in the
//! [`QuotaStore`](crate::store::QuotaStore) beside the job trees' (so it
//! holds across engines and processes); past the tree's limit the call fails
//! with kind `quota-exceeded` and the workflow decides. Without it a run that
//! schedules copies of itself — each scheduling more — would fork-bomb
//! the store. `continue-as-new` stays in the tree without taking from it:
//! it replaces a run, it adds none.
//!
//! Once a run's tree has refused it, every later call of it that would
//! start a run is refused at once, in the same step (`replay.rs`): a run
//! looping on `schedule-at` past its quota spends its call budget, not a
//! store write per call.
//!
//! The count starts again once the tree has started nothing for
//! [`TREE_QUOTA_TTL`], like a job tree's.

use serde::{Deserialize, Serialize};

use crate::lineage::TREE_QUOTA_TTL;
use crate::store::{QuotaStore, StoreResult};

use super::model::{Call, Run, StepOutcome};
use crate::time::Millis;

/// The kind of error a step that would start a run fails with once its
/// tree has started all the runs it may.
pub const QUOTA_KIND: &str = "quota-exceeded";

/// Whether `call` starts a run (and takes from its tree's count).
pub fn starts_run(call: &Call) -> bool {
    match call {
        Call::Child { .. } | Call::ScheduleAt { .. } => true,
        Call::Submit { step, .. } => starts_run(step),
        _ => false,
    }
}

/// The tree a run belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTree {
    /// The id of the tree's root run.
    pub root: String,
    /// The runs the tree may start in all, set when its root was started
    /// (`--max-descendants`); `None`: the stepping engine's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u64>,
}

impl Run {
    /// The id of the root of the run's tree (its own, for a root).
    pub fn root(&self) -> &str {
        self.tree.as_ref().map_or(&self.id, |t| &t.root)
    }

    /// The tree a run this one starts belongs to.
    pub fn tree_of_descendants(&self) -> RunTree {
        RunTree {
            root: self.root().to_owned(),
            max_runs: self.tree.as_ref().and_then(|t| t.max_runs),
        }
    }

    /// The runs its tree may start: its root's limit, else `default` (the
    /// engine's, [`DEFAULT_MAX_DESCENDANTS`](crate::lineage::DEFAULT_MAX_DESCENDANTS)
    /// unless its worker says otherwise).
    pub fn tree_limit(&self, default: u64) -> u64 {
        self.tree
            .as_ref()
            .and_then(|t| t.max_runs)
            .unwrap_or(default)
    }
}

/// The key of a run tree's count in the quota store (apart from job
/// trees', whose roots are jobs).
pub fn tree_key(root: &str) -> String {
    format!("runtree:{root}")
}

/// Takes one run from the count of `run`'s tree, whose limit is `limit`:
/// `None` if taken, else the failure the step that asked gets.
pub async fn take_run(
    quotas: &dyn QuotaStore,
    run: &Run,
    limit: u64,
    now: Millis,
) -> StoreResult<Option<StepOutcome>> {
    let root = run.root();
    if quotas
        .take_quota(&tree_key(root), 1, limit, TREE_QUOTA_TTL)
        .await?
    {
        return Ok(None);
    }
    Ok(Some(refusal(
        format!(
            "the tree of runs under root run {root} has started {limit} runs, its limit \
             (`xylem workflow start --max-descendants`, or the worker's); its count starts \
             again {} h after it last started one",
            TREE_QUOTA_TTL.as_secs() / 3600
        ),
        now,
    )))
}

/// The failure of a call refused again: its run's tree refused one of its
/// calls already (in this step or an earlier one).
pub fn refused_again(now: Millis) -> StepOutcome {
    refusal(
        "the run's tree has started all the runs it may (an earlier call was refused)".to_owned(),
        now,
    )
}

fn refusal(message: String, now: Millis) -> StepOutcome {
    StepOutcome::Err {
        kind: QUOTA_KIND.to_owned(),
        message,
        at: now,
    }
}

/// Whether `outcome` is a refusal by the tree's quota.
pub fn is_refusal(outcome: &StepOutcome) -> bool {
    matches!(outcome, StepOutcome::Err { kind, .. } if kind == QUOTA_KIND)
}
