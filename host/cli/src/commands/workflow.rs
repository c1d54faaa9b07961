//! `xylem workflow`: start durable workflow runs and look after them —
//! list, show (state, result, history as a timeline), signal, cancel,
//! rewind, retry. Runs are stepped by `xylem worker` (`xylem_core::workflow`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use xylem_core::Client;
use xylem_core::store::RunFilter;
use xylem_core::time::{format_ms, now_ms};
use xylem_core::workflow::{Call, Engine, Run, RunState, StepOutcome};

use crate::format;

/// What `xylem workflow` does.
#[derive(Debug, Subcommand)]
pub(crate) enum WorkflowCommand {
    /// Start a run of a workflow (pushed with `xylem plugin push`); prints
    /// its id.
    Start(StartArgs),
    /// List runs, newest first.
    Ls {
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs in this state (running, waiting, succeeded, failed,
        /// cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a run: its state, result or error, queryable state, and its
    /// history as a timeline.
    Show {
        /// The run's id.
        run: String,
        /// Print JSON (the whole run).
        #[arg(long)]
        json: bool,
    },
    /// Send an event to a run (it takes it in `await-event`).
    Signal {
        /// The run's id.
        run: String,
        /// The event's topic.
        topic: String,
        /// Its JSON payload.
        #[arg(long, default_value = "null")]
        payload: String,
    },
    /// Ask a run to cancel: its waits end `cancelled`, it may compensate.
    Cancel {
        /// The run's id.
        run: String,
        /// Why.
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
        /// How long its compensation may take, e.g. 10m: past it the run
        /// ends `cancelled` and what it still waits for is cancelled
        /// (default: as long as its code takes).
        #[arg(long)]
        deadline: Option<String>,
    },
    /// Cut a run's history at call N and run it on from there (the steps
    /// after N run again, as new jobs).
    Rewind {
        /// The run's id.
        run: String,
        /// The call to go back to (see `workflow show`).
        #[arg(long)]
        to: u32,
    },
    /// Give a stub step its result (a person's approval, an outside
    /// system's answer): the run goes on with it.
    Complete {
        /// The run's id.
        run: String,
        /// The stub's call number (see `workflow show`).
        step: u32,
        /// Its JSON result.
        #[arg(long, conflicts_with = "error", required_unless_present = "error")]
        result: Option<String>,
        /// Fail the step with this message instead.
        #[arg(long)]
        error: Option<String>,
    },
    /// Move a run to another version of its plugin: its history is replayed
    /// against the new code first, and the run is switched only if every
    /// recorded call comes back the same (else nothing changes and the
    /// divergence is shown). Runs otherwise stay on the version they
    /// started with.
    Upgrade {
        /// The run's id.
        run: String,
        /// The version: a digest or a prefix of one (see `xylem plugin ls`).
        #[arg(long)]
        to: String,
    },
    /// Run a failed run again from its last good step (rewinds to the
    /// call that failed it, or its end).
    Retry {
        /// The run's id.
        run: String,
    },
}

/// `xylem workflow start`.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// The workflow, e.g. order.process.
    workflow: String,
    /// Its JSON input.
    #[arg(long, default_value = "{}")]
    input: String,
    /// The run's id (default: a new UUIDv7). A run with this id already
    /// started is refused.
    #[arg(long)]
    id: Option<String>,
    /// Begin the run this long from now, e.g. 10m (it waits till then;
    /// a workflow schedules one the same way with `schedule-at`).
    #[arg(long)]
    delay: Option<String>,
    /// Runs this run's tree may start in all — its `child-workflow`s and
    /// `schedule-at`s, theirs, and so on (default: the worker's
    /// `--max-descendants`). Past it such a call fails with kind `quota-exceeded`.
    #[arg(long)]
    max_descendants: Option<u64>,
    /// Wait for the run to end and print its result; the exit code says
    /// how it ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit code 124).
    #[arg(long, default_value = "10m")]
    wait_timeout: String,
}

pub(crate) async fn run(store_url: &str, command: WorkflowCommand) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let stores = store.stores.clone();
    let client = Client::new(stores.clone());
    match command {
        WorkflowCommand::Start(a) => start(&client, a).await,
        WorkflowCommand::Ls {
            workflow,
            state,
            limit,
            json,
        } => {
            let state = state
                .map(|s| {
                    serde_json::from_value::<RunState>(serde_json::Value::String(s.clone()))
                        .map_err(|_| anyhow::anyhow!("no run state `{s}` (running, waiting, succeeded, failed, cancelled)"))
                })
                .transpose()?;
            let runs = stores
                .workflows
                .list_runs(&RunFilter {
                    workflow,
                    state,
                    limit,
                })
                .await?;
            print_list(&runs, json)
        }
        WorkflowCommand::Show { run, json } => {
            let run = get(&client, &run).await?;
            show(&run, json)
        }
        WorkflowCommand::Signal {
            run,
            topic,
            payload,
        } => {
            serde_json::from_str::<serde_json::Value>(&payload).context("--payload is not JSON")?;
            get(&client, &run).await?;
            xylem_core::workflow::signal(&client, &run, &topic, &payload, now_ms()).await?;
            eprintln!("sent `{topic}` to run {run}");
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Cancel {
            run,
            reason,
            deadline,
        } => {
            let deadline = deadline
                .as_deref()
                .map(xylem_core::limits::parse_duration)
                .transpose()?;
            let found = get(&client, &run).await?;
            anyhow::ensure!(
                !found.state.is_final(),
                "run {run} has ended ({}): nothing to cancel",
                found.state.as_str()
            );
            xylem_core::workflow::request_cancel_within(&client, &run, &reason, deadline).await?;
            eprintln!("asked run {run} to cancel");
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Rewind { run, to } => {
            get(&client, &run).await?;
            xylem_core::workflow::rewind(&client, &run, to).await?;
            eprintln!("rewound run {run} to call {to}");
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Complete {
            run,
            step,
            result,
            error,
        } => {
            let outcome = match (result, error) {
                (Some(value), _) => {
                    serde_json::from_str::<serde_json::Value>(&value)
                        .context("--result is not JSON")?;
                    StepOutcome::Ok {
                        value,
                        at: now_ms(),
                    }
                }
                (None, message) => StepOutcome::Err {
                    kind: "failed".to_owned(),
                    message: message.unwrap_or_default(),
                    at: now_ms(),
                },
            };
            xylem_core::workflow::complete(&client, &run, step, outcome).await?;
            eprintln!("completed step {step} of run {run}");
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Upgrade { run, to } => {
            let digests: Vec<String> = stores
                .plugins
                .plugins()
                .await?
                .into_iter()
                .map(|p| p.digest)
                .filter(|d| d.starts_with(to.trim_start_matches("sha256:")))
                .collect();
            let digest = match &digests[..] {
                [one] => one.clone(),
                [] => {
                    anyhow::bail!("no stored plugin version matches `{to}` (see `xylem plugin ls`)")
                }
                _ => anyhow::bail!(
                    "`{to}` matches {} versions: give more of the digest",
                    digests.len()
                ),
            };
            let runtime = super::wasm_runtime()?;
            let catalog = xylem_wasm::StoreWorkflows::new(runtime, stores.plugins.clone());
            xylem_core::workflow::upgrade(&client, &catalog, &run, &digest).await?;
            eprintln!("run {run} now runs on version {}", &digest[..12]);
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Retry { run } => {
            let found = get(&client, &run).await?;
            anyhow::ensure!(
                found.state == RunState::Failed,
                "run {run} is {}, not failed: nothing to retry",
                found.state.as_str()
            );
            // The last call whose step failed, else the end: replay from there.
            let to = found
                .history
                .iter()
                .enumerate()
                .rev()
                .find(|(seq, _)| {
                    matches!(
                        found.outcomes.get(&(*seq as u32)),
                        Some(StepOutcome::Err { .. })
                    )
                })
                .map_or(found.history.len(), |(seq, _)| seq);
            xylem_core::workflow::rewind(&client, &run, to as u32).await?;
            eprintln!("retrying run {run} from call {to}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn get(client: &Client, id: &str) -> anyhow::Result<Run> {
    client
        .stores()
        .workflows
        .get_run(id)
        .await?
        .with_context(|| format!("no workflow run `{id}` (see `xylem workflow ls`)"))
}

/// The catalog a start resolves the workflow's version with: the store's
/// routes (no code is loaded to start a run).
struct Routes(Arc<dyn xylem_core::store::PluginStore>);

#[async_trait::async_trait]
impl xylem_core::workflow::WorkflowCatalog for Routes {
    async fn current(&self, workflow: &str) -> Result<Option<String>, String> {
        xylem_wasm::current_workflow_version(self.0.as_ref(), workflow)
            .await
            .map_err(|e| e.to_string())
    }

    async fn code(
        &self,
        _workflow: &str,
        _plugin: &str,
    ) -> Result<Arc<dyn xylem_core::workflow::WorkflowCode>, String> {
        Err("the command line does not run workflows; `xylem worker` does".to_owned())
    }
}

/// An engine that starts runs (it steps none: `xylem worker` does), for
/// `xylem workflow start` and `POST /api/workflows`.
pub(crate) fn starter(client: &Client) -> Engine {
    Engine::new(
        client.clone(),
        Arc::new(Routes(client.stores().plugins.clone())),
        "cli",
        Duration::from_secs(10),
    )
}

#[allow(clippy::print_stdout)]
async fn start(client: &Client, a: StartArgs) -> anyhow::Result<ExitCode> {
    let engine = starter(client);
    let delay = a
        .delay
        .as_deref()
        .map(xylem_core::limits::parse_duration)
        .transpose()?
        .unwrap_or_default();
    let now = now_ms();
    let at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let options = xylem_core::workflow::StartOptions {
        id: a.id,
        at: Some(at),
        max_descendants: a.max_descendants,
    };
    let run = engine
        .start_with(&a.workflow, &a.input, options, now)
        .await
        .context("the run was not started")?;
    if !a.wait {
        println!("{}", run.id);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("started run {} ({}); waiting…", run.id, run.workflow);
    let timeout = xylem_core::limits::parse_duration(&a.wait_timeout)?;
    let started = Instant::now();
    loop {
        let now = get(client, &run.id).await?;
        if now.state.is_final() {
            return show(&now, false).map(|_| end_code(&now));
        }
        if started.elapsed() >= timeout {
            eprintln!(
                "gave up after {timeout:?}: run {} is {}",
                run.id,
                now.state.as_str()
            );
            return Ok(ExitCode::from(124));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn end_code(run: &Run) -> ExitCode {
    match run.state {
        RunState::Succeeded => ExitCode::SUCCESS,
        RunState::Cancelled => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

#[allow(clippy::print_stdout)]
fn print_list(runs: &[Run], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let docs: Vec<serde_json::Value> = runs.iter().map(summary).collect();
        println!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no workflow runs: start one with `xylem workflow start NAME --input JSON`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.workflow.clone(),
                r.state.as_str().to_owned(),
                r.history.len().to_string(),
                format_ms(r.created_at),
                format_ms(r.updated_at),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(
            &["RUN", "WORKFLOW", "STATE", "CALLS", "STARTED", "UPDATED"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn summary(r: &Run) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "workflow": r.workflow, "state": r.state, "plugin": r.plugin,
        "calls": r.history.len(), "created_at": r.created_at, "updated_at": r.updated_at,
        "wake_at": r.wake_at,
    })
}

#[allow(clippy::print_stdout)]
fn show(run: &Run, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(run)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("run       {}", run.id);
    println!(
        "workflow  {} (plugin {})",
        run.workflow,
        &run.plugin[..run.plugin.len().min(12)]
    );
    println!("state     {}", run.state.as_str());
    if let Some(tree) = &run.tree {
        let limit = tree
            .max_runs
            .map_or_else(String::new, |n| format!(" (may start {n} runs)"));
        match &run.parent {
            Some(parent) => println!(
                "tree      root {}{limit}, child of {}",
                tree.root, parent.run
            ),
            None => println!("tree      root {}{limit}", tree.root),
        }
    }
    println!("input     {}", format::clip(&run.input, 200));
    if let Some(result) = &run.result {
        println!("result    {}", format::clip(result, 500));
    }
    if let Some(error) = &run.error {
        println!("error     {}: {}", error.kind, error.message);
    }
    if let Some(state) = &run.query_state {
        println!("query     {}", format::clip(state, 200));
    }
    if let Some(reason) = &run.cancel_requested {
        println!("cancel    asked: {reason}");
    }
    if let Some(at) = run.wake_at.filter(|_| run.state == RunState::Waiting) {
        println!("wakes     {}", format_ms(at));
    }
    println!("history");
    for (seq, call) in run.history.iter().enumerate() {
        let outcome = match run.outcomes.get(&(seq as u32)) {
            Some(StepOutcome::Ok { value, at }) => {
                format!("→ {} ({})", format::clip(value, 80), format_ms(*at))
            }
            Some(StepOutcome::Err { kind, message, at }) => {
                format!(
                    "✗ {kind}: {} ({})",
                    format::clip(message, 80),
                    format_ms(*at)
                )
            }
            None if matches!(
                call,
                Call::Activity { .. } | Call::Child { .. } | Call::Submit { .. }
            ) =>
            {
                "… pending".to_owned()
            }
            None => String::new(),
        };
        println!(
            "  {seq:>4}  {}  {outcome}",
            format::clip(&call.describe(), 80)
        );
    }
    Ok(ExitCode::SUCCESS)
}
