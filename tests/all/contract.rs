//! The store contract: what every adapter must do, written once. Each
//! case is written once with [`contract_case!`](crate::contract_case) and
//! runs on every store (`<case>::memory`, `::sqlite`, `::redis`,
//! `::postgres`), each on a fresh store of its own.

use std::time::Duration;

use xylem_core::store::{
    Completed, Completion, DeadFilter, Delivery, Nack, REPLAY_DETAIL, Settle, StoreError, Withdrawn,
};
use xylem_core::{Envelope, TaskSpec, TaskState, Transition};

use crate::stores::AdapterObj;

fn job(task: &str) -> Envelope {
    Envelope::new(task, "{}")
}

fn on(queue: &str, priority: u8) -> Envelope {
    let mut e = job("t");
    e.queue = queue.to_owned();
    e.priority = priority;
    e
}

const LEASE: Duration = Duration::from_secs(30);

fn all() -> Vec<String> {
    Vec::new()
}

/// Enqueues one job (its record and its queue entry).
async fn put(s: &dyn AdapterObj, e: &Envelope) {
    s.broker().enqueue(std::slice::from_ref(e)).await.unwrap();
}

/// Claims up to `max` jobs from `queues` (all if empty) under `lease`.
async fn take(s: &dyn AdapterObj, queues: &[String], max: usize, lease: Duration) -> Vec<Delivery> {
    s.broker().claim(queues, max, lease, WORKER).await.unwrap()
}

/// Settles a delivery as a worker would after a failed run (retry,
/// release or dead letter): whether it applied under the lease.
async fn settle(s: &dyn AdapterObj, id: &str, lease: u64, nack: Nack) -> bool {
    let state = match &nack {
        Nack::Retry { .. } => TaskState::Retrying,
        Nack::Release => TaskState::Queued,
        Nack::DeadLetter { .. } => TaskState::Dead,
    };
    let done = s
        .broker()
        .complete(&[failure(id, lease, state, Settle::Nack(nack))])
        .await
        .unwrap();
    done == [Completed::Applied]
}

/// Extends one lease: whether it is still held.
async fn extend(s: &dyn AdapterObj, id: &str, lease: u64, by: Duration) -> bool {
    let held = s
        .broker()
        .extend_many(&[(id.to_owned(), lease)], by)
        .await
        .unwrap();
    held == [true]
}

contract_case!(
    a_claimed_job_is_handed_out_once_and_its_success_removes_it,
    |s| {
        let e = job("a");
        put(s, &e).await;
        let got = take(s, &all(), 10, LEASE).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].envelope, e);
        assert_eq!(got[0].deliveries, 1);
        assert!(
            take(s, &all(), 10, LEASE).await.is_empty(),
            "leased jobs are not handed out twice"
        );
        let done = s
            .broker()
            .complete(&[success(&e.id, got[0].lease, 1)])
            .await
            .unwrap();
        assert_eq!(done, vec![Completed::Applied]);
        let again = s
            .broker()
            .complete(&[success(&e.id, got[0].lease, 1)])
            .await
            .unwrap();
        assert_eq!(
            again,
            vec![Completed::AlreadySucceeded],
            "a success is final"
        );
        assert_eq!(queued_total(s).await, 0);
    }
);

contract_case!(claim_takes_at_most_max_and_only_named_queues, |s| {
    for _ in 0..5 {
        put(s, &on("a", 0)).await;
    }
    put(s, &on("b", 0)).await;
    let got = take(s, &["a".to_owned()], 3, LEASE).await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|d| d.envelope.queue == "a"));
    assert_eq!(take(s, &["b".to_owned()], 10, LEASE).await.len(), 1);
    let rest = take(s, &["a".to_owned(), "b".to_owned()], 10, LEASE).await;
    assert_eq!(rest.len(), 2);
    assert!(
        take(s, &all(), 0, LEASE).await.is_empty(),
        "max 0 takes none"
    );
});

contract_case!(higher_priority_first_then_oldest, |s| {
    let low = on("q", 1);
    let high = on("q", 9);
    let mid1 = on("q", 5);
    let mid2 = on("q", 5);
    for e in [&low, &high, &mid1, &mid2] {
        put(s, e).await;
    }
    let mut order = Vec::new();
    for _ in 0..4 {
        let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
        order.push(d.envelope.id);
    }
    assert_eq!(order, vec![high.id, mid1.id, mid2.id, low.id]);
});

contract_case!(delayed_jobs_are_invisible_until_due, |s| {
    let mut e = job("later");
    // Long enough that a loaded machine still looks before it is due.
    let due = xylem_core::time::now_ms() + 1500;
    e.not_before = Some(due);
    put(s, &e).await;
    assert!(take(s, &all(), 10, LEASE).await.is_empty());
    let stats = s.broker().queue_stats().await.unwrap();
    if xylem_core::time::now_ms() < due {
        assert_eq!(stats[0].delayed, 1);
    }
    let wait = due - xylem_core::time::now_ms() + 100;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    assert_eq!(take(s, &all(), 10, LEASE).await.len(), 1);
});

