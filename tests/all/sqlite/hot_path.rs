//! The hot-path methods (enqueue, claim, complete, extend_many,
//! replay_dead) against the in-memory reference: the same calls on both
//! stores must give the same answers and the same records.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xylem_core::store::{DeadLetters as _, Statistics as _};

use xylem_core::memory::MemoryStore;
use xylem_core::store::{Completed, Completion, DeadFilter, Delivery, Nack, Settle};
use xylem_core::{
    Broker, Envelope, Failure, FailureKind, Outcome, ResultBackend, TaskRecord, TaskState,
    Transition, Usage,
};
use xylem_sqlite::SqliteStore;

fn temp_db(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "xylem-sqlite-hot-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("store.db")
}

/// A record without its timestamps (the two stores write at slightly
/// different moments).
fn shape(record: Option<TaskRecord>) -> Option<TaskRecord> {
    record.map(|mut r| {
        r.updated_at = 0;
        for h in &mut r.history {
            h.at = 0;
        }
        r
    })
}

fn ids(deliveries: &[Delivery]) -> Vec<(String, u32, u32)> {
    deliveries
        .iter()
        .map(|d| (d.envelope.id.clone(), d.envelope.attempt, d.deliveries))
        .collect()
}

fn job(name: &str, priority: u8) -> Envelope {
    let mut e = Envelope::new("t", format!("{{\"n\":\"{name}\"}}"));
    e.id = name.to_owned();
    e.priority = priority;
    e
}

fn succeeded(c: &Delivery, ttl: Option<Duration>) -> Completion {
    let mut t = Transition::to(TaskState::Succeeded, c.envelope.attempt);
    t.outcome = Some(Outcome::success(serde_json::json!(42), Usage::default()));
    t.plugin = Some("sha".to_owned());
    Completion {
        id: c.envelope.id.clone(),
        lease: c.lease,
        transition: t,
        settle: Settle::Ack,
        result_ttl: ttl,
    }
}

fn failed(c: &Delivery, settle: Nack, state: TaskState) -> Completion {
    let mut t = Transition::to(state, c.envelope.attempt).detail("boom");
    t.outcome = Some(Outcome::failure(
        Failure::new(FailureKind::Trap, "boom"),
        Usage::default(),
    ));
    Completion {
        id: c.envelope.id.clone(),
        lease: c.lease,
        transition: t,
        settle: Settle::Nack(settle),
        result_ttl: None,
    }
}

struct Pair {
    memory: MemoryStore,
    sqlite: SqliteStore,
}

impl Pair {
    async fn same_records(&self, ids: &[&str]) {
        for id in ids {
            let m = shape(self.memory.get(id).await.unwrap());
            let s = shape(self.sqlite.get(id).await.unwrap());
            assert_eq!(m, s, "record {id}");
        }
    }

    async fn enqueue(&self, jobs: &[Envelope]) {
        self.memory.enqueue(jobs).await.unwrap();
        self.sqlite.enqueue(jobs).await.unwrap();
    }

    async fn claim(&self, max: usize, lease: Duration) -> (Vec<Delivery>, Vec<Delivery>) {
        let m = self.memory.claim(&[], max, lease, "w1").await.unwrap();
        let s = self.sqlite.claim(&[], max, lease, "w1").await.unwrap();
        assert_eq!(ids(&m), ids(&s));
        (m, s)
    }

    async fn complete(
        &self,
        make: impl Fn(&Delivery) -> Completion,
        m: &[&Delivery],
        s: &[&Delivery],
    ) -> Vec<Completed> {
        let mc: Vec<Completion> = m.iter().map(|d| make(d)).collect();
        let sc: Vec<Completion> = s.iter().map(|d| make(d)).collect();
        let a = self.memory.complete(&mc).await.unwrap();
        let b = self.sqlite.complete(&sc).await.unwrap();
        assert_eq!(a, b);
        b
    }
}

