//! The beat: fires due schedules by enqueuing their task. Any number of
//! beats may run against one store; each tick fires once.
//!
//! Why once: a tick's job id is derived from the schedule and the tick
//! (a UUIDv7 whose time is the tick's, its random bits a hash of both), so
//! two beats firing the same tick enqueue one job — the second finds the id
//! in use. After firing, a beat moves the schedule on with a
//! compare-and-set on the version it read; a beat that loses that race
//! finds the schedule moved on when it next looks. A beat that dies
//! between firing and moving on leaves the schedule due: the next beat
//! fires the same tick again (a no-op) and moves it on.

use sha2::{Digest, Sha256};

use super::model::{MAX_CATCH_UP, MissedRuns, Schedule};
use crate::client::{Client, ClientError, EnqueueRequest};
use crate::store::StoreError;
use crate::time::{Millis, format_ms};

/// A tick older than this is "missed" (the beat was not running) for the
/// `skip` policy.
pub const MISSED_AFTER_MS: Millis = 60_000;

/// Headers every fired job carries.
pub const SCHEDULE_HEADER: &str = "xylem-schedule";
/// The tick a fired job is for (RFC 3339).
pub const TICK_HEADER: &str = "xylem-tick";

/// What one look at the due schedules did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// (schedule, tick, job id) for each tick enqueued (or found enqueued).
    pub jobs: Vec<(String, Millis, String)>,
    /// Schedules that could not fire, and why.
    pub errors: Vec<(String, String)>,
}

/// The job id of `schedule`'s tick at `tick`: the same in every beat.
pub fn tick_job_id(schedule: &str, tick: Millis) -> String {
    let mut hash = Sha256::new();
    hash.update(schedule.as_bytes());
    hash.update([0]);
    hash.update(tick.to_be_bytes());
    let digest = hash.finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(tick).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// The ticks of `schedule` due at `now`, by its missed-run policy.
pub fn due_ticks(schedule: &Schedule, now: Millis) -> Vec<Millis> {
    let Some(first) = schedule.next_run.filter(|at| *at <= now) else {
        return Vec::new();
    };
    let mut ticks = vec![first];
    while ticks.len() < MAX_CATCH_UP {
        match schedule
            .spec
            .next_after(*ticks.last().unwrap_or(&first), schedule.anchor)
        {
            Ok(Some(next)) if next <= now => ticks.push(next),
            _ => break,
        }
    }
    match schedule.missed {
        MissedRuns::RunAll => ticks,
        MissedRuns::RunOnce => ticks.last().copied().into_iter().collect(),
        MissedRuns::Skip => ticks
            .last()
            .copied()
            .filter(|t| now - t <= MISSED_AFTER_MS)
            .into_iter()
            .collect(),
    }
}

/// Fires every schedule due at `now` (at most `limit`), then moves each on.
pub async fn fire_due(client: &Client, now: Millis, limit: usize) -> Result<Fired, StoreError> {
    let store = &client.stores().schedules;
    let mut fired = Fired::default();
    for schedule in store.due_schedules(now, limit).await? {
        let ticks = due_ticks(&schedule, now);
        let mut last = schedule.last_run;
        let mut failed = None;
        for tick in ticks {
            match fire(client, &schedule, tick).await {
                Ok(id) => {
                    fired.jobs.push((schedule.name.clone(), tick, id));
                    last = Some(tick);
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failed {
            // Left due: the next look tries again (fired ticks are no-ops).
            tracing::warn!(schedule = %schedule.name, %why, "cannot fire a schedule");
            fired.errors.push((schedule.name.clone(), why));
            continue;
        }
        let mut moved = schedule.clone();
        moved.last_run = last;
        moved.next_run = match schedule.spec.next_after(now, schedule.anchor) {
            Ok(next) => next,
            Err(e) => {
                fired.errors.push((schedule.name.clone(), e.to_string()));
                None
            }
        };
        // Lost: another beat (or an edit) wrote it first; it is looked at
        // again next time.
        let _ = store.put_schedule(&moved).await?;
    }
    Ok(fired)
}

/// Fires due schedules every `interval` until `stop` resolves: `xylem
/// beat`, and `xylem worker --beat`.
pub async fn run(
    client: Client,
    interval: std::time::Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tracing::info!(?interval, "beat started");
    let mut stop = std::pin::pin!(stop);
    loop {
        match fire_due(&client, crate::time::now_ms(), 100).await {
            Ok(fired) => {
                for (schedule, tick, id) in &fired.jobs {
                    tracing::info!(%schedule, tick = %format_ms(*tick), job = %id, "fired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read due schedules; trying again"),
        }
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(interval) => {}
        }
    }
    tracing::info!("beat stopped");
}

/// Enqueues `schedule`'s job for `tick` under the tick's id.
async fn fire(client: &Client, schedule: &Schedule, tick: Millis) -> Result<String, ClientError> {
    let mut req = EnqueueRequest::new(&schedule.task, &schedule.args);
    req.queue.clone_from(&schedule.queue);
    req.priority = schedule.priority;
    req.max_retries = schedule.max_retries;
    req.options = schedule.options.clone();
    req.headers.clone_from(&schedule.headers);
    req.headers
        .push((SCHEDULE_HEADER.to_owned(), schedule.name.clone()));
    req.headers.push((TICK_HEADER.to_owned(), format_ms(tick)));
    let mut envelope = client.prepare(req).await?;
    envelope.id = tick_job_id(&schedule.name, tick);
    client.enqueue_by_id(&envelope).await?;
    Ok(envelope.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Spec;

    fn every_minute(missed: MissedRuns, next_run: Millis) -> Schedule {
        let mut s = Schedule::new("s", "t", Spec::Every { every_ms: 60_000 }, 0).unwrap();
        s.missed = missed;
        s.next_run = Some(next_run);
        s
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        let now = 10 * 60_000 + 5;
        // Five ticks missed: 6, 7, 8, 9, 10 minutes.
        let all = due_ticks(&every_minute(MissedRuns::RunAll, 6 * 60_000), now);
        assert_eq!(all.len(), 5);
        assert_eq!(
            due_ticks(&every_minute(MissedRuns::RunOnce, 6 * 60_000), now),
            [10 * 60_000]
        );
        // Skip: the latest tick is 5 ms old, not missed: it fires.
        assert_eq!(
            due_ticks(&every_minute(MissedRuns::Skip, 6 * 60_000), now),
            [10 * 60_000]
        );
        // Skip, an hourly schedule whose last tick went by 30 minutes ago
        // (the beat was down): nothing.
        let mut hourly = Schedule::new(
            "h",
            "t",
            Spec::Every {
                every_ms: 3_600_000,
            },
            0,
        )
        .unwrap();
        hourly.missed = MissedRuns::Skip;
        hourly.next_run = Some(3_600_000);
        assert!(due_ticks(&hourly, 5 * 3_600_000 + 1_800_000).is_empty());
        hourly.missed = MissedRuns::RunOnce;
        assert_eq!(
            due_ticks(&hourly, 5 * 3_600_000 + 1_800_000),
            [5 * 3_600_000]
        );
        assert!(due_ticks(&every_minute(MissedRuns::RunAll, now + 1), now).is_empty());
    }

    #[test]
    fn a_tick_has_one_id_and_ids_sort_by_tick() {
        let a = tick_job_id("report", 1_000);
        assert_eq!(a, tick_job_id("report", 1_000));
        assert_ne!(a, tick_job_id("other", 1_000));
        assert!(a < tick_job_id("report", 2_000));
        assert_eq!(uuid::Uuid::parse_str(&a).unwrap().get_version_num(), 7);
    }
}