contract_case!(expired_lease_redelivers_with_attempt_intact, |s| {
    let mut e = job("x");
    e.attempt = 2;
    put(s, &e).await;
    let first = take(s, &all(), 1, Duration::from_millis(200)).await;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = take(s, &all(), 1, LEASE).await;
    assert_eq!(again.len(), 1, "an expired lease is redelivered");
    assert_eq!(again[0].envelope.attempt, 2);
    assert_eq!(again[0].deliveries, 2);
    assert_ne!(again[0].lease, first[0].lease);
});

contract_case!(extended_lease_is_not_redelivered, |s| {
    let e = job("x");
    put(s, &e).await;
    let d = take(s, &all(), 1, Duration::from_millis(300))
        .await
        .pop()
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(extend(s, &e.id, d.lease, Duration::from_millis(300)).await);
        assert!(take(s, &all(), 1, LEASE).await.is_empty());
    }
    assert!(settle(s, &e.id, d.lease, Nack::Release).await);
});

contract_case!(a_stale_lease_can_neither_extend_nor_settle, |s| {
    let e = job("x");
    put(s, &e).await;
    let old = take(s, &all(), 1, Duration::from_millis(100))
        .await
        .pop()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let new = take(s, &all(), 1, LEASE).await.pop().unwrap();
    assert!(!extend(s, &e.id, old.lease, LEASE).await);
    assert!(!settle(s, &e.id, old.lease, Nack::Release).await);
    let dead = Nack::DeadLetter {
        reason: "stale".to_owned(),
    };
    assert!(!settle(s, &e.id, old.lease, dead).await);
    assert!(extend(s, &e.id, new.lease, LEASE).await);
    assert!(settle(s, &e.id, new.lease, Nack::Release).await);
});

contract_case!(
    retry_requeues_after_its_delay_and_release_requeues_now,
    |s| {
        let e = job("x");
        put(s, &e).await;
        let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
        let mut next = e.clone();
        next.attempt = 2;
        let retry = Nack::Retry {
            envelope: Box::new(next),
            delay: Duration::from_millis(300),
        };
        assert!(settle(s, &e.id, d.lease, retry).await);
        assert!(
            take(s, &all(), 1, LEASE).await.is_empty(),
            "not before its delay"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
        assert_eq!(d.envelope.attempt, 2);
        assert!(settle(s, &e.id, d.lease, Nack::Release).await);
        let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
        assert_eq!(d.envelope.attempt, 2, "release keeps the attempt");
    }
);

contract_case!(dead_letters_list_replay_and_purge, |s| {
    let (a, b) = (on("q1", 0), on("q2", 0));
    for e in [&a, &b] {
        put(s, e).await;
        let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
        let dead = Nack::DeadLetter {
            reason: format!("boom {}", e.queue),
        };
        assert!(settle(s, &d.envelope.id, d.lease, dead).await);
    }
    assert!(
        take(s, &all(), 10, LEASE).await.is_empty(),
        "dead jobs are not delivered"
    );
    let everything = DeadFilter::default();
    let dead = s.broker().dead_jobs(&everything, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let one = DeadFilter {
        ids: vec![a.id.clone()],
        queue: None,
    };
    let shown = s.broker().dead_jobs(&one, 10).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].reason, "boom q1");

    // Replay with a delay: back in the queue but not visible before it.
    let replayed = s
        .broker()
        .replay_dead(&one, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(replayed, vec![a.id.clone()]);
    assert!(take(s, &all(), 10, LEASE).await.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let d = take(s, &all(), 10, LEASE).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].envelope.attempt, 1);

    let q2 = DeadFilter {
        ids: Vec::new(),
        queue: Some("q2".to_owned()),
    };
    assert_eq!(s.broker().purge_dead(&q2).await.unwrap(), 1);
    assert!(
        s.broker()
            .dead_jobs(&everything, 10)
            .await
            .unwrap()
            .is_empty()
    );
});

contract_case!(queue_stats_count_ready_delayed_running_dead, |s| {
    let mut delayed = on("stats", 0);
    delayed.not_before = Some(xylem_core::time::now_ms() + 60_000);
    put(s, &delayed).await;
    for _ in 0..3 {
        put(s, &on("stats", 0)).await;
    }
    let got = take(s, &["stats".to_owned()], 2, LEASE).await;
    let dead = Nack::DeadLetter {
        reason: "x".to_owned(),
    };
    assert!(settle(s, &got[0].envelope.id, got[0].lease, dead).await);
    let stats = s.broker().queue_stats().await.unwrap();
    let q = stats.iter().find(|q| q.queue == "stats").unwrap();
    assert_eq!((q.ready, q.delayed, q.running, q.dead), (1, 1, 1, 1));
});

