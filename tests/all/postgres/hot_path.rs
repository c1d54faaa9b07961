//! What the contract suite does not reach in the PostgreSQL hot path:
//! claims from named queues, a batch completing the same job twice,
//! duplicate leases in one extension, and concurrent claimers and
//! completers on separate pools (as separate processes would be). Each
//! test uses its own schema of the database at `XYLEM_TEST_POSTGRES_URL`
//! (default: the local server), and is skipped when the server does not
//! answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use xylem_core::store::Statistics as _;

use xylem_core::memory::MemoryStore;
use xylem_core::store::{Completed, Completion, Delivery, Nack, Settle};
use xylem_core::{Broker, Envelope, Outcome, ResultBackend, TaskState, Transition, Usage};
use xylem_postgres::PostgresStore;

const LEASE: Duration = Duration::from_secs(30);

/// The server's URL, if something listens there.
fn server_url() -> Option<String> {
    let url = std::env::var("XYLEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let authority = url.split("://").nth(1)?.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()?
        .next()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some(url)
}

/// A fresh schema's URL.
fn fresh_url() -> Option<String> {
    static N: AtomicU32 = AtomicU32::new(0);
    let url = server_url()?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Some(format!(
        "{url}{sep}schema=xylem_hot_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

fn job(queue: &str, priority: u8) -> Envelope {
    let mut e = Envelope::new("t", "{}");
    e.queue = queue.to_owned();
    e.priority = priority;
    e
}

fn succeeded(d: &Delivery) -> Completion {
    let mut t = Transition::to(TaskState::Succeeded, d.envelope.attempt);
    t.outcome = Some(Outcome::success(serde_json::json!(1), Usage::default()));
    Completion {
        id: d.envelope.id.clone(),
        lease: d.lease,
        transition: t,
        settle: Settle::Ack,
        result_ttl: None,
    }
}

fn released(d: &Delivery) -> Completion {
    Completion {
        id: d.envelope.id.clone(),
        lease: d.lease,
        transition: Transition::to(TaskState::Queued, d.envelope.attempt).detail("released"),
        settle: Settle::Nack(Nack::Release),
        result_ttl: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_named_queues_in_claim_order() {
    let Some(url) = fresh_url() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let low = job("a", 1);
    let high = job("b", 5);
    let other = job("c", 9);
    let mid = job("a", 3);
    store
        .enqueue(&[low.clone(), high.clone(), other.clone(), mid.clone()])
        .await
        .unwrap();
    let queues = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
    let got = store.claim(&queues, 2, LEASE, "w").await.unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.envelope.id.as_str()).collect();
    assert_eq!(ids, vec![high.id.as_str(), mid.id.as_str()]);
    let got = store.claim(&queues, 10, LEASE, "w").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.id, low.id);
    // Queue c was never named.
    assert!(
        store
            .claim(&queues, 10, LEASE, "w")
            .await
            .unwrap()
            .is_empty()
    );
    let rest = store.claim(&[], 10, LEASE, "w").await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].envelope.id, other.id);
    store.drop_schema().await.unwrap();
}

/// The same calls on the reference store and on PostgreSQL give the same
/// answers, when a batch carries two completions of one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_may_complete_one_job_twice() {
    let Some(url) = fresh_url() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let memory = MemoryStore::new();
    let e = job("default", 0);
    for broker in [&store as &dyn Broker, &memory] {
        broker.enqueue(std::slice::from_ref(&e)).await.unwrap();
        let d = broker.claim(&[], 1, LEASE, "w").await.unwrap().remove(0);
        // Released first, so the success that follows has lost its lease:
        // it is kept all the same, and the queue entry removed.
        let results = broker
            .complete(&[released(&d), succeeded(&d), released(&d)])
            .await
            .unwrap();
        assert_eq!(
            results,
            vec![
                Completed::Applied,
                Completed::Applied,
                Completed::AlreadySucceeded
            ]
        );
        assert!(broker.claim(&[], 10, LEASE, "w").await.unwrap().is_empty());
    }
    let pg = store.get(&e.id).await.unwrap().unwrap();
    let mem = memory.get(&e.id).await.unwrap().unwrap();
    let states = |r: &xylem_core::TaskRecord| r.history.iter().map(|h| h.state).collect::<Vec<_>>();
    assert_eq!(states(&pg), states(&mem));
    assert_eq!(pg.state, TaskState::Succeeded);
    assert_eq!(pg.result, mem.result);
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_many_answers_each_entry() {
    let Some(url) = fresh_url() else { return };
    let store = PostgresStore::connect(&url).await.unwrap();
    let e = job("default", 0);
    store.enqueue(std::slice::from_ref(&e)).await.unwrap();
    let d = store.claim(&[], 1, LEASE, "w").await.unwrap().remove(0);
    let leases = vec![
        (e.id.clone(), d.lease),
        ("nope".to_owned(), 1),
        (e.id.clone(), d.lease + 1),
        (e.id.clone(), d.lease),
    ];
    let held = store.extend_many(&leases, LEASE).await.unwrap();
    assert_eq!(held, vec![true, false, false, true]);
    assert!(store.extend_many(&[], LEASE).await.unwrap().is_empty());
    store.drop_schema().await.unwrap();
}

/// Four "processes" (one pool each) claim, extend and complete the same
/// queue at once: every job runs once and ends with one record, whose
/// history is queued, running, succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_and_completers_share_nothing() {
    let Some(url) = fresh_url() else { return };
    let first = PostgresStore::connect(&url).await.unwrap();
    let jobs: Vec<Envelope> = (0..1000).map(|i| job("default", (i % 3) as u8)).collect();
    first.enqueue(&jobs).await.unwrap();
    let mut workers = Vec::new();
    for w in 0..4 {
        let store = Arc::new(PostgresStore::connect(&url).await.unwrap());
        workers.push(tokio::spawn(async move {
            let mut ran = Vec::new();
            loop {
                let got = store
                    .claim(&[], 4 + w * 6, LEASE, &format!("w{w}"))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return ran;
                }
                let done: Vec<Completion> = got.iter().map(succeeded).collect();
                // Lease extensions (in another order, twice) while the
                // jobs complete: none waits for another forever (an
                // `UPDATE … FROM unnest` that waited for locks deadlocked).
                let leases: Vec<(String, u64)> = got
                    .iter()
                    .rev()
                    .map(|d| (d.envelope.id.clone(), d.lease))
                    .collect();
                let (results, extended, again) = tokio::join!(
                    store.complete(&done),
                    store.extend_many(&leases, LEASE),
                    async {
                        tokio::task::yield_now().await;
                        store.extend_many(&leases, LEASE).await
                    }
                );
                extended.unwrap();
                again.unwrap();
                let results = results.unwrap();
                assert!(results.iter().all(|r| *r == Completed::Applied));
                ran.extend(got.into_iter().map(|d| d.envelope.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for w in workers {
        for id in w.await.unwrap() {
            assert!(seen.insert(id), "a job ran twice");
        }
    }
    assert_eq!(seen.len(), jobs.len());
    assert!(first.queue_stats().await.unwrap().is_empty());
    for e in jobs.iter().step_by(37) {
        let record = first.get(&e.id).await.unwrap().unwrap();
        let states: Vec<TaskState> = record.history.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            vec![TaskState::Queued, TaskState::Running, TaskState::Succeeded]
        );
    }
    first.drop_schema().await.unwrap();
}
