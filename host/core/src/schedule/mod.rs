//! Beat: schedules that enqueue a task on a cron expression, an interval or
//! once at a time (issue 13). This first layer: the spec — parsing and the
//! next fire times, daylight saving changes included (`spec.rs`) — and the
//! schedule as stored, with optimistic concurrency
//! ([`crate::store::ScheduleStore`]).

pub mod beat;
mod model;
pub mod spec;

pub use model::{MAX_CATCH_UP, MissedRuns, Schedule};
pub use spec::{Spec, SpecError};