contract_case!(results_record_history_and_succeed_once, |s| {
    let e = job("r");
    s.results().create(&e).await.unwrap();
    let running = Transition::to(TaskState::Running, 1).detail("worker w1");
    assert!(s.results().transition(&e.id, running).await.unwrap());
    let failed = xylem_core::Failure::new(xylem_core::FailureKind::PluginError, "nope");
    let retry = Transition {
        outcome: Some(xylem_core::Outcome::failure(failed, Default::default())),
        ..Transition::to(TaskState::Retrying, 1)
    };
    s.results().transition(&e.id, retry).await.unwrap();
    let ok = Transition {
        outcome: Some(xylem_core::Outcome::success(
            serde_json::json!({"ok": true}),
            Default::default(),
        )),
        ..Transition::to(TaskState::Succeeded, 2)
    };
    assert!(s.results().transition(&e.id, ok.clone()).await.unwrap());
    assert!(
        !s.results().transition(&e.id, ok).await.unwrap(),
        "never succeeded twice"
    );
    let r = s.results().get(&e.id).await.unwrap().unwrap();
    assert_eq!(r.state, TaskState::Succeeded);
    assert_eq!(r.result, Some(serde_json::json!({"ok": true})));
    assert_eq!(r.error, None, "a success clears the earlier error");
    let states: Vec<TaskState> = r.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        vec![
            TaskState::Queued,
            TaskState::Running,
            TaskState::Retrying,
            TaskState::Succeeded
        ]
    );
    assert_eq!(r.history[1].detail.as_deref(), Some("worker w1"));
    assert!(s.results().get("no-such-id").await.unwrap().is_none());
    assert!(
        s.results()
            .transition("no-such-id", Transition::to(TaskState::Running, 1))
            .await
            .is_err()
    );
});

contract_case!(results_list_filters_by_state_and_task, |s| {
    let (a, b) = (job("list.a"), job("list.b"));
    s.results().create(&a).await.unwrap();
    s.results().create(&b).await.unwrap();
    s.results()
        .transition(&b.id, Transition::to(TaskState::Dead, 1))
        .await
        .unwrap();
    let filter = xylem_core::TaskFilter {
        state: Some(TaskState::Dead),
        ..Default::default()
    };
    let dead = s.results().list(&filter).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, b.id);
    let filter = xylem_core::TaskFilter {
        task: Some("list.a".to_owned()),
        ..Default::default()
    };
    assert_eq!(s.results().list(&filter).await.unwrap()[0].id, a.id);
});

