//! The workflow engine on every store, with a real worker running the
//! activities as ordinary jobs (native task code, as in `worker.rs`) and
//! workflow code written as Rust closures over the [`Replayer`]: two
//! engines stepping the same runs; each activity runs once; durable sleep;
//! join sets; events with a timeout; child runs; cancel with compensation;
//! rewind; a diverging replay stopped as nondeterministic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use xylem_core::store::Stores;
use xylem_core::time::now_ms;
use xylem_core::workflow::{
    ActivityOptions, Call, Engine, Interrupt, Replayer, Run, RunState, StepEnd, WorkflowCatalog,
    WorkflowCode, step_job_id,
};
use xylem_core::{Client, TaskSpec};

use crate::worker::{NativeTasks, config, start};

type Body = dyn Fn(&mut Replayer) -> Result<String, Interrupt> + Send + Sync;

/// A workflow written as a Rust function of the replayer: what a Wasm
/// workflow's host calls amount to.
struct Closure(Box<Body>);

#[async_trait]
impl WorkflowCode for Closure {
    async fn step(&self, mut replayer: Replayer) -> (Replayer, StepEnd) {
        let end = match (self.0)(&mut replayer) {
            Ok(result) => StepEnd::Returned(Ok(result)),
            Err(Interrupt::Misuse(message)) if message.starts_with("workflow: ") => {
                StepEnd::Returned(Err(message["workflow: ".len()..].to_owned()))
            }
            Err(interrupt) => StepEnd::Interrupted(interrupt),
        };
        (replayer, end)
    }
}

/// The workflow's own failure (what `run` returning an error is).
fn failed(message: &str) -> Interrupt {
    Interrupt::Misuse(format!("workflow: {message}"))
}

/// Workflows by name, all on plugin version `v1`; replaceable mid-test.
#[derive(Default)]
struct Catalog(Mutex<HashMap<String, Arc<Closure>>>);

impl Catalog {
    fn define(
        &self,
        name: &str,
        body: impl Fn(&mut Replayer) -> Result<String, Interrupt> + Send + Sync + 'static,
    ) {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_owned(), Arc::new(Closure(Box::new(body))));
    }
}

#[async_trait]
impl WorkflowCatalog for Catalog {
    async fn current(&self, workflow: &str) -> Result<Option<String>, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .contains_key(workflow)
            .then(|| "v1".to_owned()))
    }

    async fn code(&self, workflow: &str, _plugin: &str) -> Result<Arc<dyn WorkflowCode>, String> {
        let code = self.0.lock().unwrap().get(workflow).cloned();
        code.map(|c| c as Arc<dyn WorkflowCode>)
            .ok_or_else(|| format!("no workflow {workflow}"))
    }
}

fn opts() -> ActivityOptions {
    ActivityOptions {
        max_retries: Some(0),
        ..Default::default()
    }
}

/// An activity that must succeed (its failure fails the workflow).
fn must(r: &mut Replayer, task: &str, args: &str) -> Result<String, Interrupt> {
    r.activity(task, args, opts())?
        .map_err(|(kind, message)| failed(&format!("{task}: {kind}: {message}")))
}

struct Setup {
    stores: Stores,
    catalog: Arc<Catalog>,
    engines: [Engine; 2],
}

async fn setup(stores: Stores) -> Setup {
    stores
        .plugins
        .put_plugin(
            "wf-native",
            b"wf",
            &["echo", "fail", "sleep"].map(TaskSpec::new),
        )
        .await
        .unwrap();
    let catalog = Arc::new(Catalog::default());
    let client = Client::new(stores.clone());
    let lease = Duration::from_secs(5);
    let engines = [
        Engine::new(client.clone(), catalog.clone(), "engine-a", lease),
        Engine::new(client, catalog.clone(), "engine-b", lease),
    ];
    Setup {
        stores,
        catalog,
        engines,
    }
}

