//! What only the PostgreSQL adapter does, beyond the contract: a schema
//! per URL (created once however many connect at a time), notifications,
//! outages. Each test uses its own schema of the database at
//! `XYLEM_TEST_POSTGRES_URL` (default: the local server).

use std::sync::Arc;
use std::time::{Duration, Instant};
use xylem_core::store::Statistics as _;

use xylem_core::Envelope;
use xylem_core::store::{Broker, StoreError};
use xylem_postgres::PostgresStore;
use xylem_tests::servers::PostgresServer;

use crate::stores::{postgres as fresh, postgres_url_with_schema as url_with_schema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_server_version_and_schema_is_used() {
    let Some(store) = fresh().await else { return };
    let health = store.health().await.unwrap();
    assert!(health.starts_with("PostgreSQL "), "{health}");
    assert!(store.schema().starts_with("xylem_t_"));
    store.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_to_a_new_schema_all_succeed() {
    let schema = xylem_tests::unique_name("xylem_t");
    let Some(url) = url_with_schema(&schema) else {
        return;
    };
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for c in connects {
        stores.push(c.await.unwrap().unwrap());
    }
    // They all see one queue.
    let e = Envelope::new("shared", "{}");
    stores[0].enqueue(std::slice::from_ref(&e)).await.unwrap();
    let got = stores[3]
        .claim(&[], 10, Duration::from_secs(30), "w")
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.id, e.id);
    stores[0].drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_case_schema_names_are_kept_apart() {
    let lower = xylem_tests::unique_name("xylem_t");
    let upper = lower.replacen("xylem_t", "Xylem_T", 1);
    let (Some(lower_url), Some(upper_url)) = (url_with_schema(&lower), url_with_schema(&upper))
    else {
        return;
    };
    let a = PostgresStore::connect(&lower_url).await.unwrap();
    let b = PostgresStore::connect(&upper_url).await.unwrap();
    assert_eq!(b.schema(), upper);
    b.enqueue(&[Envelope::new("upper", "{}")]).await.unwrap();
    assert!(a.queue_stats().await.unwrap().is_empty());
    assert_eq!(b.queue_stats().await.unwrap()[0].ready, 1);
    a.drop_schema().await.unwrap();
    b.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_schema_leaves_an_empty_store_on_reconnect() {
    let schema = xylem_tests::unique_name("xylem_t");
    let Some(url) = url_with_schema(&schema) else {
        return;
    };
    let store = PostgresStore::connect(&url).await.unwrap();
    store.enqueue(&[Envelope::new("x", "{}")]).await.unwrap();
    store.drop_schema().await.unwrap();
    let again = PostgresStore::connect(&url).await.unwrap();
    assert!(again.queue_stats().await.unwrap().is_empty());
    again.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_elsewhere_wakes_a_waiting_worker() {
    let schema = xylem_tests::unique_name("xylem_t");
    let Some(url) = url_with_schema(&schema) else {
        return;
    };
    let worker = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let client = PostgresStore::connect(&url).await.unwrap();

    // Nothing published: the wait lasts its timeout, no longer.
    let started = Instant::now();
    worker.wait_for_jobs(Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // The listener now exists: a publish from another process (another
    // pool) ends a long wait at once.
    let waiting = {
        let worker = worker.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            worker.wait_for_jobs(Duration::from_secs(20)).await;
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .enqueue(&[Envelope::new("wake", "{}")])
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the notification ends the wait")
        .unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    client.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservers_never_share_a_job() {
    let schema = xylem_tests::unique_name("xylem_t");
    let Some(url) = url_with_schema(&schema) else {
        return;
    };
    let first = PostgresStore::connect(&url).await.unwrap();
    let mut published = std::collections::HashSet::new();
    for i in 0..120 {
        let mut e = Envelope::new("many", "{}");
        e.priority = (i % 3) as u8;
        first.enqueue(std::slice::from_ref(&e)).await.unwrap();
        published.insert(e.id);
    }
    // Four workers, each on its own pool, as four processes would be.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let store = PostgresStore::connect(&url).await.unwrap();
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim(&[], 7, Duration::from_secs(30), "w")
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|d| d.envelope.id));
            }
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for w in workers {
        for id in w.await.unwrap() {
            assert!(seen.insert(id), "a job was leased twice");
        }
    }
    assert_eq!(seen, published);
    first.drop_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_and_the_store_recovers() {
    // A private cluster (the shared server is never stopped); needs the
    // PostgreSQL binaries, like the shared server does.
    if url_with_schema("x").is_none() {
        return;
    }
    let server = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let url = format!("{}?schema=outage", server.url());
    let store = PostgresStore::connect(&url).await.unwrap();
    let before = Envelope::new("before", "{}");
    store.enqueue(std::slice::from_ref(&before)).await.unwrap();
    store.wait_for_jobs(Duration::from_millis(50)).await; // starts the listener

    let restart = tokio::task::spawn_blocking(move || {
        server.restart(Duration::from_secs(8));
        server
    });
    // While it is down: errors, not hangs, and waits keep their timeout.
    let mut saw_outage = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = store.queue_stats().await;
        assert!(started.elapsed() < Duration::from_secs(8), "a call hung");
        if let Err(e) = result {
            assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
            saw_outage = true;
            let started = Instant::now();
            store.wait_for_jobs(Duration::from_millis(500)).await;
            assert!(started.elapsed() < Duration::from_secs(2), "a wait hung");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_outage, "the outage was not noticed");

    // Back up: the same store works again, and nothing was lost.
    let server = restart.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.queue_stats().await.is_err() {
        assert!(Instant::now() < deadline, "the store never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = Envelope::new("after", "{}");
    store.enqueue(std::slice::from_ref(&after)).await.unwrap();
    let got = store
        .claim(&[], 10, Duration::from_secs(30), "w")
        .await
        .unwrap();
    let mut ids: Vec<_> = got.into_iter().map(|d| d.envelope.id).collect();
    ids.sort();
    let mut expected = vec![before.id, after.id];
    expected.sort();
    assert_eq!(ids, expected);
    drop(store);
    drop(server);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on the loopback: nothing listens there.
    let started = Instant::now();
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test?schema=x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn bad_urls_are_invalid() {
    for url in [
        "mysql://h/db",
        "postgres://postgres@127.0.0.1:5432/test?schema=no-dashes",
    ] {
        let err = PostgresStore::connect(url).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{url}: {err:?}");
    }
}