// A job's headers are on its record — written by the hot path and by
// `create` alike — and a listing filters by one (name and value, exact).
contract_case!(records_keep_their_headers_and_list_by_one, |s| {
    let mut acme = job("headers.a");
    acme.headers = vec![
        ("tenant".to_owned(), "acme".to_owned()),
        ("region".to_owned(), "eu".to_owned()),
    ];
    let mut other = job("headers.b");
    other.headers = vec![("tenant".to_owned(), "acme-2".to_owned())];
    let bare = job("headers.c");
    s.broker()
        .enqueue(&[acme.clone(), bare.clone()])
        .await
        .unwrap();
    s.results().create(&other).await.unwrap();
    let record = s.results().get(&acme.id).await.unwrap().unwrap();
    assert_eq!(record.headers, acme.headers);
    let record = s.results().get(&other.id).await.unwrap().unwrap();
    assert_eq!(record.headers, other.headers);
    assert!(
        s.results()
            .get(&bare.id)
            .await
            .unwrap()
            .unwrap()
            .headers
            .is_empty()
    );
    let by = |name: &str, value: &str| xylem_core::TaskFilter {
        header: Some((name.to_owned(), value.to_owned())),
        ..Default::default()
    };
    let found = s.results().list(&by("tenant", "acme")).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![acme.id.as_str()], "exact value, not a prefix");
    assert_eq!(found[0].headers, acme.headers, "listed with its headers");
    assert_eq!(
        s.results().list(&by("region", "eu")).await.unwrap().len(),
        1
    );
    assert!(
        s.results()
            .list(&by("tenant", "ACME"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.results()
            .list(&by("eu", "region"))
            .await
            .unwrap()
            .is_empty()
    );
    let mut both = by("tenant", "acme-2");
    both.task = Some("headers.b".to_owned());
    assert_eq!(s.results().list(&both).await.unwrap()[0].id, other.id);
    both.state = Some(TaskState::Dead);
    assert!(s.results().list(&both).await.unwrap().is_empty());
});

// A record past its TTL is gone for every call, not only for `get`: a
// transition finds nothing, rather than writing to a record no one sees.
contract_case!(an_expired_record_cannot_be_transitioned, |s| {
    let e = job("ttl.transition");
    s.results().create(&e).await.unwrap();
    assert!(
        s.results()
            .expire(&e.id, Duration::from_millis(200))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let t = Transition::to(TaskState::Running, 1);
    match s.results().transition(&e.id, t).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound for an expired record, got {other:?}"),
    }
    assert!(s.results().get(&e.id).await.unwrap().is_none());
});

contract_case!(results_expire_after_their_ttl, |s| {
    let (keep, drop) = (job("ttl.keep"), job("ttl.drop"));
    s.results().create(&keep).await.unwrap();
    s.results().create(&drop).await.unwrap();
    assert!(
        s.results()
            .expire(&drop.id, Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(
        !s.results()
            .expire("no-such-id", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(
        s.results().get(&drop.id).await.unwrap().is_some(),
        "still there before its ttl"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        s.results().get(&drop.id).await.unwrap().is_none(),
        "gone after its ttl"
    );
    let filter = xylem_core::TaskFilter {
        task: Some("ttl.drop".to_owned()),
        ..Default::default()
    };
    assert!(s.results().list(&filter).await.unwrap().is_empty());
    assert!(
        s.results().get(&keep.id).await.unwrap().is_some(),
        "others are kept"
    );
    // Reclaiming on a later call does not disturb live records.
    assert!(
        s.results()
            .expire(&keep.id, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(s.results().get(&keep.id).await.unwrap().is_some());
});

// ---- the hot path: enqueue, claim, complete ------------------------------

const WORKER: &str = "w-contract";

async fn state_of(s: &dyn AdapterObj, id: &str) -> Option<TaskState> {
    s.results().get(id).await.unwrap().map(|r| r.state)
}

async fn queued_total(s: &dyn AdapterObj) -> u64 {
    s.broker()
        .queue_stats()
        .await
        .unwrap()
        .iter()
        .map(|q| q.ready + q.delayed + q.running + q.dead)
        .sum()
}

fn success(id: &str, lease: u64, attempt: u32) -> Completion {
    let mut outcome =
        xylem_core::Outcome::success(serde_json::json!({"ok": id}), Default::default());
    outcome.log.clear();
    Completion {
        id: id.to_owned(),
        lease,
        transition: Transition {
            outcome: Some(outcome),
            plugin: Some("digest-1".to_owned()),
            ..Transition::to(TaskState::Succeeded, attempt)
        },
        settle: Settle::Ack,
        result_ttl: None,
    }
}

fn failure(id: &str, lease: u64, state: TaskState, settle: Settle) -> Completion {
    let failure = xylem_core::Failure::new(xylem_core::FailureKind::PluginError, "boom");
    Completion {
        id: id.to_owned(),
        lease,
        transition: Transition {
            outcome: Some(xylem_core::Outcome::failure(failure, Default::default())),
            detail: Some("boom".to_owned()),
            ..Transition::to(state, 1)
        },
        settle,
        result_ttl: None,
    }
}

contract_case!(hot_path_enqueue_writes_record_and_queue_together, |s| {
    let now = job("now");
    let mut later = job("later");
    later.not_before = Some(xylem_core::time::now_ms() + 60_000);
    s.broker()
        .enqueue(&[now.clone(), later.clone()])
        .await
        .unwrap();
    for e in [&now, &later] {
        let record = s.results().get(&e.id).await.unwrap().expect("a record");
        assert_eq!(record.state, TaskState::Queued);
        assert_eq!(record.task, e.task);
        assert_eq!(record.history.len(), 1);
    }
    let later_record = s.results().get(&later.id).await.unwrap().unwrap();
    assert!(
        later_record.history[0]
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("delayed until")),
        "{:?}",
        later_record.history
    );
    let got = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope, now);
    // A batch of many is one call.
    let many: Vec<Envelope> = (0..1500).map(|_| job("bulk")).collect();
    s.broker().enqueue(&many).await.unwrap();
    let stats = s.broker().queue_stats().await.unwrap();
    assert_eq!(stats.iter().map(|q| q.ready).sum::<u64>(), 1500);
    assert_eq!(state_of(s, &many[1499].id).await, Some(TaskState::Queued));
});

contract_case!(hot_path_claim_marks_records_running, |s| {
    let e = job("a");
    s.broker().enqueue(std::slice::from_ref(&e)).await.unwrap();
    let got = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].deliveries, 1);
    let record = s.results().get(&e.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Running);
    let last = record.history.last().unwrap();
    assert_eq!(last.state, TaskState::Running);
    assert_eq!(last.detail.as_deref(), Some("worker w-contract"));
    assert!(
        s.broker()
            .claim(&all(), 10, LEASE, WORKER)
            .await
            .unwrap()
            .is_empty(),
        "a claimed job is not handed out twice"
    );
});

contract_case!(hot_path_claim_never_hands_out_a_succeeded_job, |s| {
    // A job finished, its result written, but its ack was lost: the
    // queue entry comes back when the lease runs out.
    let e = job("done-once");
    s.broker().enqueue(std::slice::from_ref(&e)).await.unwrap();
    let first = s
        .broker()
        .claim(&all(), 1, Duration::from_millis(200), WORKER)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        s.results()
            .transition(&e.id, Transition::to(TaskState::Succeeded, 1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    assert!(again.is_empty(), "a succeeded job ran again: {again:?}");
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Succeeded));
    assert_eq!(queued_total(s).await, 0, "its queue entry is gone");
});

contract_case!(hot_path_claim_recreates_a_missing_record, |s| {
    let e = job("no-record");
    put(s, &e).await;
    // The record expires (a result TTL) while its job still waits.
    assert!(
        s.results()
            .expire(&e.id, Duration::from_millis(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.results().get(&e.id).await.unwrap().is_none());
    let got = s.broker().claim(&all(), 1, LEASE, WORKER).await.unwrap();
    assert_eq!(got.len(), 1);
    let record = s.results().get(&e.id).await.unwrap().expect("recreated");
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.task, "no-record");
});

contract_case!(hot_path_complete_success_records_and_acks, |s| {
    let a = job("a");
    let b = job("b");
    s.broker().enqueue(&[a.clone(), b.clone()]).await.unwrap();
    let got = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    assert_eq!(got.len(), 2);
    let done: Vec<Completion> = got
        .iter()
        .map(|d| success(&d.envelope.id, d.lease, 1))
        .collect();
    let results = s.broker().complete(&done).await.unwrap();
    assert_eq!(results, vec![Completed::Applied, Completed::Applied]);
    for e in [&a, &b] {
        let record = s.results().get(&e.id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(record.result, Some(serde_json::json!({"ok": e.id})));
        assert_eq!(record.plugin.as_deref(), Some("digest-1"));
        let states: Vec<TaskState> = record.history.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            vec![TaskState::Queued, TaskState::Running, TaskState::Succeeded]
        );
    }
    assert_eq!(queued_total(s).await, 0);
    // Completing again finds a final record.
    let again = s.broker().complete(&done[..1]).await.unwrap();
    assert_eq!(again, vec![Completed::AlreadySucceeded]);
});

contract_case!(hot_path_complete_retry_dead_and_release, |s| {
    let (r, d, l) = (job("retry"), job("dead"), job("release"));
    s.broker()
        .enqueue(&[r.clone(), d.clone(), l.clone()])
        .await
        .unwrap();
    let got = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    let lease = |id: &str| got.iter().find(|x| x.envelope.id == id).unwrap().lease;
    let mut next = r.clone();
    next.attempt = 2;
    let results = s
        .broker()
        .complete(&[
            failure(
                &r.id,
                lease(&r.id),
                TaskState::Retrying,
                Settle::Nack(Nack::Retry {
                    envelope: Box::new(next),
                    delay: Duration::from_millis(300),
                }),
            ),
            failure(
                &d.id,
                lease(&d.id),
                TaskState::Dead,
                Settle::Nack(Nack::DeadLetter {
                    reason: "boom (not retryable)".to_owned(),
                }),
            ),
            failure(
                &l.id,
                lease(&l.id),
                TaskState::Queued,
                Settle::Nack(Nack::Release),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Completed::Applied; 3]);
    assert_eq!(state_of(s, &r.id).await, Some(TaskState::Retrying));
    assert_eq!(state_of(s, &d.id).await, Some(TaskState::Dead));
    assert_eq!(state_of(s, &l.id).await, Some(TaskState::Queued));
    let dead = s
        .broker()
        .dead_jobs(&DeadFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "boom (not retryable)");
    // Released: ready now; retried: after its delay, as attempt 2.
    let now = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    assert_eq!(now.len(), 1);
    assert_eq!(now[0].envelope.id, l.id);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = s.broker().claim(&all(), 10, LEASE, WORKER).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].envelope.id, r.id);
    assert_eq!(later[0].envelope.attempt, 2);
    let record = s.results().get(&r.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(record.attempt, 2);
});

contract_case!(hot_path_complete_after_a_lost_lease, |s| {
    let e = job("slow");
    s.broker().enqueue(std::slice::from_ref(&e)).await.unwrap();
    let first = s
        .broker()
        .claim(&all(), 1, Duration::from_millis(200), WORKER)
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = s
        .broker()
        .claim(&all(), 1, LEASE, "w-other")
        .await
        .unwrap()
        .remove(0);
    assert_ne!(first.lease, second.lease);
    // A failure under a lost lease writes nothing: the job is the other
    // delivery's now.
    let lost = s
        .broker()
        .complete(&[failure(
            &e.id,
            first.lease,
            TaskState::Dead,
            Settle::Nack(Nack::DeadLetter {
                reason: "x".to_owned(),
            }),
        )])
        .await
        .unwrap();
    assert_eq!(lost, vec![Completed::LeaseLost]);
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Running));
    // A success under a lost lease is kept (the work is done, and final)…
    let kept = s
        .broker()
        .complete(&[success(&e.id, first.lease, 1)])
        .await
        .unwrap();
    assert_eq!(kept, vec![Completed::Applied]);
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Succeeded));
    assert_eq!(queued_total(s).await, 0);
    // …and the other delivery's outcome, whatever it is, is not recorded.
    let other = s
        .broker()
        .complete(&[failure(
            &e.id,
            second.lease,
            TaskState::Retrying,
            Settle::Nack(Nack::Release),
        )])
        .await
        .unwrap();
    assert_eq!(other, vec![Completed::AlreadySucceeded]);
    let record = s.results().get(&e.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.result, Some(serde_json::json!({"ok": e.id})));
    assert_eq!(queued_total(s).await, 0);
});