#[tokio::test]
async fn hot_path_matches_the_memory_store() {
    let pair = Pair {
        memory: MemoryStore::new(),
        sqlite: SqliteStore::open(&temp_db("diff")).unwrap(),
    };
    let lease = Duration::from_secs(30);
    let mut delayed = job("c", 9);
    delayed.not_before = Some(xylem_core::time::now_ms() + 3_600_000);
    pair.enqueue(&[job("a", 1), job("b", 5), delayed, job("d", 0)])
        .await;
    pair.same_records(&["a", "b", "c", "d"]).await;

    // Priority order; the delayed job stays.
    let (m, s) = pair.claim(2, lease).await;
    assert_eq!(ids(&s)[0].0, "b");
    pair.same_records(&["a", "b"]).await;

    // a succeeds (kept an hour), b fails and retries.
    let r = pair
        .complete(
            |d| succeeded(d, Some(Duration::from_secs(3600))),
            &[&m[1]],
            &[&s[1]],
        )
        .await;
    assert_eq!(r, [Completed::Applied]);
    let retry = |d: &Delivery| {
        let mut next = d.envelope.clone();
        next.attempt += 1;
        failed(
            d,
            Nack::Retry {
                envelope: Box::new(next),
                delay: Duration::ZERO,
            },
            TaskState::Retrying,
        )
    };
    pair.complete(retry, &[&m[0]], &[&s[0]]).await;
    pair.same_records(&["a", "b"]).await;
    let b_old = (m[0].clone(), s[0].clone());

    // b again (attempt 2), then d.
    let (m, s) = pair.claim(10, lease).await;
    assert_eq!(s.len(), 2);
    pair.same_records(&["b", "d"]).await;

    // A stale lease of b cannot fail it; d goes to the DLQ.
    let r = pair
        .complete(
            |d| failed(d, Nack::Release, TaskState::Failed),
            &[&b_old.0],
            &[&b_old.1],
        )
        .await;
    assert_eq!(r, [Completed::LeaseLost]);
    let dead = |d: &Delivery| {
        failed(
            d,
            Nack::DeadLetter {
                reason: "no".to_owned(),
            },
            TaskState::Dead,
        )
    };
    pair.complete(dead, &[&m[1]], &[&s[1]]).await;
    pair.same_records(&["b", "d"]).await;

    // Leases: b's is held, d's is not any more.
    let leases_m = [
        (m[0].envelope.id.clone(), m[0].lease),
        ("d".to_owned(), m[1].lease),
    ];
    let leases_s = [
        (s[0].envelope.id.clone(), s[0].lease),
        ("d".to_owned(), s[1].lease),
    ];
    let hm = pair.memory.extend_many(&leases_m, lease).await.unwrap();
    let hs = pair.sqlite.extend_many(&leases_s, lease).await.unwrap();
    assert_eq!(hm, [true, false]);
    assert_eq!(hs, hm);

    // Replay d: queued again, attempt 1.
    let filter = DeadFilter::default();
    let rm = pair
        .memory
        .replay_dead(&filter, Duration::ZERO)
        .await
        .unwrap();
    let rs = pair
        .sqlite
        .replay_dead(&filter, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(rm, rs);
    pair.same_records(&["d"]).await;

    // d is handed out again (a redelivered success is dropped, never
    // handed out: the contract's hot_path_claim_never_hands_out_a_succeeded_job).
    let (m, s) = pair.claim(1, lease).await;
    assert_eq!(ids(&s)[0].0, "d");
    assert_eq!(pair.sqlite.queue_stats().await.unwrap()[0].running, 2);
    pair.same_records(&["a", "d"]).await;

    // A success under a lost lease is still recorded, and the entry goes.
    let r = pair
        .complete(|d| succeeded(d, None), &[&b_old.0], &[&b_old.1])
        .await;
    assert_eq!(r, [Completed::Applied]);
    pair.same_records(&["b"]).await;
    let r = pair
        .complete(|d| succeeded(d, None), &[&m[0]], &[&s[0]])
        .await;
    assert_eq!(r, [Completed::Applied]);
    pair.same_records(&["d"]).await;
    let stats = pair.sqlite.queue_stats().await.unwrap();
    assert!(
        stats.iter().all(|q| q.running == 0 && q.ready == 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn a_claim_writes_an_expired_record_anew() {
    let store = SqliteStore::open(&temp_db("recreate")).unwrap();
    store.enqueue(&[job("e", 0)]).await.unwrap();
    store.expire("e", Duration::ZERO).await.unwrap();
    assert!(store.get("e").await.unwrap().is_none());
    let claimed = store
        .claim(&[], 5, Duration::from_secs(30), "w9")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let record = store.get("e").await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.history.len(), 1);
    assert_eq!(record.history[0].detail.as_deref(), Some("worker w9"));
}

#[tokio::test]
async fn a_result_ttl_expires_the_record() {
    let store = SqliteStore::open(&temp_db("ttl")).unwrap();
    store.enqueue(&[job("f", 0)]).await.unwrap();
    let claimed = store
        .claim(&[], 5, Duration::from_secs(30), "w")
        .await
        .unwrap();
    let r = store
        .complete(&[succeeded(&claimed[0], Some(Duration::ZERO))])
        .await
        .unwrap();
    assert_eq!(r, [Completed::Applied]);
    assert!(store.get("f").await.unwrap().is_none());
    assert!(store.queue_stats().await.unwrap().is_empty());
}

/// `cargo test -p xylem-tests --release --test all sqlite::hot_path::hot_path_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark"]
async fn hot_path_throughput() {
    let store = SqliteStore::open(&temp_db("bench")).unwrap();
    let jobs: Vec<Envelope> = (0..50_000)
        .map(|_| Envelope::new("bench", "{\"x\":1}"))
        .collect();
    let t = Instant::now();
    for chunk in jobs.chunks(1000) {
        store.enqueue(chunk).await.unwrap();
    }
    let enqueue = t.elapsed();
    let t = Instant::now();
    let lease = Duration::from_secs(30);
    let mut done = 0;
    let mut spent = [Duration::ZERO; 3];
    loop {
        let step = Instant::now();
        let claimed = store.claim(&[], 32, lease, "bench").await.unwrap();
        spent[0] += step.elapsed();
        if claimed.is_empty() {
            break;
        }
        let leases: Vec<(String, u64)> = claimed
            .iter()
            .map(|d| (d.envelope.id.clone(), d.lease))
            .collect();
        let step = Instant::now();
        store.extend_many(&leases, lease).await.unwrap();
        spent[1] += step.elapsed();
        let completions: Vec<Completion> = claimed
            .iter()
            .map(|d| succeeded(d, Some(Duration::from_secs(3600))))
            .collect();
        let step = Instant::now();
        done += store.complete(&completions).await.unwrap().len();
        spent[2] += step.elapsed();
    }
    let process = t.elapsed();
    assert_eq!(done, jobs.len());
    eprintln!(
        "enqueue: {:.0} jobs/s; claim+extend+complete (batches of 32): {:.0} jobs/s \
         (claim {:?}, extend {:?}, complete {:?})",
        jobs.len() as f64 / enqueue.as_secs_f64(),
        done as f64 / process.as_secs_f64(),
        spent[0],
        spent[1],
        spent[2]
    );
}

#[tokio::test]
async fn claims_from_named_queues_in_claim_order() {
    let pair = Pair {
        memory: MemoryStore::new(),
        sqlite: SqliteStore::open(&temp_db("queues")).unwrap(),
    };
    let mut jobs = Vec::new();
    for (i, queue) in ["x", "y", "z", "x", "y", "z", "y"].iter().enumerate() {
        let mut e = job(&format!("j{i}"), (i % 3) as u8);
        e.queue = (*queue).to_owned();
        jobs.push(e);
    }
    pair.enqueue(&jobs).await;
    let queues = ["y".to_owned(), "x".to_owned()];
    let lease = Duration::from_secs(30);
    let m = pair.memory.claim(&queues, 3, lease, "w").await.unwrap();
    let s = pair.sqlite.claim(&queues, 3, lease, "w").await.unwrap();
    assert_eq!(ids(&m), ids(&s));
    // A queue named twice still yields each job once.
    let twice = ["x".to_owned(), "y".to_owned(), "x".to_owned()];
    let s = pair.sqlite.claim(&twice, 10, lease, "w").await.unwrap();
    let names: Vec<String> = s.iter().map(|d| d.envelope.id.clone()).collect();
    assert_eq!(names, ["j3", "j6"]);
}
