//! `xylem demo`: the whole platform in one process on a SQLite file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use xylem_core::canvas::{Canvas, Node};
use xylem_core::schedule::{Schedule, Spec, beat};
use xylem_core::{
    Client, ClientError, EnqueueRequest, JobOptions, TaskRecord, Worker, WorkerConfig,
};
use xylem_wasm::{PluginRegistry, Runtime, RuntimeConfig, push_plugin};

use crate::format;

/// Build the example plugins, start a worker on a fresh SQLite file, push
/// the plugins, enqueue a handful of jobs (one that fails and retries, one
/// killed by its time limit, one out of memory, one rejected, a greeting
/// in C, Python and JavaScript — each if its toolchain is installed), and
/// print what happened to each.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Folder for the demo's SQLite file (default: a new temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The Xylem repository (holding plugins/); default: the current folder.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Then serve the HTTP API and the web dashboard over the demo's store
    /// (default address 127.0.0.1:8080) until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    serve: Option<std::net::SocketAddr>,
}

const DOCUMENT: &str = "Xylem runs background jobs. Each job runs in a fresh sandbox.\n\
A sandbox has fuel, memory and time limits! Jobs that fail are retried.\n\
Jobs that keep failing go to the dead-letter queue. Is that not neat?\n";

/// An example plugin in another language than Rust, and the demo's job
/// for it.
#[derive(Debug)]
struct Language {
    /// Its folder under `plugins/`.
    dir: &'static str,
    /// The task the demo runs.
    task: &'static str,
    /// The demo table's description.
    what: &'static str,
}

const LANGUAGES: [Language; 3] = [
    Language {
        dir: "c",
        task: "c.greet",
        what: "a greeting, in C",
    },
    Language {
        dir: "python",
        task: "py.greet",
        what: "a greeting, in Python",
    },
    Language {
        dir: "javascript",
        task: "js.greet",
        what: "a greeting, in JavaScript",
    },
];