contract_case!(hot_path_complete_sets_the_result_ttl, |s| {
    let e = job("short-lived");
    s.broker().enqueue(std::slice::from_ref(&e)).await.unwrap();
    let d = s
        .broker()
        .claim(&all(), 1, LEASE, WORKER)
        .await
        .unwrap()
        .remove(0);
    let mut done = success(&e.id, d.lease, 1);
    done.result_ttl = Some(Duration::from_millis(1000));
    assert_eq!(
        s.broker().complete(&[done]).await.unwrap(),
        vec![Completed::Applied]
    );
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Succeeded));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(state_of(s, &e.id).await, None, "the record expired");
});

contract_case!(hot_path_replay_brings_back_an_expired_record, |s| {
    let e = job("dead-then-replayed");
    s.broker().enqueue(std::slice::from_ref(&e)).await.unwrap();
    let d = s
        .broker()
        .claim(&all(), 1, LEASE, WORKER)
        .await
        .unwrap()
        .remove(0);
    let mut dead = failure(
        &e.id,
        d.lease,
        TaskState::Dead,
        Settle::Nack(Nack::DeadLetter {
            reason: "boom".to_owned(),
        }),
    );
    dead.result_ttl = Some(Duration::from_millis(1000));
    s.broker().complete(&[dead]).await.unwrap();
    // Expired, and not read since: a store that deletes expired records
    // lazily still holds the old one when the replay comes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let filter = DeadFilter {
        ids: vec![e.id.clone()],
        queue: None,
    };
    let replayed = s
        .broker()
        .replay_dead(&filter, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(replayed, vec![e.id.clone()]);
    let record = s.results().get(&e.id).await.unwrap().expect("written anew");
    assert_eq!(record.state, TaskState::Queued);
    let details: Vec<Option<&str>> = record.history.iter().map(|h| h.detail.as_deref()).collect();
    assert_eq!(
        details,
        vec![Some(REPLAY_DETAIL)],
        "an expired record is written anew: nothing of its old history survives"
    );
    let again = s.broker().claim(&all(), 1, LEASE, WORKER).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].envelope.attempt, 1);
    let done = s
        .broker()
        .complete(&[success(&e.id, again[0].lease, 1)])
        .await
        .unwrap();
    assert_eq!(done, vec![Completed::Applied]);
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Succeeded));
    // And it stays: the replay cleared the old expiry.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Succeeded));
});

