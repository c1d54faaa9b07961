//! Beat: schedules that enqueue a task on a cron expression, an interval or
//! once at a time. `spec.rs` — parsing and the next fire times, daylight
//! saving changes included; `model.rs` — the schedule as stored, with
//! optimistic concurrency ([`crate::store::ScheduleStore`]); `beat.rs` —
//! firing due ticks, each once whatever number of beats run; `apply.rs` —
//! making the store hold a given set of schedules (`xylem schedule apply`).

pub mod apply;
pub mod beat;
mod model;
pub mod spec;

pub use model::{MAX_CATCH_UP, MissedRuns, Schedule};
pub use spec::{Spec, SpecError};

#[cfg(test)]
mod next_fire_table;