/// Waits for job `id` to finish; a job enqueued later by the workers (a
/// chord's callback, a schedule's tick) may not exist yet.
async fn wait_for(client: &Client, id: &str) -> anyhow::Result<TaskRecord> {
    let started = std::time::Instant::now();
    loop {
        match client.wait(id, Duration::from_secs(120)).await {
            Err(ClientError::NoSuchJob(_)) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

fn step(text: &str) {
    eprintln!("\n==> {text}");
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let plugins_dir = args.repo.join("plugins");
    anyhow::ensure!(
        plugins_dir.join("hello/Cargo.toml").is_file(),
        "no plugins/ in {}: run the demo from the Xylem repository (or pass --repo PATH)",
        args.repo.display()
    );
    let dir = match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
        None => std::env::temp_dir().join(format!("xylem-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("xylem.db");
    let _ = std::fs::remove_file(&db);
    let store_url = format!("sqlite://{}", db.display());

    step("Building the example plugins (wasm32-wasip2)");
    let mut components = Vec::new();
    for name in ["hello", "textstats", "hostile", "order", "order-workflow"] {
        let crate_dir = plugins_dir.join(name);
        let wasm =
            tokio::task::spawn_blocking(move || xylem_wasm::build_plugin(&crate_dir)).await??;
        eprintln!("    {name}: {}", wasm.display());
        components.push(wasm);
    }
    // The same greeting in the other languages, each if its toolchain is
    // installed; the table says how to install a missing one.
    let mut skipped: Vec<(&Language, String)> = Vec::new();
    for language in &LANGUAGES {
        let dir = plugins_dir.join(language.dir);
        match tokio::task::spawn_blocking(move || xylem_wasm::build_plugin(&dir)).await? {
            Ok(wasm) => {
                eprintln!("    {}: {}", language.dir, wasm.display());
                components.push(wasm);
            }
            Err(e) => {
                eprintln!("    {}: skipped: {e}", language.dir);
                let why = match e {
                    xylem_wasm::BuildError::Missing { tool, install, .. } => {
                        format!("needs {tool}: {install}")
                    }
                    e => e.to_string(),
                };
                skipped.push((language, why));
            }
        }
    }

    step(&format!("Opening the store {store_url}"));
    let store = crate::store::open(&store_url).await?;
    let runtime = Runtime::new(RuntimeConfig::default())?;

    step(
        "Pushing the plugins (an interpreter in a component takes a while to compile the first time; it is cached after)",
    );
    for wasm in &components {
        let bytes = tokio::fs::read(wasm).await?;
        let started = std::time::Instant::now();
        if xylem_wasm::is_workflow_component(&bytes) {
            let plugin =
                xylem_wasm::push_workflow_plugin(&runtime, store.stores.plugins.as_ref(), &bytes)
                    .await?;
            let names: Vec<&str> = plugin.workflows().iter().map(|(n, _)| n.as_str()).collect();
            eprintln!(
                "    sha256:{}  {:>9}  {:>8}  workflows: {}",
                &plugin.digest()[..12],
                format::bytes(bytes.len() as u64),
                format::duration(started.elapsed()),
                names.join(" ")
            );
            continue;
        }
        let plugin = push_plugin(&runtime, store.stores.plugins.as_ref(), &bytes).await?;
        let names: Vec<&str> = plugin.tasks().iter().map(|t| t.name.as_str()).collect();
        eprintln!(
            "    sha256:{}  {:>9}  {:>8}  {}",
            &plugin.digest()[..12],
            format::bytes(bytes.len() as u64),
            format::duration(started.elapsed()),
            names.join(" ")
        );
    }

    step("Starting a worker (4 at a time) and a workflow engine");
    let engine = xylem_core::workflow::Engine::new(
        Client::new(store.stores.clone()),
        Arc::new(xylem_wasm::StoreWorkflows::new(
            runtime.clone(),
            store.stores.plugins.clone(),
        )),
        "demo-worker",
        Duration::from_secs(10),
    );
    let background_engine = engine.spawn(Duration::from_millis(50));
    let registry = Arc::new(PluginRegistry::new(runtime, store.stores.plugins.clone()));
    let worker = Worker::new(
        store.stores.clone(),
        registry,
        WorkerConfig {
            concurrency: 4,
            grace: Duration::from_secs(5),
            name: "demo-worker".to_owned(),
            ..WorkerConfig::default()
        },
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    step("Enqueueing jobs");
    let client = Client::new(store.stores.clone());
    let fast_retry = JobOptions {
        retry_backoff_ms: Some(200),
        ..JobOptions::default()
    };
    let jobs: Vec<(&str, EnqueueRequest)> = vec![
        (
            "a greeting",
            EnqueueRequest::new("hello.greet", json!({"name": "Ada"}).to_string()),
        ),
        (
            "an echo",
            EnqueueRequest::new("hello.echo", json!({"numbers": [1, 2, 3]}).to_string()),
        ),
        (
            "text statistics",
            EnqueueRequest::new(
                "text.stats",
                json!({"text": DOCUMENT, "top": 3}).to_string(),
            ),
        ),
        (
            "fails twice, then succeeds",
            EnqueueRequest {
                options: fast_retry.clone(),
                ..EnqueueRequest::new("hello.flaky", json!({"fail_times": 2}).to_string())
            },
        ),
        (
            "always fails: retries, then dead",
            EnqueueRequest {
                options: fast_retry.clone(),
                max_retries: Some(2),
                ..EnqueueRequest::new("hello.flaky", json!({"fail_times": 99}).to_string())
            },
        ),
        (
            "infinite loop, 1 s time limit",
            EnqueueRequest {
                max_retries: Some(0),
                options: JobOptions {
                    hard_time_limit_ms: Some(1000),
                    ..JobOptions::default()
                },
                ..EnqueueRequest::new("hostile.loop", "{}")
            },
        ),
        (
            "memory bomb, 32 MiB cap",
            EnqueueRequest {
                options: JobOptions {
                    max_memory_bytes: Some(32 << 20),
                    ..JobOptions::default()
                },
                ..EnqueueRequest::new("hostile.memory-bomb", "{}")
            },
        ),
        (
            "tries to read /etc/passwd",
            EnqueueRequest {
                max_retries: Some(0),
                ..EnqueueRequest::new("hostile.read-file", "{}")
            },
        ),
        (
            "bad arguments: rejected",
            EnqueueRequest::new("hello.greet", json!({"nom": "x"}).to_string()),
        ),
        (
            "delayed by 1 s, high priority",
            EnqueueRequest {
                priority: Some(9),
                ..EnqueueRequest::new("hello.greet", json!({"name": "Grace"}).to_string())
                    .delay(Duration::from_secs(1))
            },
        ),
    ];
    let mut jobs = jobs;
    for language in &LANGUAGES {
        if !skipped.iter().any(|(l, _)| l.dir == language.dir) {
            jobs.push((
                language.what,
                EnqueueRequest::new(language.task, json!({"name": "Ada"}).to_string()),
            ));
        }
    }
    let mut ids = Vec::new();
    for (what, req) in jobs {
        let envelope = client.enqueue(req).await?;
        eprintln!(
            "    {}  {:<20} {what}",
            format::short_id(&envelope.id),
            envelope.task
        );
        ids.push((what, envelope.id));
    }

    // A chord (docs/canvas.md): two greetings, then an echo of both; its
    // callback's job is the row.
    let chord = Canvas::new(Node::chord(
        vec![
            Node::task("hello.greet", Some(json!({"name": "Ada"}).to_string())),
            Node::task("hello.greet", Some(json!({"name": "Grace"}).to_string())),
        ],
        Node::task("hello.echo", None),
    ))
    .map_err(anyhow::Error::msg)?;
    client.enqueue_canvas(&chord).await?;
    if let Some(Node::Task(callback)) = chord.node(&[2]) {
        eprintln!(
            "    {}  {:<20} a chord: two greetings, then an echo of both",
            format::short_id(&chord.id),
            "chord"
        );
        ids.push(("a chord: greetings, then an echo", callback.id.clone()));
    }
    // A schedule (docs/schedules.md) fired by a beat in this process; its
    // first tick's job is the row.
    let mut schedule = Schedule::new(
        "demo-every-second",
        "hello.echo",
        Spec::Every { every_ms: 1000 },
        xylem_core::time::now_ms(),
    )?;
    schedule.args = json!({"from": "a schedule"}).to_string();
    store.stores.schedules.put_schedule(&schedule).await?;
    let (stop_beat, beat_stopped) = tokio::sync::oneshot::channel::<()>();
    let beat = tokio::spawn(beat::run(
        client.clone(),
        Duration::from_millis(200),
        async {
            let _ = beat_stopped.await;
        },
    ));
    if let Some(tick) = schedule.next_run {
        eprintln!("    schedule demo-every-second: hello.echo every 1 s (a beat fires it)");
        ids.push((
            "fired by a schedule, every 1 s",
            beat::tick_job_id(&schedule.name, tick),
        ));
    }

    // A durable workflow (docs/workflows.md): validate → charge → a
    // durable sleep of 1 s → ship, each step an activity run as a job.
    let order = engine
        .start(
            "order.process",
            &json!({"id": "demo-1", "amount_cents": 1250, "ship_after_ms": 1000}).to_string(),
            None,
            xylem_core::time::now_ms(),
        )
        .await?;
    eprintln!(
        "    {}  {:<20} a workflow: validate → charge → sleep 1 s → ship",
        format::short_id(&order.id),
        "order.process"
    );

    step("Waiting for every job to finish");
    let mut records: Vec<(&str, TaskRecord)> = Vec::new();
    for (what, id) in &ids {
        records.push((what, wait_for(&client, id).await?));
    }
    let run = loop {
        let run = client.stores().workflows.get_run(&order.id).await?;
        match run {
            Some(run) if run.state.is_final() => break run,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    background_engine.stop().await;
    let _ = stop_beat.send(());
    let _ = beat.await;
    let _ = stop.send(());
    let _ = worker.await;

    let mut rows: Vec<Vec<String>> = records
        .iter()
        .map(|(what, r)| {
            vec![
                format::short_id(&r.id).to_owned(),
                r.task.clone(),
                (*what).to_owned(),
                r.state.to_string(),
                r.attempt.to_string(),
                r.usage
                    .map(|u| format::duration(u.wall_time()))
                    .unwrap_or_default(),
                r.usage.map(|u| format::count(u.fuel)).unwrap_or_default(),
                format::clip(&format::record_summary(r), 70),
            ]
        })
        .collect();
    let activities = run
        .history
        .iter()
        .filter(|c| matches!(c, xylem_core::workflow::Call::Activity { .. }))
        .count();
    rows.push(vec![
        format::short_id(&run.id).to_owned(),
        run.workflow.clone(),
        format!("a durable workflow: {activities} activities and a sleep"),
        run.state.as_str().to_owned(),
        String::new(),
        format::duration(Duration::from_millis(
            u64::try_from(run.updated_at - run.created_at).unwrap_or(0),
        )),
        String::new(),
        format::clip(
            run.result
                .as_deref()
                .or(run.error.as_ref().map(|e| e.message.as_str()))
                .unwrap_or_default(),
            70,
        ),
    ]);
    for (language, why) in &skipped {
        rows.push(vec![
            "-".to_owned(),
            language.task.to_owned(),
            language.what.to_owned(),
            "skipped".to_owned(),
            String::new(),
            String::new(),
            String::new(),
            format::clip(why, 70),
        ]);
    }
    println!();
    println!(
        "{}",
        format::table(
            &[
                "JOB",
                "TASK",
                "WHAT",
                "STATE",
                "ATTEMPTS",
                "TIME",
                "FUEL",
                "RESULT / ERROR"
            ],
            &rows
        )
    );
    let store_arg = format!("--store sqlite://{}", db.display());
    println!();
    println!("Everything is kept in {}. Look around:", db.display());
    println!("  xylem {store_arg} task ls");
    println!("  xylem {store_arg} task show {}", ids[3].1);
    println!("  xylem {store_arg} dlq ls");
    println!("  xylem {store_arg} queues");
    println!("  xylem {store_arg} tasks");
    println!("  xylem {store_arg} workflow show {}", run.id);
    if let Some(addr) = args.serve {
        println!();
        println!(
            "The dashboard: http://{addr}/ (Ctrl-C to stop; `xylem {store_arg} worker` runs what you enqueue there)"
        );
        let shutdown = super::worker::ShutdownSignal::install();
        return crate::serve::run(
            &store_url,
            crate::serve::ServeArgs::on(addr),
            shutdown.wait(),
        )
        .await;
    }
    Ok(ExitCode::SUCCESS)
}