contract_case!(hot_path_extend_many_reports_each_lease, |s| {
    let (a, b) = (job("a"), job("b"));
    s.broker().enqueue(&[a.clone(), b.clone()]).await.unwrap();
    let got = s
        .broker()
        .claim(&all(), 2, Duration::from_millis(300), WORKER)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    let mut leases: Vec<(String, u64)> = got
        .iter()
        .map(|d| (d.envelope.id.clone(), d.lease))
        .collect();
    leases.push((a.id.clone(), 999)); // a lease never granted
    let held = s
        .broker()
        .extend_many(&leases, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(held, vec![true, true, false]);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        s.broker()
            .claim(&all(), 10, LEASE, WORKER)
            .await
            .unwrap()
            .is_empty(),
        "extended leases are not redelivered"
    );
});

fn spec(name: &str) -> TaskSpec {
    TaskSpec::new(name)
}

contract_case!(plugins_round_trip_by_digest_and_route_tasks, |s| {
    let v0 = s.plugins().routes_version().await.unwrap();
    s.plugins()
        .put_plugin("d1", b"bytes-1", &[spec("p.a"), spec("p.b")])
        .await
        .unwrap();
    assert_ne!(s.plugins().routes_version().await.unwrap(), v0);
    assert_eq!(
        s.plugins().plugin_bytes("d1").await.unwrap().as_deref(),
        Some(&b"bytes-1"[..])
    );
    assert_eq!(s.plugins().plugin_bytes("nope").await.unwrap(), None);
    s.plugins()
        .put_plugin("d2", b"bytes-2", &[spec("p.a")])
        .await
        .unwrap();
    let routes = s.plugins().routes().await.unwrap();
    let route = |t: &str| routes.iter().find(|r| r.task == t).unwrap().digest.clone();
    assert_eq!(route("p.a"), "d2", "the newest push wins");
    assert_eq!(route("p.b"), "d1");
    let plugins = s.plugins().plugins().await.unwrap();
    assert_eq!(plugins.len(), 2);
    let d1 = plugins.iter().find(|p| p.digest == "d1").unwrap();
    assert_eq!(d1.active_tasks, vec!["p.b".to_owned()]);
    assert_eq!(d1.size, 7);
});

contract_case!(
    compiled_forms_are_kept_per_engine_and_go_with_their_plugin,
    |s| {
        let p = s.plugins();
        p.put_plugin("cd", b"component", &[spec("c.a")])
            .await
            .unwrap();
        assert_eq!(p.compiled("cd", "e1").await.unwrap(), None);
        // Binary, not text: every byte value survives.
        let artifact: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        p.put_compiled("cd", "e1", &artifact).await.unwrap();
        p.put_compiled("cd", "e2", b"other engine").await.unwrap();
        assert_eq!(p.compiled("cd", "e1").await.unwrap(), Some(artifact));
        assert_eq!(
            p.compiled("cd", "e2").await.unwrap().as_deref(),
            Some(&b"other engine"[..])
        );
        p.put_compiled("cd", "e2", b"replaced").await.unwrap();
        assert_eq!(
            p.compiled("cd", "e2").await.unwrap().as_deref(),
            Some(&b"replaced"[..])
        );
        assert_eq!(p.compiled("cd", "e3").await.unwrap(), None);
        // Nothing kept for a component that is not stored.
        p.put_compiled("gone", "e1", b"x").await.unwrap();
        assert_eq!(p.compiled("gone", "e1").await.unwrap(), None);
        // Removed with the component; a push of the same bytes starts bare.
        assert!(p.remove_plugin("cd").await.unwrap());
        assert_eq!(p.compiled("cd", "e1").await.unwrap(), None);
        p.put_plugin("cd", b"component", &[spec("c.a")])
            .await
            .unwrap();
        assert_eq!(p.compiled("cd", "e1").await.unwrap(), None);
    }
);