/// Steps with both engines at once until run `id` is final.
async fn drive(s: &Setup, id: &str, within: Duration) -> Run {
    let deadline = Instant::now() + within;
    loop {
        let (a, b) = tokio::join!(
            s.engines[0].tick(now_ms(), 16),
            s.engines[1].tick(now_ms(), 16)
        );
        a.unwrap();
        b.unwrap();
        let run = s.stores.workflows.get_run(id).await.unwrap().unwrap();
        if run.state.is_final() {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end: {run:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn order(r: &mut Replayer) -> Result<String, Interrupt> {
    let input = r.run().input.clone();
    let valid = must(r, "echo", &format!(r#"{{"validated":{input}}}"#))?;
    let charged = must(r, "echo", &format!(r#"{{"charged":{valid}}}"#))?;
    r.sleep(300)?;
    must(r, "echo", &format!(r#"{{"shipped":{charged}}}"#))
}

worker_case!(
    an_order_runs_its_activities_once_under_two_engines,
    |stores| {
        let s = setup(stores).await;
        s.catalog.define("order.process", order);
        let tasks = Arc::new(NativeTasks::default());
        let worker = start(&s.stores, &tasks, config("wf-worker"));
        let run = s.engines[0]
            .start("order.process", r#"{"order":7}"#, None, now_ms())
            .await
            .unwrap();
        let started = Instant::now();
        let done = drive(&s, &run.id, Duration::from_secs(30)).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
        assert_eq!(
            done.result.as_deref(),
            Some(r#"{"shipped":{"charged":{"validated":{"order":7}}}}"#)
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "the sleep was slept"
        );
        // validate, charge, sleep, ship — each activity's job ran once.
        assert_eq!(done.history.len(), 4, "{:#?}", done.history);
        for (seq, call) in done.history.iter().enumerate() {
            if matches!(call, Call::Activity { .. }) {
                let job = step_job_id(&done, seq as u32, call);
                assert_eq!(tasks.runs_of(&job), 1, "activity {seq} ran once");
            }
        }
        assert!(
            s.engines[0]
                .start("nope", "{}", None, now_ms())
                .await
                .is_err()
        );
        worker.stop().await;
    }
);

worker_case!(join_sets_children_and_events_with_a_timeout, |stores| {
    let s = setup(stores).await;
    s.catalog.define("child.double", |r| {
        let n: i64 = r.run().input.parse().unwrap_or(0);
        let echoed = must(r, "echo", &(n * 2).to_string())?;
        Ok(echoed)
    });
    s.catalog.define("fan.out", |r| {
        let set = r.join_set()?;
        for n in 1..=3 {
            r.submit(
                set,
                Call::Activity {
                    task: "echo".to_owned(),
                    args: n.to_string(),
                    options: opts(),
                },
            )?;
        }
        r.submit(
            set,
            Call::Child {
                workflow: "child.double".to_owned(),
                input: "21".to_owned(),
            },
        )?;
        let mut total = 0i64;
        while let Some((_, result)) = r.await_next(set)? {
            total += result
                .map_err(|(_, m)| failed(&m))?
                .parse::<i64>()
                .unwrap_or(0);
        }
        let approval = r.await_event("approval", 60_000)?;
        let late = r.await_event("never", 200)?;
        Ok(format!(
            r#"{{"total":{total},"approval":{},"late":{}}}"#,
            approval.unwrap_or_else(|| "null".to_owned()),
            late.is_some()
        ))
    });
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&s.stores, &tasks, config("wf-worker"));
    let client = Client::new(s.stores.clone());
    let run = s.engines[0]
        .start("fan.out", "{}", None, now_ms())
        .await
        .unwrap();
    // Wait until it waits for the approval, then send it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        s.engines[0].tick(now_ms(), 16).await.unwrap();
        let now = s.stores.workflows.get_run(&run.id).await.unwrap().unwrap();
        if now
            .history
            .iter()
            .any(|c| matches!(c, Call::AwaitEvent { topic, .. } if topic == "approval"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{now:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    xylem_core::workflow::signal(&client, &run.id, "approval", r#"{"by":"ada"}"#, now_ms())
        .await
        .unwrap();
    let done = drive(&s, &run.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
    assert_eq!(
        done.result.as_deref(),
        Some(r#"{"total":48,"approval":{"by":"ada"},"late":false}"#),
        "1 + 2 + 3 + the child's 42; the approval; the second wait timed out"
    );
    let children = s
        .stores
        .workflows
        .list_runs(&xylem_core::store::RunFilter {
            workflow: Some("child.double".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(
        children[0].parent.as_ref().map(|p| p.run.as_str()),
        Some(run.id.as_str())
    );
    worker.stop().await;
});

worker_case!(
    cancel_lets_a_run_compensate_and_rewind_runs_steps_again,
    |stores| {
        let s = setup(stores).await;
        s.catalog.define("booking", |r| {
            must(r, "echo", r#""reserved""#)?;
            let approved = r.await_event("approval", 3_600_000)?;
            if r.cancelled()? {
                must(r, "echo", r#""released""#)?;
                return Err(failed("cancelled: the reservation was released"));
            }
            Ok(approved.unwrap_or_default())
        });
        s.catalog.define("flaky", |r| {
            let first = must(r, "echo", "1")?;
            let second = r.activity("fail", "{}", opts())?;
            Ok(format!("{first}:{}", second.is_ok()))
        });
        let tasks = Arc::new(NativeTasks::default());
        let worker = start(&s.stores, &tasks, config("wf-worker"));
        let client = Client::new(s.stores.clone());

        let run = s.engines[0]
            .start("booking", "{}", None, now_ms())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s
            .stores
            .workflows
            .get_run(&run.id)
            .await
            .unwrap()
            .unwrap()
            .history
            .iter()
            .any(|c| matches!(c, Call::AwaitEvent { .. }))
        {
            s.engines[1].tick(now_ms(), 16).await.unwrap();
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        xylem_core::workflow::request_cancel(&client, &run.id, "customer left")
            .await
            .unwrap();
        let done = drive(&s, &run.id, Duration::from_secs(30)).await;
        assert_eq!(done.state, RunState::Cancelled, "{done:#?}");
        assert!(
            done.history
                .iter()
                .any(|c| matches!(c, Call::Activity { args, .. } if args == r#""released""#)),
            "it compensated: {:#?}",
            done.history
        );

        // A failed step, then a rewind to before it: the step runs again (a
        // new job), the run goes on from there.
        let run = s.engines[0]
            .start("flaky", "{}", None, now_ms())
            .await
            .unwrap();
        let first = drive(&s, &run.id, Duration::from_secs(30)).await;
        assert_eq!(first.result.as_deref(), Some("1:false"));
        let failed_job = step_job_id(&first, 1, &first.history[1]);
        xylem_core::workflow::rewind(&client, &run.id, 1)
            .await
            .unwrap();
        let again = drive(&s, &run.id, Duration::from_secs(30)).await;
        assert_eq!(again.result.as_deref(), Some("1:false"));
        let new_job = step_job_id(&again, 1, &again.history[1]);
        assert_ne!(failed_job, new_job);
        assert_eq!(
            (tasks.runs_of(&failed_job), tasks.runs_of(&new_job)),
            (1, 1)
        );
        assert_eq!(
            (
                tasks.runs_of(&step_job_id(&first, 0, &first.history[0])),
                tasks.runs_of(&step_job_id(&again, 0, &again.history[0])),
            ),
            (1, 0),
            "the step before the rewind point is not run again"
        );
        assert!(
            xylem_core::workflow::rewind(&client, &run.id, 99)
                .await
                .is_err()
        );
        worker.stop().await;
    }
);

worker_case!(
    a_diverging_replay_is_stopped_as_nondeterministic,
    |stores| {
        let s = setup(stores).await;
        s.catalog
            .define("shifty", |r| must(r, "echo", r#""first""#));
        let tasks = Arc::new(NativeTasks::default());
        let run = s.engines[0]
            .start("shifty", "{}", None, now_ms())
            .await
            .unwrap();
        // One step: the activity is asked for (no worker yet: it waits).
        s.engines[0].tick(now_ms(), 16).await.unwrap();
        // The code changes under the run (what pinning a version prevents).
        s.catalog
            .define("shifty", |r| must(r, "echo", r#""second""#));
        let worker = start(&s.stores, &tasks, config("wf-worker"));
        let done = drive(&s, &run.id, Duration::from_secs(30)).await;
        assert_eq!(done.state, RunState::Failed);
        let error = done.error.unwrap();
        assert_eq!(error.kind, "nondeterministic");
        assert!(
            error.message.contains(r#"activity echo("first")"#)
                && error.message.contains(r#"activity echo("second")"#),
            "{}",
            error.message
        );
        worker.stop().await;
    }
);

/// The test process's Wasm runtime, with `plugins/order`'s tasks (the
/// order workflow's activities) pushed to `stores`.
async fn runtime_with_order_tasks(stores: &Stores) -> xylem_wasm::Runtime {
    let runtime = xylem_tests::runtime(&std::env::temp_dir().join("xylem-test-cache"));
    let tasks = std::fs::read(xylem_tests::plugin("order")).unwrap();
    xylem_wasm::push_plugin(&runtime, stores.plugins.as_ref(), &tasks)
        .await
        .unwrap();
    runtime
}

/// A worker running Wasm tasks (what `stores`' plugin routes name) on
/// `runtime`; send on the first value to stop it.
fn wasm_worker(
    stores: &Stores,
    runtime: &xylem_wasm::Runtime,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Arc<xylem_core::WorkerStats>>,
) {
    let registry = Arc::new(xylem_wasm::PluginRegistry::new(
        runtime.clone(),
        stores.plugins.clone(),
    ));
    let worker = xylem_core::Worker::new(stores.clone(), registry, config("wasm-worker")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    (stop, handle)
}

/// Two engines over `catalog` (the closure catalog left empty).
fn engines_over(stores: &Stores, catalog: Arc<dyn WorkflowCatalog>, lease: Duration) -> Setup {
    let client = Client::new(stores.clone());
    Setup {
        stores: stores.clone(),
        catalog: Arc::new(Catalog::default()),
        engines: [
            Engine::new(client.clone(), catalog.clone(), "engine-a", lease),
            Engine::new(client, catalog, "engine-b", lease),
        ],
    }
}

/// The workflows of one Wasm workflow plugin, as the engine's catalog.
struct WasmCatalog(xylem_wasm::WorkflowPlugin);

#[async_trait]
impl WorkflowCatalog for WasmCatalog {
    async fn current(&self, workflow: &str) -> Result<Option<String>, String> {
        Ok(self
            .0
            .workflows()
            .iter()
            .any(|(name, _)| name == workflow)
            .then(|| self.0.digest().to_owned()))
    }

    async fn code(&self, workflow: &str, plugin: &str) -> Result<Arc<dyn WorkflowCode>, String> {
        if plugin != self.0.digest() {
            return Err(format!("plugin {plugin} is not loaded"));
        }
        self.0
            .code(workflow)
            .ok_or_else(|| format!("no workflow {workflow}"))
    }
}

worker_case!(
    the_order_workflow_runs_as_wasm_with_wasm_activities,
    |stores| {
        let runtime = runtime_with_order_tasks(&stores).await;
        let (stop, worker) = wasm_worker(&stores, &runtime);

        let bytes = std::fs::read(xylem_tests::plugin("order-workflow")).unwrap();
        let plugin = runtime.load_workflow(&bytes).await.unwrap();
        let names: Vec<&str> = plugin.workflows().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "order.process",
                "order.express",
                "order.batch",
                "order.approve",
                "order.clock",
                "order.remind"
            ]
        );
        let catalog = Arc::new(WasmCatalog(plugin));
        let s = engines_over(&stores, catalog.clone(), Duration::from_secs(5));
        let run = s.engines[0]
            .start(
                "order.process",
                r#"{"id":"A-1","amount_cents":1250,"ship_after_ms":400}"#,
                None,
                now_ms(),
            )
            .await
            .unwrap();
        let done = drive(&s, &run.id, Duration::from_secs(60)).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
        let result: serde_json::Value =
            serde_json::from_str(done.result.as_deref().unwrap()).unwrap();
        assert_eq!(
            result,
            serde_json::json!({"order": "A-1", "receipt": "rcpt-A-1", "shipped": true})
        );
        assert_eq!(done.query_state.as_deref(), Some(r#"{"step":"shipped"}"#));
        let activities: Vec<&str> = done
            .history
            .iter()
            .filter_map(|c| match c {
                Call::Activity { task, .. } => Some(task.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(activities, ["order.validate", "order.charge", "order.ship"]);
        assert_each_activity_ran_once(&stores, &done).await;

        // WASI's clock and random read the run's values: the same in every
        // replay, whatever time it is; the recorded `now` moves.
        let run = s.engines[0]
            .start("order.clock", "{}", None, now_ms())
            .await
            .unwrap();
        let done = drive(&s, &run.id, Duration::from_secs(30)).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
        let seen: serde_json::Value =
            serde_json::from_str(done.result.as_deref().unwrap()).unwrap();
        assert_eq!(seen["wasi_ms"], seen["wasi_again"], "{seen}");
        assert_eq!(seen["wasi_ms"].as_i64(), Some(done.clock), "{seen}");
        assert_eq!(seen["map"], 1);
        let _ = stop.send(());
        worker.await.unwrap();
    }
);

worker_case!(
    a_deploy_does_not_disturb_runs_pinned_to_the_old_version,
    |stores| {
        let runtime = runtime_with_order_tasks(&stores).await;
        let (stop, worker) = wasm_worker(&stores, &runtime);
        let push = |name: &'static str| {
            let (runtime, stores) = (runtime.clone(), stores.clone());
            async move {
                let bytes = std::fs::read(xylem_tests::plugin(name)).unwrap();
                xylem_wasm::push_workflow_plugin(&runtime, stores.plugins.as_ref(), &bytes)
                    .await
                    .unwrap()
                    .digest()
                    .to_owned()
            }
        };
        let v1 = push("order-workflow").await;
        let catalog = Arc::new(xylem_wasm::StoreWorkflows::new(
            runtime.clone(),
            stores.plugins.clone(),
        ));
        let s = engines_over(&stores, catalog.clone(), Duration::from_secs(5));
        let old = s.engines[0]
            .start(
                "order.process",
                r#"{"id":"OLD","amount_cents":100,"ship_after_ms":1500}"#,
                None,
                now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(old.plugin, v1);
        // The old run reaches its sleep on v1 ...
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            s.engines[0].tick(now_ms(), 16).await.unwrap();
            let run = stores.workflows.get_run(&old.id).await.unwrap().unwrap();
            if run.history.iter().any(|c| matches!(c, Call::Sleep { .. })) {
                break;
            }
            assert!(Instant::now() < deadline, "{run:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... then v2, with the steps in another order, is deployed.
        let v2 = push("order-workflow-v2").await;
        assert_ne!(v1, v2);
        let new = s.engines[0]
            .start(
                "order.process",
                r#"{"id":"NEW","amount_cents":100,"ship_after_ms":100}"#,
                None,
                now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(new.plugin, v2, "new runs take the latest push");
        let old = drive(&s, &old.id, Duration::from_secs(60)).await;
        let new = drive(&s, &new.id, Duration::from_secs(60)).await;
        let steps = |run: &Run| -> Vec<String> {
            run.history
                .iter()
                .filter_map(|c| match c {
                    Call::Activity { task, .. } => Some(task.clone()),
                    Call::Sleep { .. } => Some("sleep".to_owned()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(old.state, RunState::Succeeded, "{old:#?}");
        assert_eq!(old.plugin, v1, "the old run stayed on v1");
        assert_eq!(
            steps(&old),
            ["order.validate", "order.charge", "sleep", "order.ship"]
        );
        assert_eq!(new.state, RunState::Succeeded, "{new:#?}");
        assert_eq!(
            steps(&new),
            ["order.validate", "sleep", "order.charge", "order.ship"]
        );
        assert!(new.result.as_deref().unwrap().contains(r#""version":2"#));
        let _ = stop.send(());
        worker.await.unwrap();
    }
);

worker_case!(
    an_upgrade_switches_a_run_only_if_its_history_replays,
    |stores| {
        let runtime = runtime_with_order_tasks(&stores).await;
        let mut digests = Vec::new();
        for name in ["order-workflow", "order-workflow-v2"] {
            let bytes = std::fs::read(xylem_tests::plugin(name)).unwrap();
            let plugin = runtime.load_workflow(&bytes).await.unwrap();
            stores
                .plugins
                .put_plugin(
                    plugin.digest(),
                    &bytes,
                    &[TaskSpec::new("workflow:order.process")],
                )
                .await
                .unwrap();
            digests.push(plugin.digest().to_owned());
        }
        let (v1, v2) = (digests[0].clone(), digests[1].clone());
        let catalog = Arc::new(xylem_wasm::StoreWorkflows::new(
            runtime.clone(),
            stores.plugins.clone(),
        ));
        let client = Client::new(stores.clone());
        let s = engines_over(&stores, catalog.clone(), Duration::from_secs(5));
        let start = |id: &'static str| {
            let mut run = Run::new(
                id,
                "order.process",
                &v1,
                r#"{"id":"U","amount_cents":5,"ship_after_ms":200}"#,
                now_ms(),
            );
            run.version = 0;
            run
        };
        // Waiting on its first call (validate, the same in both versions): it
        // replays on v2, so it moves.
        stores.workflows.put_run(&start("early")).await.unwrap();
        s.engines[0].tick(now_ms(), 16).await.unwrap();
        xylem_core::workflow::upgrade(&client, catalog.as_ref(), "early", &v2)
            .await
            .unwrap();
        assert_eq!(
            stores
                .workflows
                .get_run("early")
                .await
                .unwrap()
                .unwrap()
                .plugin,
            v2
        );

        // Past charge and asleep: v2 sleeps before charging, so it refuses,
        // naming both calls, and the run stays on v1.
        let (stop, worker) = wasm_worker(&stores, &runtime);
        stores.workflows.put_run(&start("late")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            s.engines[0].tick(now_ms(), 16).await.unwrap();
            let run = stores.workflows.get_run("late").await.unwrap().unwrap();
            if run.history.iter().any(|c| matches!(c, Call::Sleep { .. })) {
                break;
            }
            assert!(Instant::now() < deadline, "{run:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refused = xylem_core::workflow::upgrade(&client, catalog.as_ref(), "late", &v2)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("does not replay") && refused.contains("nondeterministic"),
            "{refused}"
        );
        assert_eq!(
            stores
                .workflows
                .get_run("late")
                .await
                .unwrap()
                .unwrap()
                .plugin,
            v1
        );
        let early = drive(&s, "early", Duration::from_secs(60)).await;
        let late = drive(&s, "late", Duration::from_secs(60)).await;
        assert!(early.result.unwrap().contains(r#""version":2"#));
        assert!(!late.result.unwrap().contains("version"));
        let _ = stop.send(());
        worker.await.unwrap();
    }
);

worker_case!(a_stub_step_waits_for_its_result_from_outside, |stores| {
    let s = setup(stores).await;
    s.catalog.define("expense", |r| {
        let approval = r.stub("approval", r#"{"amount":120}"#)?;
        match approval {
            Ok(by) => must(r, "echo", &format!(r#"{{"approved_by":{by}}}"#)),
            Err((_, why)) => Err(failed(&format!("refused: {why}"))),
        }
    });
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&s.stores, &tasks, config("wf-worker"));
    let client = Client::new(s.stores.clone());
    let run = s.engines[0]
        .start("expense", "{}", None, now_ms())
        .await
        .unwrap();
    s.engines[0].tick(now_ms(), 16).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.engines[0].tick(now_ms(), 16).await.unwrap();
    let waiting = s.stores.workflows.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(
        waiting.state,
        RunState::Waiting,
        "nothing runs a stub: {waiting:#?}"
    );
    let ok = |value: &str| xylem_core::workflow::StepOutcome::Ok {
        value: value.to_owned(),
        at: now_ms(),
    };
    // Only a stub may be completed; a stub only once.
    let missing = xylem_core::workflow::complete(&client, &run.id, 7, ok("1")).await;
    assert!(missing.unwrap_err().to_string().contains("not a stub"));
    xylem_core::workflow::complete(&client, &run.id, 0, ok(r#""ada""#))
        .await
        .unwrap();
    let again = xylem_core::workflow::complete(&client, &run.id, 0, ok(r#""bob""#)).await;
    assert!(again.unwrap_err().to_string().contains("completed already"));
    let done = drive(&s, &run.id, Duration::from_secs(30)).await;
    assert_eq!(done.result.as_deref(), Some(r#"{"approved_by":"ada"}"#));
    worker.stop().await;
});

// A cancel with a deadline: a compensation that outlasts it is cut off —
// the run ends `cancelled` (kind `compensation-deadline`) at the deadline,
// its code not run again.
worker_case!(a_compensation_past_its_deadline_is_cut_off, |stores| {
    let s = setup(stores).await;
    s.catalog.define("stubborn", |r| {
        r.await_event("approval", 3_600_000)?;
        if r.cancelled()? {
            // A compensation that would take an hour.
            r.sleep(3_600_000)?;
            return Err(failed("compensated"));
        }
        Ok("approved".to_owned())
    });
    let client = Client::new(s.stores.clone());
    let run = s.engines[0]
        .start("stubborn", "{}", None, now_ms())
        .await
        .unwrap();
    s.engines[0].tick(now_ms(), 16).await.unwrap();
    let asked = Instant::now();
    xylem_core::workflow::request_cancel_within(
        &client,
        &run.id,
        "customer left",
        Some(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    // Stepped at once (the code sees the cancel, starts its long sleep),
    // then at the deadline.
    s.engines[0].tick(now_ms(), 16).await.unwrap();
    let compensating = s.stores.workflows.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(compensating.state, RunState::Waiting, "{compensating:#?}");
    assert!(
        compensating.wake_at.unwrap() <= compensating.cancel_deadline.unwrap(),
        "due at its deadline at the latest: {compensating:#?}"
    );
    let done = drive(&s, &run.id, Duration::from_secs(30)).await;
    assert!(asked.elapsed() >= Duration::from_millis(400));
    assert_eq!(done.state, RunState::Cancelled, "{done:#?}");
    let error = done.error.as_ref().unwrap();
    assert_eq!(error.kind, "compensation-deadline", "{error:?}");
    assert!(error.message.contains("customer left"), "{error:?}");
});

// An activity's job cancelled by hand while it waits in its queue: the
// run hears it as the step's failure (`cancelled`) and goes on — here,
// fails — instead of waiting for a job that will never run.
worker_case!(a_cancelled_waiting_activity_ends_its_step, |stores| {
    let s = setup(stores).await;
    s.catalog.define("order.process", order);
    let run = s.engines[0]
        .start("order.process", r#"{"order":9}"#, None, now_ms())
        .await
        .unwrap();
    // No worker: the first activity's job is enqueued and stays queued.
    s.engines[0].tick(now_ms(), 16).await.unwrap();
    let waiting = s.stores.workflows.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(waiting.state, RunState::Waiting, "{waiting:#?}");
    let job = step_job_id(&waiting, 0, &waiting.history[0]);
    let record = s.stores.results.get(&job).await.unwrap().unwrap();
    assert_eq!(
        xylem_core::workflow::engine::activity_of(&record.headers),
        Some((run.id.clone(), 0)),
        "the job's record names its run and step"
    );
    let cancelled = xylem_core::cancel::cancel(&s.stores, std::slice::from_ref(&job))
        .await
        .unwrap();
    assert_eq!(cancelled, vec![xylem_core::cancel::CancelResult::Cancelled]);
    let done = drive(&s, &run.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, RunState::Failed, "{done:#?}");
    let error = done.error.as_ref().unwrap();
    assert!(
        format!("{error:?}").contains("cancelled"),
        "the run says why: {error:?}"
    );
});

worker_case!(continue_as_new_goes_on_in_a_fresh_run, |stores| {
    let s = setup(stores).await;
    s.catalog.define("counter", |r| {
        let n: u64 = r.run().input.parse().unwrap_or(0);
        must(r, "echo", &n.to_string())?;
        if n < 3 {
            r.continue_as_new(&(n + 1).to_string())?;
        }
        Ok(n.to_string())
    });
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&s.stores, &tasks, config("wf-worker"));
    let first = s.engines[0]
        .start("counter", "0", None, now_ms())
        .await
        .unwrap();
    let mut id = first.id.clone();
    let mut chain = Vec::new();
    let last = loop {
        let run = drive(&s, &id, Duration::from_secs(30)).await;
        assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
        assert!(run.history.len() <= 2, "each run's history stays short");
        chain.push(run.input.clone());
        match run.continued_as.clone() {
            Some(next) => {
                assert_eq!(
                    run.result.as_deref(),
                    Some(format!(r#"{{"continued_as":"{next}"}}"#).as_str())
                );
                id = next;
            }
            None => break run,
        }
    };
    assert_eq!(chain, ["0", "1", "2", "3"]);
    assert_eq!(last.result.as_deref(), Some("3"));
    worker.stop().await;
});

worker_case!(
    hostile_workflows_end_with_a_reason_and_hurt_no_other_run,
    |stores| {
        let dir = tempfile::tempdir().unwrap();
        let runtime = xylem_wasm::Runtime::new(xylem_wasm::RuntimeConfig {
            max_instances: 16,
            cache_dir: Some(dir.path().join("components")),
            workflow_step: xylem_wasm::WorkflowStepLimits {
                fuel: 2_000_000_000,
                time: Duration::from_secs(5),
                memory: 64 * 1024 * 1024,
            },
            ..xylem_wasm::RuntimeConfig::default()
        })
        .unwrap();
        for name in ["hostile-workflow", "order-workflow"] {
            let bytes = std::fs::read(xylem_tests::plugin(name)).unwrap();
            xylem_wasm::push_workflow_plugin(&runtime, stores.plugins.as_ref(), &bytes)
                .await
                .unwrap();
        }
        let catalog = Arc::new(xylem_wasm::StoreWorkflows::new(
            runtime.clone(),
            stores.plugins.clone(),
        ));
        let s = engines_over(&stores, catalog.clone(), Duration::from_secs(30));
        let normal = s.engines[0]
            .start("order.clock", "{}", None, now_ms())
            .await
            .unwrap();
        let mut hostile = Vec::new();
        for (workflow, kind, says) in [
            ("hostile.spin", "trap", "fuel exhausted"),
            ("hostile.flood", "misuse", "10000 calls"),
            ("hostile.hog", "trap", "memory limit"),
            ("hostile.huge", "misuse", "bytes"),
            ("hostile.panic", "trap", "unreachable"),
        ] {
            let run = s.engines[0]
                .start(workflow, "{}", None, now_ms())
                .await
                .unwrap();
            hostile.push((run.id, workflow, kind, says));
        }
        // Fork bombs, each in a tree that may start 8 runs.
        let bombs = start_trees(&s.engines[0], &["hostile.fork", "hostile.swarm"], 8).await;
        let started = Instant::now();
        let done = drive(&s, &normal.id, Duration::from_secs(60)).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
        for (_, root) in &bombs {
            drive(&s, root, Duration::from_secs(60)).await;
        }
        settle(&s.engines[1], Duration::from_secs(60)).await;
        for (workflow, root) in &bombs {
            assert_tree_bounded(&stores, workflow, root, 8).await;
        }
        for (id, workflow, kind, says) in hostile {
            let run = drive(&s, &id, Duration::from_secs(60)).await;
            assert_eq!(run.state, RunState::Failed, "{workflow}: {run:#?}");
            let error = run.error.unwrap();
            assert_eq!(error.kind, kind, "{workflow}: {}", error.message);
            assert!(
                error.message.contains(says),
                "{workflow}: {}",
                error.message
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "every hostile run ended within its budgets"
        );
    }
);

/// Each activity of `run` ran as one job, once.
async fn assert_each_activity_ran_once(stores: &Stores, run: &Run) {
    for (seq, call) in run.history.iter().enumerate() {
        if matches!(call, Call::Activity { .. }) {
            let job = step_job_id(run, seq as u32, call);
            let record = stores.results.get(&job).await.unwrap().unwrap();
            assert_eq!(record.attempt, 1, "{job} ran once");
        }
    }
}

/// Two engines over the workflows of plugin `bytes`, loaded on `runtime`.
async fn wasm_engines(stores: &Stores, runtime: &xylem_wasm::Runtime, bytes: &[u8]) -> Setup {
    let plugin = runtime.load_workflow(bytes).await.unwrap();
    engines_over(
        stores,
        Arc::new(WasmCatalog(plugin)),
        Duration::from_secs(5),
    )
}

/// `runtime`'s steps that started an instance, went on in a kept one,
/// and instances parked now.
fn assert_kept(runtime: &xylem_wasm::Runtime, expected: (u64, u64, usize)) {
    let kept = runtime.kept_workflow_stats();
    assert_eq!(
        (kept.started, kept.resumed, kept.parked),
        expected,
        "{kept:?}"
    );
}

/// A runtime of its own for workflows (so its kept-instance counts are
/// this test's), keeping at most `kept` instances, with the test cache.
fn workflow_runtime(kept: usize) -> xylem_wasm::Runtime {
    xylem_wasm::Runtime::new(xylem_wasm::RuntimeConfig {
        cache_dir: Some(
            std::env::temp_dir()
                .join("xylem-test-cache")
                .join("components"),
        ),
        kept_workflows: xylem_wasm::KeptLimits {
            instances: kept,
            ..xylem_wasm::KeptLimits::default()
        },
        ..xylem_wasm::RuntimeConfig::default()
    })
    .unwrap()
}

/// One tick of engine `a`, then of engine `b`.
async fn tick_both(s: &Setup) {
    s.engines[0].tick(now_ms(), 16).await.unwrap();
    s.engines[1].tick(now_ms(), 16).await.unwrap();
}

/// `order.clock`'s WASI clock read the run's own start, before and after
/// its sleep, however the code went on.
fn assert_clock_replayed(run: &Run) {
    assert_eq!(run.state, RunState::Succeeded, "{run:#?}");
    let seen: serde_json::Value = serde_json::from_str(run.result.as_deref().unwrap()).unwrap();
    assert_eq!(seen["wasi_ms"].as_i64(), Some(run.clock), "{seen}");
    assert_eq!(seen["wasi_again"].as_i64(), Some(run.clock), "{seen}");
}

worker_case!(
    a_waiting_run_goes_on_in_its_kept_instance_and_replays_only_when_it_must,
    |stores| {
        let tasks = runtime_with_order_tasks(&stores).await;
        let (stop, worker) = wasm_worker(&stores, &tasks);
        let bytes = std::fs::read(xylem_tests::plugin("order-workflow")).unwrap();
        let runtime = workflow_runtime(64);
        let s = wasm_engines(&stores, &runtime, &bytes).await;

        // `order.clock` waits once (a sleep, no activity: no other writer
        // races its steps): its second step goes on in the first step's
        // instance, which is let go when the run ends.
        let run = s.engines[0]
            .start("order.clock", "{}", None, now_ms())
            .await
            .unwrap();
        assert_clock_replayed(&drive(&s, &run.id, Duration::from_secs(30)).await);
        assert_kept(&runtime, (1, 1, 0));

        // Another step written since (another engine's, or this one's
        // write lost): the kept instance is stale and the code replays.
        let run = s.engines[0]
            .start("order.clock", "{}", None, now_ms())
            .await
            .unwrap();
        tick_both(&s).await;
        let mut waiting = stores.workflows.get_run(&run.id).await.unwrap().unwrap();
        assert_eq!(waiting.state, RunState::Waiting, "{waiting:#?}");
        assert_eq!(runtime.kept_workflow_stats().parked, 1);
        waiting.step_mark = "stepped-elsewhere".to_owned();
        assert!(stores.workflows.put_run(&waiting).await.unwrap().is_some());
        assert_clock_replayed(&drive(&s, &run.id, Duration::from_secs(30)).await);
        assert_kept(&runtime, (3, 1, 0));

        // With activities: steps go on in the kept instance (a step whose
        // write lost to its activity's end replays), each activity once.
        let run = s.engines[0]
            .start(
                "order.process",
                r#"{"id":"K-1","amount_cents":700,"ship_after_ms":300}"#,
                None,
                now_ms(),
            )
            .await
            .unwrap();
        let done = drive(&s, &run.id, Duration::from_secs(60)).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
        let kept = runtime.kept_workflow_stats();
        assert!(kept.resumed >= 2, "{kept:?}");
        assert_each_activity_ran_once(&stores, &done).await;

        // None kept: every step replays in a new instance.
        let runtime = workflow_runtime(0);
        let s = wasm_engines(&stores, &runtime, &bytes).await;
        let run = s.engines[0]
            .start("order.clock", "{}", None, now_ms())
            .await
            .unwrap();
        assert_clock_replayed(&drive(&s, &run.id, Duration::from_secs(30)).await);
        assert_kept(&runtime, (2, 0, 0));
        let _ = stop.send(());
        worker.await.unwrap();
    }
);

worker_case!(
    a_run_schedules_another_for_later_and_does_not_wait_for_it,
    |stores| {
        let runtime = runtime_with_order_tasks(&stores).await;
        let (stop, worker) = wasm_worker(&stores, &runtime);
        let bytes = std::fs::read(xylem_tests::plugin("order-workflow")).unwrap();
        let s = wasm_engines(&stores, &runtime, &bytes).await;

        let remind = s.engines[0]
            .start(
                "order.remind",
                r#"{"order":{"id":"R-1","amount_cents":900},"after_ms":1500}"#,
                None,
                now_ms(),
            )
            .await
            .unwrap();
        let reminded = drive(&s, &remind.id, Duration::from_secs(30)).await;
        assert_eq!(reminded.state, RunState::Succeeded, "{reminded:#?}");
        let said: serde_json::Value =
            serde_json::from_str(reminded.result.as_deref().unwrap()).unwrap();
        let at = said["at_ms"].as_i64().unwrap();
        let id = said["scheduled"].as_str().unwrap().to_owned();
        let (seq, call) = reminded
            .history
            .iter()
            .enumerate()
            .find(|(_, c)| matches!(c, Call::ScheduleAt { .. }))
            .unwrap();
        assert_eq!(
            id,
            step_job_id(&reminded, seq as u32, call),
            "the id is the call's"
        );

        // It ended without waiting: the scheduled run exists, waits for
        // its time, has no parent, and is not stepped before it.
        let scheduled = stores.workflows.get_run(&id).await.unwrap().unwrap();
        assert_eq!(scheduled.workflow, "order.express");
        assert_eq!(scheduled.state, RunState::Waiting, "{scheduled:#?}");
        assert_eq!(scheduled.wake_at, Some(at));
        assert!(scheduled.parent.is_none());
        if now_ms() < at - 300 {
            tick_both(&s).await;
            let early = stores.workflows.get_run(&id).await.unwrap().unwrap();
            assert!(
                early.history.is_empty(),
                "stepped before its time: {early:#?}"
            );
        }
        let done = drive(&s, &id, Duration::from_secs(60)).await;
        assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
        let first = step_job_id(&done, 0, &done.history[0]);
        let job = stores.results.get(&first).await.unwrap().unwrap();
        assert!(
            job.history[0].at >= at,
            "its first activity was enqueued at {}, before {at}",
            job.history[0].at
        );

        // A workflow that cannot be made: the call fails `refused`, and
        // the code decides (here it fails the run, saying why).
        let refused = s.engines[0]
            .start(
                "order.remind",
                r#"{"order":{},"workflow":"order.nope","after_ms":10}"#,
                None,
                now_ms(),
            )
            .await
            .unwrap();
        let refused = drive(&s, &refused.id, Duration::from_secs(30)).await;
        assert_eq!(refused.state, RunState::Failed, "{refused:#?}");
        let error = refused.error.unwrap();
        assert!(error.message.contains("order.nope"), "{}", error.message);
        let _ = stop.send(());
        worker.await.unwrap();
    }
);

/// Schedules copies of itself, at once, whatever it is answered: a fork
/// bomb by `schedule-at`.
fn schedule_bomb(r: &mut Replayer) -> Result<String, Interrupt> {
    loop {
        let _ = r.schedule_at("bomb.schedule", "{}", 0)?;
    }
}

/// Submits a hundred child copies of itself and waits for them all: a
/// fork bomb by child workflows.
fn child_bomb(r: &mut Replayer) -> Result<String, Interrupt> {
    let set = r.join_set()?;
    for _ in 0..100 {
        let child = Call::Child {
            workflow: "bomb.children".to_owned(),
            input: "{}".to_owned(),
        };
        r.submit(set, child)?;
    }
    while r.await_next(set)?.is_some() {}
    Ok("null".to_owned())
}

/// A root run of each of `workflows`, in a tree that may start `limit`
/// runs: (workflow, root id).
async fn start_trees(
    engine: &Engine,
    workflows: &[&'static str],
    limit: u64,
) -> Vec<(&'static str, String)> {
    let mut roots = Vec::new();
    for &workflow in workflows {
        let options = xylem_core::workflow::StartOptions {
            max_descendants: Some(limit),
            ..Default::default()
        };
        let root = engine
            .start_with(workflow, "{}", options, now_ms())
            .await
            .unwrap();
        roots.push((workflow, root.id));
    }
    roots
}

/// Steps with `engine` until nothing is due, at most `within`.
async fn settle(engine: &Engine, within: Duration) {
    let deadline = Instant::now() + within;
    while engine.tick(now_ms(), 64).await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "runs still due after {within:?}");
    }
}

/// Asserts that the runs of `workflow` in the tree under `root` are
/// `root` and exactly the runs its calls were not refused, at most
/// `limit`, all ended, and that the tree was refused.
async fn assert_tree_bounded(stores: &Stores, workflow: &str, root: &str, limit: usize) {
    let filter = xylem_core::store::RunFilter {
        workflow: Some(workflow.to_owned()),
        limit: 10_000,
        ..Default::default()
    };
    let runs: Vec<Run> = stores
        .workflows
        .list_runs(&filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.root() == root)
        .collect();
    let started: usize = runs
        .iter()
        .map(|r| {
            r.history
                .iter()
                .enumerate()
                .filter(|(seq, call)| {
                    xylem_core::workflow::tree::starts_run(call)
                        && r.outcomes
                            .get(&(*seq as u32))
                            .is_none_or(|o| !xylem_core::workflow::tree::is_refusal(o))
                })
                .count()
        })
        .sum();
    assert!(runs.len() > 1, "{workflow}: the tree started runs");
    assert!(
        runs.len() <= limit + 1,
        "{workflow}: {} runs in a tree that may start {limit}",
        runs.len()
    );
    assert_eq!(
        runs.len(),
        started + 1,
        "{workflow}: each run told started exists"
    );
    for run in &runs {
        assert!(run.state.is_final(), "{workflow}: {run:#?}");
        if let Some(error) = &run.error {
            // A run looping on `schedule-at` past its quota ends out of
            // calls: the refusals after the first cost no step each.
            assert_eq!(error.kind, "misuse", "{workflow}: {}", error.message);
            assert!(error.message.contains("10000 calls"), "{}", error.message);
        }
    }
    let refusals = runs
        .iter()
        .flat_map(|r| r.outcomes.values())
        .filter(|o| xylem_core::workflow::tree::is_refusal(o))
        .count();
    assert!(refusals > 0, "{workflow}: the tree was never refused");
}

worker_case!(
    a_tree_of_runs_starts_no_more_runs_than_its_quota,
    |stores| {
        let s = setup(stores.clone()).await;
        s.catalog.define("bomb.schedule", schedule_bomb);
        s.catalog.define("bomb.children", child_bomb);
        let roots = start_trees(&s.engines[0], &["bomb.schedule", "bomb.children"], 12).await;
        for (_, root) in &roots {
            drive(&s, root, Duration::from_secs(60)).await;
        }
        settle(&s.engines[0], Duration::from_secs(120)).await;
        for (workflow, root) in &roots {
            assert_tree_bounded(&stores, workflow, root, 12).await;
        }

        // A root that set no limit has its engine's (the worker's
        // `--max-descendants`); a refused run started nothing.
        let engine = Engine::new(
            Client::new(stores.clone()),
            s.catalog.clone(),
            "engine-c",
            Duration::from_secs(5),
        )
        .with_max_descendants(3);
        let root = engine
            .start("bomb.schedule", "{}", None, now_ms())
            .await
            .unwrap();
        settle(&engine, Duration::from_secs(60)).await;
        assert_tree_bounded(&stores, "bomb.schedule", &root.id, 3).await;
    }
);
