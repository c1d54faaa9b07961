//! The hot-path methods (enqueue, claim, complete, extend_many, replay)
//! on the Redis server at `XYLEM_TEST_REDIS_URL` (default: the local one),
//! each test under its own key prefix. Skipped when no server answers.

use std::time::Duration;
use xylem_core::store::{DeadLetters as _, Statistics as _};

use xylem_core::store::{
    Broker, Completed, Completion, DeadFilter, Nack, REPLAY_DETAIL, ResultBackend, Settle,
};
use xylem_core::time::now_ms;
use xylem_core::{Envelope, Failure, FailureKind, Outcome, TaskState, Transition, Usage};
use xylem_redis::RedisStore;

async fn fresh() -> Option<RedisStore> {
    let url = std::env::var("XYLEM_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("xylem-hot-{}", uuid_like());
    let store = RedisStore::connect(&format!("{url}?prefix={prefix}"))
        .await
        .ok()?;
    store.health().await.ok()?;
    Some(store)
}

fn uuid_like() -> String {
    Envelope::new("t", "{}").id
}

const LEASE: Duration = Duration::from_secs(30);

fn success(c_id: &str, lease: u64, attempt: u32, settle: Settle) -> Completion {
    let mut t = Transition::to(TaskState::Succeeded, attempt);
    t.outcome = Some(Outcome::success(
        serde_json::json!({"n": 12345678901234567u64}),
        Usage::default(),
    ));
    Completion {
        id: c_id.to_owned(),
        lease,
        transition: t,
        settle,
        result_ttl: None,
    }
}

fn failure(c_id: &str, lease: u64, attempt: u32, state: TaskState, settle: Settle) -> Completion {
    let mut t = Transition::to(state, attempt).detail("boom \"quoted\" é/");
    t.outcome = Some(Outcome::failure(
        Failure::new(FailureKind::Trap, "trap"),
        Usage::default(),
    ));
    Completion {
        id: c_id.to_owned(),
        lease,
        transition: t,
        settle,
        result_ttl: None,
    }
}

#[tokio::test]
async fn enqueue_claim_complete_writes_the_record() {
    let Some(s) = fresh().await else { return };
    let jobs: Vec<Envelope> = (0..3)
        .map(|_| Envelope::new("t", r#"{"big":12345678901234567890}"#))
        .collect();
    s.enqueue(&jobs).await.unwrap();
    let r = s.get(&jobs[0].id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Queued);
    assert_eq!(r.args, jobs[0].args);
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].detail, None);

    let got = s.claim(&[], 2, LEASE, "w1").await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].envelope, jobs[0]);
    assert_eq!(got[1].envelope.id, jobs[1].id);
    let r = s.get(&jobs[0].id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Running);
    assert_eq!(r.history.len(), 2);
    assert_eq!(r.history[1].detail.as_deref(), Some("worker w1"));
    assert_eq!(r.history[1].attempt, 1);

    let results = s
        .complete(&[
            success(&jobs[0].id, got[0].lease, 1, Settle::Ack),
            failure(
                &jobs[1].id,
                got[1].lease,
                1,
                TaskState::Dead,
                Settle::Nack(Nack::DeadLetter {
                    reason: "bad".into(),
                }),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Completed::Applied, Completed::Applied]);
    let r = s.get(&jobs[0].id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Succeeded);
    assert_eq!(
        r.result,
        Some(serde_json::json!({"n": 12345678901234567u64}))
    );
    assert_eq!(r.history.len(), 3);
    let r = s.get(&jobs[1].id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Dead);
    assert_eq!(r.history[2].detail.as_deref(), Some("boom \"quoted\" é/"));
    assert!(r.error.is_some());
    let stats = s.queue_stats().await.unwrap();
    assert_eq!((stats[0].ready, stats[0].running, stats[0].dead), (1, 0, 1));
    // The named-queue path too.
    let twice = ["default".to_owned(), "default".to_owned()];
    let got = s.claim(&twice, 5, LEASE, "w1").await.unwrap();
    assert_eq!(got.len(), 1);
    s.clear().await.unwrap();
}

#[tokio::test]
async fn claim_drops_succeeded_and_recreates_vanished_records() {
    let Some(s) = fresh().await else { return };
    let jobs: Vec<Envelope> = (0..3)
        .map(|_| Envelope::new("t", "{\"x\":\"ü\"}"))
        .collect();
    s.enqueue(&jobs).await.unwrap();
    s.transition(&jobs[0].id, Transition::to(TaskState::Succeeded, 1))
        .await
        .unwrap();
    s.expire(&jobs[1].id, Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = s.claim(&[], 1, LEASE, "w").await.unwrap();
    // The first is dropped, its place filled by the next.
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.id, jobs[1].id);
    let r = s.get(&jobs[1].id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Running);
    assert_eq!(r.args, jobs[1].args);
    assert_eq!(r.task, "t");
    assert_eq!(r.enqueued_at, jobs[1].enqueued_at);
    assert_eq!(r.max_retries, jobs[1].max_retries);
    assert_eq!(r.history.len(), 1);
    let stats = s.queue_stats().await.unwrap();
    assert_eq!((stats[0].ready, stats[0].running), (1, 1));
    s.clear().await.unwrap();
}