contract_case!(removing_a_plugin_falls_back_to_an_older_version, |s| {
    s.plugins()
        .put_plugin("old", b"1", &[spec("f.a")])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    s.plugins()
        .put_plugin("new", b"2", &[spec("f.a")])
        .await
        .unwrap();
    let v = s.plugins().routes_version().await.unwrap();
    assert!(s.plugins().remove_plugin("new").await.unwrap());
    assert_ne!(s.plugins().routes_version().await.unwrap(), v);
    let routes = s.plugins().routes().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].digest, "old");
    assert!(s.plugins().remove_plugin("old").await.unwrap());
    assert!(s.plugins().routes().await.unwrap().is_empty());
    assert!(!s.plugins().remove_plugin("old").await.unwrap());
});

// The one fallback rule (`xylem_core::store::fallback_route`) on every
// store: pushes in the same millisecond, and a re-push of an old version,
// are ordered by push, and `plugins()` lists in that order.
contract_case!(the_plugin_fallback_follows_push_order_not_clocks, |s| {
    let p = s.plugins();
    // No pause between pushes: several land in the same millisecond.
    for digest in ["v1", "v2", "v3"] {
        p.put_plugin(
            digest,
            digest.as_bytes(),
            &[spec("f.t"), spec(&format!("only.{digest}"))],
        )
        .await
        .unwrap();
    }
    p.put_plugin("v1", b"v1", &[spec("f.t"), spec("only.v1")])
        .await
        .unwrap(); // a re-push makes v1 the latest again
    let order: Vec<String> = p
        .plugins()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(order, ["v1", "v3", "v2"], "latest push first");
    let route = |task: &'static str| async move {
        p.routes()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.task == task)
            .map(|r| r.digest)
    };
    assert_eq!(route("f.t").await.as_deref(), Some("v1"));
    assert!(p.remove_plugin("v1").await.unwrap());
    assert_eq!(
        route("f.t").await.as_deref(),
        Some("v3"),
        "the latest remaining push"
    );
    assert_eq!(route("only.v1").await, None, "no other version declares it");
    assert!(p.remove_plugin("v3").await.unwrap());
    assert_eq!(route("f.t").await.as_deref(), Some("v2"));
    assert_eq!(route("only.v2").await.as_deref(), Some("v2"));
});

