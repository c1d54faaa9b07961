//! The beat on every store: due ticks fired once however many beats fire
//! them, missed ticks by policy, schedules moved on by compare-and-set.

use std::sync::Arc;

use xylem_core::schedule::beat::{fire_due, tick_job_id};
use xylem_core::schedule::{MissedRuns, Schedule, Spec};
use xylem_core::{Client, TaskSpec};

worker_case!(two_beats_fire_each_tick_once, |stores| {
    stores
        .plugins
        .put_plugin("beat-test", b"x", &[TaskSpec::new("echo")])
        .await
        .unwrap();
    let client = Client::new(stores.clone());
    let mut schedule =
        Schedule::new("every-minute", "echo", Spec::Every { every_ms: 60_000 }, 0).unwrap();
    schedule.args = r#"{"from":"beat"}"#.to_owned();
    schedule.missed = MissedRuns::RunAll;
    schedule.max_retries = Some(7);
    stores
        .schedules
        .put_schedule(&schedule)
        .await
        .unwrap()
        .unwrap();
    // Two beats look at the same instant, ten times over.
    let client = Arc::new(client);
    for _ in 0..10 {
        let (a, b) = (client.clone(), client.clone());
        let (x, y) = tokio::join!(fire_due(&a, 60_005, 10), fire_due(&b, 60_005, 10));
        x.unwrap();
        y.unwrap();
    }
    let first = tick_job_id("every-minute", 60_000);
    let record = stores
        .results
        .get(&first)
        .await
        .unwrap()
        .expect("the tick's job");
    assert_eq!(record.args, r#"{"from":"beat"}"#);
    assert_eq!(
        record.max_retries, 7,
        "the schedule's options go with its jobs"
    );
    let stats: u64 = stores
        .statistics
        .queue_stats()
        .await
        .unwrap()
        .iter()
        .map(|q| q.ready + q.delayed)
        .sum();
    assert_eq!(stats, 1, "one job for the tick");
    let moved = stores
        .schedules
        .get_schedule("every-minute")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.last_run, moved.next_run),
        (Some(60_000), Some(120_000))
    );
    // Four minutes without a beat, run-all: each missed tick once.
    let fired = fire_due(&client, 300_005, 10).await.unwrap();
    let ticks: Vec<i64> = fired.jobs.iter().map(|(_, t, _)| *t).collect();
    assert_eq!(ticks, [120_000, 180_000, 240_000, 300_000]);
    let job = stores.results.get(&fired.jobs[0].2).await.unwrap().unwrap();
    assert_eq!(job.state, xylem_core::TaskState::Queued);
});