#[tokio::test]
async fn retry_lost_leases_and_extend() {
    let Some(s) = fresh().await else { return };
    let job = Envelope::new("t", "{}");
    s.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let d = s.claim(&[], 1, LEASE, "w").await.unwrap().remove(0);
    let mut next = job.clone();
    next.attempt = 2;
    let r = s
        .complete(&[failure(
            &job.id,
            d.lease,
            1,
            TaskState::Retrying,
            Settle::Nack(Nack::Retry {
                envelope: Box::new(next.clone()),
                delay: Duration::ZERO,
            }),
        )])
        .await
        .unwrap();
    assert_eq!(r, vec![Completed::Applied]);
    let d = s
        .claim(&[], 1, Duration::from_millis(50), "w")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(d.envelope.attempt, 2);
    assert_eq!(d.deliveries, 2);
    assert_eq!(
        s.extend_many(
            &[(job.id.clone(), d.lease), (job.id.clone(), 99)],
            Duration::from_millis(50)
        )
        .await
        .unwrap(),
        vec![true, false]
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let d2 = s.claim(&[], 1, LEASE, "w2").await.unwrap().remove(0);
    assert_eq!(d2.deliveries, 3);
    let rec = s.get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        rec.history.last().unwrap().detail.as_deref(),
        Some("worker w2 (redelivered after a lost lease)")
    );
    assert_eq!(rec.attempt, 2);
    // The old lease: a failure is not written, a success is.
    let old = s
        .complete(&[failure(
            &job.id,
            d.lease,
            2,
            TaskState::Failed,
            Settle::Nack(Nack::Release),
        )])
        .await
        .unwrap();
    assert_eq!(old, vec![Completed::LeaseLost]);
    let mut ttl = success(&job.id, d.lease, 2, Settle::Ack);
    ttl.result_ttl = Some(Duration::from_millis(100));
    let old = s.complete(&[ttl]).await.unwrap();
    assert_eq!(old, vec![Completed::Applied]);
    assert!(s.queue_stats().await.unwrap().is_empty());
    let new = s
        .complete(&[success(&job.id, d2.lease, 2, Settle::Ack)])
        .await
        .unwrap();
    assert_eq!(new, vec![Completed::AlreadySucceeded]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(s.get(&job.id).await.unwrap().is_none());
    s.clear().await.unwrap();
}

#[tokio::test]
async fn delayed_jobs_wait_and_replay_writes_the_record() {
    let Some(s) = fresh().await else { return };
    let mut later = Envelope::new("t", "{}");
    later.not_before = Some(now_ms() + 150);
    later.queue = "other".into();
    later.priority = 5;
    let now = Envelope::new("t", "{}");
    s.enqueue(&[later.clone(), now.clone()]).await.unwrap();
    let r = s.get(&later.id).await.unwrap().unwrap();
    assert!(
        r.history[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("delayed until")
    );
    let got = s.claim(&[], 5, LEASE, "w").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.id, now.id);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = s.claim(&["other".into()], 5, LEASE, "w").await.unwrap();
    assert_eq!(got.len(), 1);
    let mut dead = failure(
        &later.id,
        got[0].lease,
        1,
        TaskState::Dead,
        Settle::Nack(Nack::DeadLetter { reason: "r".into() }),
    );
    dead.result_ttl = Some(Duration::from_millis(1));
    s.complete(&[dead]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(s.get(&later.id).await.unwrap().is_none());
    let replayed = s
        .replay_dead(&DeadFilter::default(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(replayed, vec![later.id.clone()]);
    let r = s.get(&later.id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Queued);
    assert_eq!(r.history.len(), 1);
    assert_eq!(r.history[0].detail.as_deref(), Some(REPLAY_DETAIL));
    let got = s.claim(&[], 5, LEASE, "w").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.id, later.id);
    s.clear().await.unwrap();
}

/// How fast: `cargo test -p xylem-tests --release --test all redis::hot_path::throughput --
/// --ignored --nocapture` (a simulated worker: jobs finish at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark"]
async fn throughput() {
    use std::sync::Arc;
    let Some(s) = fresh().await else { return };
    let s = Arc::new(s);
    const N: usize = 50_000;
    let jobs: Vec<Envelope> = (0..N)
        .map(|i| Envelope::new("t", format!("{{\"i\":{i}}}")))
        .collect();
    let start = std::time::Instant::now();
    for chunk in jobs.chunks(1000) {
        s.enqueue(chunk).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("enqueue: {:.0} jobs/s", N as f64 / secs);

    // One worker at concurrency 16: claims up to its free slots, each job
    // "runs" at once and goes to a completer that batches what waits.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Completion>();
    let free = Arc::new(tokio::sync::Semaphore::new(16));
    let completer = {
        let s = s.clone();
        let free = free.clone();
        tokio::spawn(async move {
            let mut done = 0;
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(c) = rx.try_recv() {
                    batch.push(c);
                }
                let n = batch.len();
                s.complete(&batch).await.unwrap();
                free.add_permits(n);
                done += n;
                if done == N {
                    return;
                }
            }
        })
    };
    let start = std::time::Instant::now();
    let mut claimed = 0;
    while claimed < N {
        let permit = free.clone().acquire_owned().await.unwrap();
        permit.forget();
        let mut slots = 1;
        while let Ok(p) = free.clone().try_acquire_owned() {
            p.forget();
            slots += 1;
        }
        let got = s.claim(&[], slots, LEASE, "w").await.unwrap();
        free.add_permits(slots - got.len());
        claimed += got.len();
        for d in got {
            let tx = tx.clone();
            tokio::spawn(async move {
                tx.send(success(&d.envelope.id, d.lease, 1, Settle::Ack))
                    .unwrap();
            });
        }
    }
    completer.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("processed: {:.0} jobs/s", N as f64 / secs);
    s.clear().await.unwrap();
}