// One rule on every store (`Broker::enqueue`): an enqueue names new jobs.
// An id in use is refused whole-batch, whatever the record's state — so
// an enqueue never resets a job, and a succeeded one never runs again —
// while a record past its TTL is gone and frees its id.
contract_case!(an_enqueue_never_reuses_an_id_in_use, |s| {
    let duplicate = |r: Result<(), StoreError>, id: &str| match r {
        Err(StoreError::Duplicate(got)) => assert_eq!(got, id),
        other => panic!("expected a duplicate {id}, got {other:?}"),
    };
    let e = job("dup");
    put(s, &e).await;
    duplicate(s.broker().enqueue(std::slice::from_ref(&e)).await, &e.id);
    let record = s.results().get(&e.id).await.unwrap().unwrap();
    assert_eq!((record.state, record.history.len()), (TaskState::Queued, 1));

    // Nothing of a refused batch is written.
    let fresh = job("fresh");
    duplicate(s.broker().enqueue(&[fresh.clone(), e.clone()]).await, &e.id);
    assert!(s.results().get(&fresh.id).await.unwrap().is_none());
    let twice = job("twice");
    duplicate(
        s.broker().enqueue(&[twice.clone(), twice.clone()]).await,
        &twice.id,
    );
    assert!(s.results().get(&twice.id).await.unwrap().is_none());
    assert_eq!(queued_total(s).await, 1);

    // A succeeded job stays succeeded and never runs again.
    let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
    let done = s
        .broker()
        .complete(&[success(&e.id, d.lease, 1)])
        .await
        .unwrap();
    assert_eq!(done, vec![Completed::Applied]);
    duplicate(s.broker().enqueue(std::slice::from_ref(&e)).await, &e.id);
    assert_eq!(state_of(s, &e.id).await, Some(TaskState::Succeeded));
    assert!(take(s, &all(), 10, LEASE).await.is_empty());

    // A record past its TTL is gone: its id may be enqueued again.
    let brief = job("brief");
    put(s, &brief).await;
    let d = take(s, &all(), 1, LEASE).await.pop().unwrap();
    let mut done = success(&brief.id, d.lease, 1);
    done.result_ttl = Some(Duration::from_millis(50));
    s.broker().complete(&[done]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    put(s, &brief).await;
    let record = s.results().get(&brief.id).await.unwrap().unwrap();
    assert_eq!((record.state, record.history.len()), (TaskState::Queued, 1));
    assert_eq!(take(s, &all(), 10, LEASE).await.len(), 1);
});

// `Cancellation`: withdraw takes waiting jobs out whatever their set, never
// a job a worker holds under a live lease; requests are kept per id.
contract_case!(withdraw_removes_waiting_jobs_only, |s| {
    let ready = job("c");
    let mut delayed = job("c");
    delayed.not_before = Some(xylem_core::time::now_ms() + 60_000);
    let running = job("c");
    let lapsed = job("c");
    let dead = job("c");
    for e in [&running, &lapsed, &dead] {
        put(s, e).await;
    }
    // Three claimed one by one (claim order: oldest first).
    let held = take(s, &all(), 1, LEASE).await.pop().unwrap();
    let gone = take(s, &all(), 1, Duration::from_millis(150))
        .await
        .pop()
        .unwrap();
    let doomed = take(s, &all(), 1, LEASE).await.pop().unwrap();
    assert_eq!(
        [&held.envelope.id, &gone.envelope.id, &doomed.envelope.id],
        [&running.id, &lapsed.id, &dead.id]
    );
    let reason = "gave up".to_owned();
    assert!(settle(s, &dead.id, doomed.lease, Nack::DeadLetter { reason }).await);
    put(s, &ready).await;
    put(s, &delayed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ids: Vec<String> = [&ready, &delayed, &running, &lapsed, &dead]
        .iter()
        .map(|e| e.id.clone())
        .chain(["never-enqueued".to_owned()])
        .collect();
    let now = xylem_core::time::now_ms();
    assert_eq!(
        s.cancellation().withdraw(&ids, now).await.unwrap(),
        [
            Withdrawn::Removed,
            Withdrawn::Removed,
            Withdrawn::Running,
            Withdrawn::Removed,
            Withdrawn::Dead,
            Withdrawn::Absent
        ]
    );
    // Nothing withdrawn is ever delivered; the running job's lease holds.
    assert!(take(s, &all(), 10, LEASE).await.is_empty());
    assert!(extend(s, &running.id, held.lease, LEASE).await);
    assert_eq!(
        s.cancellation().withdraw(&ids[..1], now).await.unwrap(),
        [Withdrawn::Absent]
    );

    // Requests: kept per id, read back only for the ids asked about.
    assert!(
        s.cancellation()
            .cancel_requested(&ids)
            .await
            .unwrap()
            .is_empty()
    );
    s.cancellation()
        .request_cancel(std::slice::from_ref(&running.id))
        .await
        .unwrap();
    s.cancellation()
        .request_cancel(&[running.id.clone(), "other".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        s.cancellation().cancel_requested(&ids).await.unwrap(),
        std::slice::from_ref(&running.id)
    );
    assert!(
        s.cancellation()
            .cancel_requested(&[])
            .await
            .unwrap()
            .is_empty()
    );
});

// `QueueControl`: paused queues by name; the ids waiting in a queue, by
// whether they are ready or delayed, never running or dead ones.
contract_case!(queue_control_pauses_by_name_and_lists_waiting_jobs, |s| {
    let qc = s.queue_control();
    assert!(qc.paused_queues().await.unwrap().is_empty());
    assert!(qc.set_paused("mail", true).await.unwrap());
    assert!(
        !qc.set_paused("mail", true).await.unwrap(),
        "already paused"
    );
    assert!(qc.set_paused("bulk", true).await.unwrap());
    assert_eq!(qc.paused_queues().await.unwrap(), ["bulk", "mail"]);
    assert!(qc.set_paused("bulk", false).await.unwrap());
    assert!(!qc.set_paused("bulk", false).await.unwrap(), "not paused");
    assert_eq!(qc.paused_queues().await.unwrap(), ["mail"]);

    let running = on("mail", 0);
    put(s, &running).await;
    take(s, &["mail".to_owned()], 1, LEASE).await.pop().unwrap();
    let ready: Vec<Envelope> = (0..3).map(|_| on("mail", 0)).collect();
    for e in &ready {
        put(s, e).await;
    }
    let mut later = on("mail", 0);
    later.not_before = Some(xylem_core::time::now_ms() + 60_000);
    put(s, &later).await;
    put(s, &on("other", 0)).await;

    let ids = |v: &[&Envelope]| v.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let all_ready = ids(&ready.iter().collect::<Vec<_>>());
    assert_eq!(
        qc.waiting_ids("mail", true, false, 10).await.unwrap(),
        all_ready
    );
    assert_eq!(
        qc.waiting_ids("mail", false, true, 10).await.unwrap(),
        ids(&[&later])
    );
    let mut both = qc.waiting_ids("mail", true, true, 10).await.unwrap();
    both.sort();
    let mut expected = ids(&[&ready[0], &ready[1], &ready[2], &later]);
    expected.sort();
    assert_eq!(both, expected);
    assert_eq!(
        qc.waiting_ids("mail", true, true, 2).await.unwrap().len(),
        2
    );
    assert!(
        qc.waiting_ids("nowhere", true, true, 10)
            .await
            .unwrap()
            .is_empty()
    );
});

// `RateLimits`: slots an interval apart per key, never before `now`; a
// limiter idle past its memory starts again at `now`.
contract_case!(rate_slots_are_reserved_an_interval_apart_per_key, |s| {
    let r = s.rate_limits();
    let gap = Duration::from_millis(100);
    let keep = Duration::from_secs(60);
    let t = 1_800_000_000_000_i64;
    assert_eq!(r.reserve_slot("a", gap, t, keep).await.unwrap(), t);
    assert_eq!(r.reserve_slot("a", gap, t, keep).await.unwrap(), t + 100);
    assert_eq!(
        r.reserve_slot("a", gap, t + 10, keep).await.unwrap(),
        t + 200
    );
    assert_eq!(
        r.reserve_slot("b", gap, t + 10, keep).await.unwrap(),
        t + 10
    );
    // Later than the next slot: now.
    assert_eq!(
        r.reserve_slot("a", gap, t + 5_000, keep).await.unwrap(),
        t + 5_000
    );
    assert_eq!(
        r.reserve_slot("a", gap, t + 5_000, keep).await.unwrap(),
        t + 5_100
    );
});
