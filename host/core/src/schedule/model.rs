//! A schedule as stored: what it enqueues, when, and where it stands.

use serde::{Deserialize, Serialize};

use super::spec::Spec;
use crate::JobOptions;
use crate::time::Millis;

/// What a schedule does about the ticks it missed while no beat ran —
/// ticks over 10 s old when a beat looks ([`super::beat::MISSED_AFTER_MS`]).
/// A tick less late than that is not missed: it fires whatever the policy,
/// so a beat that stalls for a few seconds loses no tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Fire nothing for them; carry on from the next tick.
    Skip,
    /// Fire once for all of them (the latest), unless a tick of the last 10 s
    /// fires anyway; then carry on.
    #[default]
    RunOnce,
    /// Fire each of them (at most [`MAX_CATCH_UP`]), then carry on.
    RunAll,
}

/// Most missed ticks a `run_all` schedule fires in one catch-up.
pub const MAX_CATCH_UP: usize = 100;

/// A schedule: enqueue `task` with `args` on `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unique name.
    pub name: String,
    /// The task it enqueues.
    pub task: String,
    /// Its arguments (JSON text).
    #[serde(default = "empty_object")]
    pub args: String,
    /// Queue (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Priority (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Retries (default: the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Headers every fired job carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The fired jobs' other options.
    #[serde(default)]
    pub options: JobOptions,
    /// A fired job expires if it has not started this long after its tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// When it fires.
    pub spec: Spec,
    /// Whether it fires.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What it does about ticks missed while no beat ran.
    #[serde(default)]
    pub missed: MissedRuns,
    /// Where an interval counts from: when it was created.
    pub anchor: Millis,
    /// The tick it last fired for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Millis>,
    /// The tick it fires for next (`None`: never again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Millis>,
    /// Bumped by every write; a write names the version it read
    /// (optimistic concurrency, `ScheduleStore::put_schedule`).
    #[serde(default)]
    pub version: u64,
}

fn empty_object() -> String {
    "{}".to_owned()
}

fn yes() -> bool {
    true
}

impl Schedule {
    /// A new, enabled schedule of `task` on `spec`, its first tick after
    /// `now` computed.
    pub fn new(
        name: impl Into<String>,
        task: impl Into<String>,
        spec: Spec,
        now: Millis,
    ) -> Result<Self, super::SpecError> {
        spec.check()?;
        let next_run = spec.next_after(now, now)?;
        Ok(Self {
            name: name.into(),
            task: task.into(),
            args: empty_object(),
            queue: None,
            priority: None,
            max_retries: None,
            headers: Vec::new(),
            options: JobOptions::default(),
            expires_ms: None,
            spec,
            enabled: true,
            missed: MissedRuns::default(),
            anchor: now,
            last_run: None,
            next_run,
            version: 0,
        })
    }
}
