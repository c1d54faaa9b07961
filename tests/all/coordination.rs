//! The coordination contract on every store: group member counters and
//! a chord claimed once, canvas definitions written once, schedules
//! written by version and listed when due, locks owned and taken over after expiry, quotas
//! never passed by concurrent takers, workers' records replaced and dropped.

use std::time::Duration;

coordination_case!(group_completes_only_after_its_last_member, |s| {
    use serde_json::json;
    let g = xylem_tests::unique_name("group");
    s.groups().create_group(&g, 3).await.unwrap();
    let status = s
        .groups()
        .complete_member(&g, 2, &json!("c"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.size, status.done, status.is_complete()),
        (3, 1, false)
    );
    assert_eq!(
        s.groups().group_results(&g).await.unwrap(),
        None,
        "not complete yet"
    );
    let again = s
        .groups()
        .complete_member(&g, 2, &json!("c"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.done, 1,
        "a member counts once, however often it completes"
    );
    s.groups()
        .complete_member(&g, 0, &json!({"a": 1}))
        .await
        .unwrap();
    let last = s
        .groups()
        .complete_member(&g, 1, &json!([2]))
        .await
        .unwrap()
        .unwrap();
    assert!(last.is_complete());
    let results = s.groups().group_results(&g).await.unwrap().unwrap();
    assert_eq!(
        results,
        vec![json!({"a": 1}), json!([2]), json!("c")],
        "in member order"
    );
});

coordination_case!(unknown_groups_have_no_status, |s| {
    let g = xylem_tests::unique_name("nogroup");
    assert_eq!(
        s.groups()
            .complete_member(&g, 0, &serde_json::json!(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.groups().group_results(&g).await.unwrap(), None);
    assert!(!s.groups().claim_chord(&g).await.unwrap());
});

coordination_case!(a_chord_is_claimed_once_among_concurrent_callers, |s| {
    let g = xylem_tests::unique_name("chord");
    s.groups().create_group(&g, 1).await.unwrap();
    let mut claims = Vec::new();
    for _ in 0..16 {
        let (s, g) = (s.clone(), g.clone());
        claims.push(tokio::spawn(async move {
            s.groups().claim_chord(&g).await.unwrap()
        }));
    }
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one caller runs the callback");
});

coordination_case!(locks_belong_to_their_owner, |s| {
    let l = xylem_tests::unique_name("lock");
    let ttl = Duration::from_secs(30);
    assert!(s.locks().acquire(&l, "a", ttl).await.unwrap());
    assert!(!s.locks().acquire(&l, "b", ttl).await.unwrap(), "held by a");
    assert!(
        s.locks().acquire(&l, "a", ttl).await.unwrap(),
        "re-acquiring your own lock extends it"
    );
    assert_eq!(
        s.locks().lock_owner(&l).await.unwrap().as_deref(),
        Some("a")
    );
    assert!(
        !s.locks().renew(&l, "b", ttl).await.unwrap(),
        "only the owner renews"
    );
    assert!(s.locks().renew(&l, "a", ttl).await.unwrap());
    assert!(
        !s.locks().release(&l, "b",).await.unwrap(),
        "only the owner releases"
    );
    assert!(s.locks().release(&l, "a").await.unwrap());
    assert_eq!(s.locks().lock_owner(&l).await.unwrap(), None);
    assert!(s.locks().acquire(&l, "b", ttl).await.unwrap(), "free again");
});

coordination_case!(expired_locks_can_be_taken_over, |s| {
    let l = xylem_tests::unique_name("lock");
    assert!(
        s.locks()
            .acquire(&l, "a", Duration::from_millis(200))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.locks().lock_owner(&l).await.unwrap(), None, "expired");
    assert!(
        !s.locks()
            .renew(&l, "a", Duration::from_secs(1))
            .await
            .unwrap(),
        "too late to renew"
    );
    assert!(
        s.locks()
            .acquire(&l, "b", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(!s.locks().release(&l, "a").await.unwrap());
    assert_eq!(
        s.locks().lock_owner(&l).await.unwrap().as_deref(),
        Some("b")
    );
});

coordination_case!(a_quota_is_never_passed_by_concurrent_takers, |s| {
    let q = xylem_tests::unique_name("quota");
    let ttl = Duration::from_secs(30);
    assert_eq!(s.quotas().quota_used(&q).await.unwrap(), 0);
    assert!(
        !s.quotas().take_quota(&q, 11, 10, ttl).await.unwrap(),
        "n over the limit"
    );
    assert_eq!(
        s.quotas().quota_used(&q).await.unwrap(),
        0,
        "a refused take changes nothing"
    );
    // 40 takers race for 25 units.
    let takers: Vec<_> = (0..40)
        .map(|_| {
            let (s, q) = (s.clone(), q.clone());
            tokio::spawn(async move { s.quotas().take_quota(&q, 1, 25, ttl).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for t in takers {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 25, "exactly the limit is handed out");
    assert_eq!(s.quotas().quota_used(&q).await.unwrap(), 25);
    assert!(!s.quotas().take_quota(&q, 1, 25, ttl).await.unwrap());
    assert!(
        s.quotas().take_quota(&q, 5, 30, ttl).await.unwrap(),
        "a wider limit has room"
    );
    assert_eq!(s.quotas().quota_used(&q).await.unwrap(), 30);
});

coordination_case!(an_expired_quota_starts_again, |s| {
    let q = xylem_tests::unique_name("quota");
    assert!(
        s.quotas()
            .take_quota(&q, 3, 3, Duration::from_millis(200))
            .await
            .unwrap()
    );
    assert!(
        !s.quotas()
            .take_quota(&q, 1, 3, Duration::from_secs(1))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.quotas().quota_used(&q).await.unwrap(), 0, "expired");
    assert!(
        s.quotas()
            .take_quota(&q, 2, 3, Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert_eq!(s.quotas().quota_used(&q).await.unwrap(), 2);
});

coordination_case!(a_canvas_definition_is_written_once, |s| {
    let id = xylem_tests::unique_name("canvas");
    assert_eq!(s.canvases().get_canvas(&id).await.unwrap(), None);
    assert!(s.canvases().put_canvas(&id, r#"{"v":1}"#).await.unwrap());
    assert!(
        !s.canvases().put_canvas(&id, r#"{"v":2}"#).await.unwrap(),
        "a second write is refused"
    );
    assert_eq!(
        s.canvases().get_canvas(&id).await.unwrap().as_deref(),
        Some(r#"{"v":1}"#)
    );
    // Eight writers racing: one wins.
    let race = xylem_tests::unique_name("canvas");
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (s, race) = (s.clone(), race.clone());
            tokio::spawn(async move { s.canvases().put_canvas(&race, &i.to_string()).await })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1);
});

coordination_case!(schedules_are_written_by_version_and_listed_when_due, |s| {
    use xylem_core::schedule::{Schedule, Spec};
    let store = s.schedules();
    let every = Spec::Every { every_ms: 60_000 };
    let a = Schedule::new("a-report", "hello.echo", every.clone(), 1_000).unwrap();
    assert_eq!(a.next_run, Some(61_000));
    assert_eq!(store.put_schedule(&a).await.unwrap(), Some(1));
    assert_eq!(
        store.put_schedule(&a).await.unwrap(),
        None,
        "the name is taken"
    );
    let mut read = store.get_schedule("a-report").await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    // Two writers of version 1: one wins, the other is told to read again.
    read.args = r#"{"v":2}"#.to_owned();
    assert_eq!(store.put_schedule(&read).await.unwrap(), Some(2));
    assert_eq!(store.put_schedule(&read).await.unwrap(), None);
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (s, mut edit) = (s.clone(), store_copy(&read, 2, i));
            tokio::spawn(async move {
                edit.next_run = Some(100_000 + i);
                s.schedules().put_schedule(&edit).await.unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        wins += usize::from(racer.await.unwrap().is_some());
    }
    assert_eq!(wins, 1, "one of eight racing edits of version 2 wins");
    let mut b = Schedule::new("b-sync", "hello.echo", every, 0).unwrap();
    b.next_run = Some(50_000);
    store.put_schedule(&b).await.unwrap();
    let mut off = Schedule::new("c-off", "hello.echo", Spec::At { at: 10 }, 0).unwrap();
    off.enabled = false;
    store.put_schedule(&off).await.unwrap();
    // Due: enabled, next run at or before now, earliest first.
    let due: Vec<String> = store
        .due_schedules(200_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(due, ["b-sync", "a-report"]);
    assert_eq!(store.due_schedules(60_000, 10).await.unwrap().len(), 1);
    assert_eq!(store.due_schedules(200_000, 1).await.unwrap().len(), 1);
    let names: Vec<String> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a-report", "b-sync", "c-off"]);
    assert!(store.remove_schedule("b-sync").await.unwrap());
    assert!(!store.remove_schedule("b-sync").await.unwrap());
    assert_eq!(store.due_schedules(200_000, 10).await.unwrap().len(), 1);
});

/// `read` as a writer that read version `version` would send it.
fn store_copy(
    read: &xylem_core::schedule::Schedule,
    version: u64,
    writer: i64,
) -> xylem_core::schedule::Schedule {
    let mut copy = read.clone();
    copy.version = version;
    copy.args = format!("{{\"writer\":{writer}}}");
    copy
}

coordination_case!(
    workflow_runs_are_written_by_version_listed_and_found_when_due,
    |s| {
        use xylem_core::store::RunFilter;
        use xylem_core::workflow::{Call, Run, RunState};
        let store = s.workflows();
        let mut a = Run::new("run-a", "order.process", "sha-1", r#"{"order":1}"#, 1_000);
        assert_eq!(store.put_run(&a).await.unwrap(), Some(1));
        assert_eq!(store.put_run(&a).await.unwrap(), None, "the id is taken");
        let mut read = store.get_run("run-a").await.unwrap().unwrap();
        assert_eq!((read.version, &read.input), (1, &a.input));
        // A step's write: history grown, waiting with no timer.
        read.history.push(Call::Now { value: 5 });
        read.state = RunState::Waiting;
        read.wake_at = None;
        assert_eq!(store.put_run(&read).await.unwrap(), Some(2));
        assert_eq!(
            store.put_run(&read).await.unwrap(),
            None,
            "version 1 is gone"
        );
        // Eight engines racing for version 2: one wins.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let (s, mut edit) = (s.clone(), read.clone());
                tokio::spawn(async move {
                    edit.version = 2;
                    edit.wake_at = Some(10_000 + i);
                    s.workflows().put_run(&edit).await.unwrap()
                })
            })
            .collect();
        let mut wins = 0;
        for racer in racers {
            wins += usize::from(racer.await.unwrap().is_some());
        }
        assert_eq!(wins, 1, "one of eight racing writes of version 2 wins");
        let got = store.get_run("run-a").await.unwrap().unwrap();
        assert_eq!(got.history, [Call::Now { value: 5 }]);

        a = Run::new("run-b", "order.process", "sha-1", "{}", 2_000);
        a.wake_at = Some(500);
        store.put_run(&a).await.unwrap();
        let mut done = Run::new("run-c", "report.build", "sha-2", "{}", 3_000);
        done.state = RunState::Succeeded;
        done.wake_at = None;
        store.put_run(&done).await.unwrap();
        // Due: a wake time at or before now, earliest first.
        let due: Vec<String> = store
            .due_runs(20_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due, ["run-b", "run-a"]);
        assert_eq!(store.due_runs(600, 10).await.unwrap().len(), 1);
        assert_eq!(store.due_runs(20_000, 1).await.unwrap().len(), 1);
        // Listed newest first, by workflow and by state.
        let ids = |runs: Vec<Run>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_runs(&RunFilter::default()).await.unwrap()),
            ["run-c", "run-b", "run-a"]
        );
        let by_workflow = RunFilter {
            workflow: Some("order.process".to_owned()),
            ..Default::default()
        };
        assert_eq!(
            ids(store.list_runs(&by_workflow).await.unwrap()),
            ["run-b", "run-a"]
        );
        let by_state = RunFilter {
            state: Some(RunState::Succeeded),
            limit: 5,
            ..Default::default()
        };
        assert_eq!(ids(store.list_runs(&by_state).await.unwrap()), ["run-c"]);
        assert!(store.get_run("nope").await.unwrap().is_none());
    }
);

coordination_case!(
    workflow_runs_are_written_and_read_in_batches_each_write_on_its_own,
    |s| {
        use xylem_core::workflow::{Run, RunState};
        let store = s.workflows();
        let new = |id: &str, at: i64| {
            let mut run = Run::new(id, "order.process", "sha-1", "{}", at);
            run.wake_at = Some(at);
            run
        };
        // Creates in one call; an id already taken loses alone.
        store.put_run(&new("batch-taken", 10)).await.unwrap();
        let written = store
            .put_runs(&[new("batch-a", 1), new("batch-taken", 2), new("batch-b", 3)])
            .await
            .unwrap();
        assert_eq!(written, [Some(1), None, Some(1)]);
        assert!(store.put_runs(&[]).await.unwrap().is_empty());
        let ids = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let read = store
            .get_runs(&ids(&["batch-b", "nope", "batch-a", "batch-taken"]))
            .await
            .unwrap();
        let found: Vec<Option<(String, i64)>> = read
            .iter()
            .map(|r| r.as_ref().map(|r| (r.id.clone(), r.created_at)))
            .collect();
        assert_eq!(
            found,
            [
                Some(("batch-b".to_owned(), 3)),
                None,
                Some(("batch-a".to_owned(), 1)),
                Some(("batch-taken".to_owned(), 10)),
            ],
            "in the order asked, the first write of a taken id kept"
        );
        // Updates in one call: each compares its own version; a stale one
        // is refused while the others are written.
        let mut a = read[2].clone().unwrap();
        let mut b = read[0].clone().unwrap();
        let mut stale = read[3].clone().unwrap();
        stale.version = 7;
        a.state = RunState::Waiting;
        a.wake_at = None;
        b.wake_at = Some(50);
        stale.wake_at = Some(60);
        let written = store
            .put_runs(&[a.clone(), stale, b.clone()])
            .await
            .unwrap();
        assert_eq!(written, [Some(2), None, Some(2)]);
        let again = store.put_runs(&[a, b]).await.unwrap();
        assert_eq!(again, [None, None], "version 1 is gone for both");
        let now = store.get_runs(&ids(&["batch-a", "batch-b"])).await.unwrap();
        let a = now[0].as_ref().unwrap();
        assert_eq!(
            (a.version, a.state, a.wake_at),
            (2, RunState::Waiting, None)
        );
        assert_eq!(now[1].as_ref().unwrap().wake_at, Some(50));
        // The due index follows each write of the batch.
        let due: Vec<String> = store
            .due_runs(100, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(due, ["batch-taken", "batch-b"]);
    }
);

coordination_case!(
    worker_records_are_replaced_by_id_and_dropped_when_kept_no_longer,
    |s| {
        use xylem_core::presence::{Processed, WorkerBeat, WorkerState};
        let beat = |id: &str, succeeded: u64| WorkerBeat {
            id: id.to_owned(),
            name: format!("worker-{id}"),
            host: "test-host".to_owned(),
            pid: 42,
            version: "0.0.0".to_owned(),
            queues: vec!["default".to_owned()],
            concurrency: 4,
            running: vec!["job-1".to_owned()],
            processed: Processed {
                succeeded,
                ..Processed::default()
            },
            started_at: 1_000,
            last_seen: 2_000,
            interval_ms: 5_000,
            state: WorkerState::Running,
        };
        let store = s.workers();
        assert!(store.list_workers().await.unwrap().is_empty());
        let keep = Duration::from_secs(60);
        store.put_worker(&beat("a", 1), keep).await.unwrap();
        store.put_worker(&beat("b", 1), keep).await.unwrap();
        // A later beat of `a` replaces its record.
        store.put_worker(&beat("a", 7), keep).await.unwrap();
        let mut listed = store.list_workers().await.unwrap();
        listed.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(listed, vec![beat("a", 7), beat("b", 1)]);
        // A record kept briefly is gone once that passes; the others stay.
        store
            .put_worker(&beat("brief", 1), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(store.list_workers().await.unwrap().len(), 3);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut listed = store.list_workers().await.unwrap();
        listed.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(listed, vec![beat("a", 7), beat("b", 1)]);
        // And a write after the lapse does not bring it back.
        store.put_worker(&beat("b", 2), keep).await.unwrap();
        let ids: Vec<String> = store
            .list_workers()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
    }
);
