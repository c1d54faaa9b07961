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

/// A tick at most this old is *late*, not missed: it fires, whatever the
/// missed-run policy (a beat that paused for a few seconds loses no tick).
/// Older ticks were missed (no beat ran) and follow the policy.
pub const MISSED_AFTER_MS: Millis = 10_000;

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

/// The ticks of `schedule` due at `now`, oldest first: every *late* tick
/// (in the last [`MISSED_AFTER_MS`], 10 s), and the *missed* ones before them by
/// the policy — `run_all` each (the first [`MAX_CATCH_UP`]), `run_once`
/// the latest of them unless a late tick fires anyway, `skip` none.
pub fn due_ticks(schedule: &Schedule, now: Millis) -> Vec<Millis> {
    let Some(first) = schedule.next_run.filter(|at| *at <= now) else {
        return Vec::new();
    };
    let spec = &schedule.spec;
    let late_from = now - MISSED_AFTER_MS;
    // Ticks in (from, until], oldest first, at most `cap`.
    let walk = |from: Millis, until: Millis, cap: usize| {
        let mut ticks = Vec::new();
        let mut at = from;
        while ticks.len() < cap {
            match spec.next_after(at, schedule.anchor) {
                Ok(Some(next)) if next <= until => {
                    ticks.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        ticks
    };
    let late = if first > late_from {
        let mut late = vec![first];
        late.extend(walk(first, now, MAX_CATCH_UP - 1));
        late
    } else {
        walk(late_from, now, MAX_CATCH_UP)
    };
    let mut missed = Vec::new();
    if first <= late_from {
        match schedule.missed {
            MissedRuns::Skip => {}
            MissedRuns::RunOnce if late.is_empty() => missed.extend(
                spec.last_at_or_before(late_from, schedule.anchor)
                    .ok()
                    .flatten()
                    .filter(|t| *t >= first),
            ),
            MissedRuns::RunOnce => {}
            MissedRuns::RunAll => {
                missed.push(first);
                missed.extend(walk(first, late_from, MAX_CATCH_UP - 1));
            }
        }
    }
    missed.extend(late);
    missed
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
    req.expires_at = schedule
        .expires_ms
        .map(|ms| tick.saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX)));
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
    fn late_ticks_fire_each_and_long_outages_are_bounded() {
        let every_second = |missed, next_run| {
            let mut s = Schedule::new("s", "t", Spec::Every { every_ms: 1_000 }, 0).unwrap();
            s.missed = missed;
            s.next_run = Some(next_run);
            s
        };
        // Every beat stalled for 3 s: the three ticks are late, not
        // missed — each fires, under every policy.
        for policy in [MissedRuns::Skip, MissedRuns::RunOnce, MissedRuns::RunAll] {
            assert_eq!(
                due_ticks(&every_second(policy, 100_000), 102_500),
                [100_000, 101_000, 102_000],
                "{policy:?}"
            );
        }
        // An hour with no beat: the last 10 s fire; the hour before them is
        // skipped, stood for by those (run_once), or caught up from its
        // start, its first 100 ticks (run_all).
        let now = 3_600_000 + 500;
        let last_ten: Vec<Millis> = (3_591..=3_600).map(|s| s * 1_000).collect();
        assert_eq!(
            due_ticks(&every_second(MissedRuns::Skip, 1_000), now),
            last_ten
        );
        assert_eq!(
            due_ticks(&every_second(MissedRuns::RunOnce, 1_000), now),
            last_ten
        );
        let all = due_ticks(&every_second(MissedRuns::RunAll, 1_000), now);
        assert_eq!(all.len(), 100 + 10);
        assert_eq!(all[..3], [1_000, 2_000, 3_000]);
        assert_eq!(all[100..], last_ten[..]);
        // A daily cron schedule whose tick went by 5 hours ago, no beat
        // since: run_once fires that tick, found without walking.
        let mut daily = Schedule::new("d", "t", Spec::cron("0 4 * * *", None).unwrap(), 0).unwrap();
        let tick = 20 * 86_400_000 + 4 * 3_600_000;
        daily.next_run = Some(tick - 3 * 86_400_000);
        assert_eq!(due_ticks(&daily, tick + 5 * 3_600_000), [tick]);
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
