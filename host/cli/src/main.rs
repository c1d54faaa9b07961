//! `xylem`: the command-line tool of the Xylem job platform.

mod commands;
mod format;
mod progress;
mod serve;
mod store;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Xylem: background jobs whose task code is a WebAssembly component, run
/// in a fresh sandbox for every job with fuel, memory and time limits.
#[derive(Debug, Parser)]
#[command(name = "xylem", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success; 1 error; 2 bad usage; 10-32 a task failure \
(see `xylem run --help`).\nLogs: set XYLEM_LOG (e.g. XYLEM_LOG=debug) to see more."
)]
struct Cli {
    /// Where jobs, results and plugins live: sqlite://FILE (default), redis://HOST:PORT, postgres://..., memory://.
    /// [default: sqlite://xylem.db]
    #[arg(long, global = true, env = "XYLEM_STORE")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on SQLite: build the example plugins, run a
    /// worker, enqueue jobs, show what happened.
    Demo(commands::demo::DemoArgs),
    /// Run jobs from the queues.
    Worker(commands::worker::WorkerArgs),
    /// Queue a job.
    Enqueue(Box<commands::enqueue::EnqueueArgs>),
    /// Run tasks one after another, each result the next one's input.
    Chain(commands::canvas::ChainArgs),
    /// Run tasks side by side; the result is the list of theirs.
    Group(commands::canvas::GroupArgs),
    /// Run tasks side by side, then a callback with the list of results.
    Chord(commands::canvas::ChordArgs),
    /// Nested canvases from a file (submit); a canvas's tree and states (show).
    #[command(subcommand)]
    Canvas(commands::canvas::CanvasCommand),
    /// Schedules kept in the store: add, ls, show, rm, enable, disable, next.
    #[command(subcommand)]
    Schedule(commands::schedule::ScheduleCommand),
    /// Fire due schedules (any number of beats may run; each tick fires once).
    Beat(commands::schedule::BeatArgs),
    /// Durable workflows: start, ls, show, signal, cancel, rewind, retry
    /// (runs are stepped by `xylem worker`).
    #[command(subcommand)]
    Workflow(commands::workflow::WorkflowCommand),
    /// Inspect jobs: show, wait, ls.
    #[command(subcommand)]
    Task(commands::task::TaskCommand),
    /// Tasks that can run: every task of every pushed plugin, with defaults.
    Tasks {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Jobs per queue (ready, delayed, running, dead, paused); pause,
    /// resume or purge a queue.
    Queues {
        /// Pause, resume or purge (without one: the counts).
        #[command(subcommand)]
        command: Option<commands::queues::QueuesCommand>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Workers seen by the store: running, stopping, stale (no beat for 15 s:
    /// killed or cut off); stopped ones with --all.
    Workers {
        /// Also the workers that stopped (kept for a day).
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The dead-letter queue: ls, show, replay, purge.
    #[command(subcommand)]
    Dlq(commands::dlq::DlqCommand),
    /// Build, inspect, push and manage plugins (task code as .wasm components).
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// Check that the store is reachable (exit 1 if not).
    Health {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one task once in the sandbox and print its outcome.
    Run(commands::run::RunArgs),
    /// Serve the HTTP JSON API (jobs, queues, workers, DLQ, schedules,
    /// workflows) over the store; tokens from XYLEM_API_TOKEN (admin) and
    /// XYLEM_API_READ_TOKEN (read-only).
    Serve(serve::ServeArgs),
    /// Measure the platform on this machine.
    Bench(commands::bench::BenchArgs),
}

/// Logs to stderr, filtered by `XYLEM_LOG`, else at `default_level`.
impl Command {
    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Demo(_) => "demo",
            Command::Worker(_) => "worker",
            Command::Enqueue(_) => "enqueue",
            Command::Chain(_) => "chain",
            Command::Group(_) => "group",
            Command::Chord(_) => "chord",
            Command::Canvas(_) => "canvas",
            Command::Schedule(_) => "schedule",
            Command::Beat(_) => "beat",
            Command::Workflow(_) => "workflow",
            Command::Task(_) => "task",
            Command::Tasks { .. } => "tasks",
            Command::Queues { .. } => "queues",
            Command::Workers { .. } => "workers",
            Command::Dlq(_) => "dlq",
            Command::Plugin(_) => "plugin",
            Command::Health { .. } => "health",
            Command::Run(_) => "run",
            Command::Serve(_) => "serve",
            Command::Bench(_) => "bench",
        }
    }
}

fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    // The demo and the benchmarks print their own report: keep the worker's
    // routine logging out of it.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Bench(_));
    let prometheus = matches!(&cli.command, Command::Worker(args) if args.serves_metrics());
    // Before the async runtime: the OTLP exporters run on threads of
    // their own, with a blocking HTTP client.
    let telemetry = match telemetry::init(
        if quiet { "warn" } else { "info" },
        cli.command.name(),
        prometheus,
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A running guest holds its thread for up to one epoch tick (1 ms)
        // per poll. Tokio looks for I/O and timers every `event_interval`
        // polls (61 by default): behind busy guests that is 60 ms of store
        // replies left waiting for every other job. Look every 4.
        .event_interval(
            std::env::var("XYLEM_EVENT_INTERVAL")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4),
        )
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let explicit_store = cli.store.as_deref();
        let store = explicit_store.unwrap_or(store::DEFAULT_STORE);
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Worker(args) => commands::worker::run(store, args, &telemetry).await,
            Command::Serve(args) => {
                let shutdown = commands::worker::ShutdownSignal::install();
                serve::run(store, args, shutdown.wait()).await
            }
            Command::Enqueue(args) => commands::enqueue::run(store, *args).await,
            Command::Chain(args) => commands::canvas::chain(store, args).await,
            Command::Group(args) => commands::canvas::group(store, args).await,
            Command::Chord(args) => commands::canvas::chord(store, args).await,
            Command::Canvas(cmd) => commands::canvas::run(store, cmd).await,
            Command::Schedule(cmd) => commands::schedule::run(store, cmd).await,
            Command::Beat(args) => commands::schedule::beat(store, args).await,
            Command::Workflow(cmd) => commands::workflow::run(store, cmd).await,
            Command::Task(cmd) => commands::task::run(store, cmd).await,
            Command::Tasks { json } => commands::queues::tasks(store, json).await,
            Command::Queues { command, json } => match command {
                None => commands::queues::queues(store, json).await,
                Some(command) => commands::queues::control(store, command).await,
            },
            Command::Workers { all, json } => commands::workers::list(store, all, json).await,
            Command::Dlq(cmd) => commands::dlq::run(store, cmd).await,
            Command::Plugin(cmd) => commands::plugin::run(store, cmd).await,
            Command::Health { json } => commands::queues::health(store, json).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Bench(args) => commands::bench::run(explicit_store, args).await,
        }
    });
    // The runtime first (its tasks may still hold spans), then what is
    // buffered is sent.
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, `: `-joined, leaving out a cause whose text
/// the message before it already quotes (store errors name their driver's
/// error and keep it as their source too: it would print twice).
fn error_chain(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_already_quoted_is_not_repeated() {
        let io = std::io::Error::other("Connection refused");
        let store = xylem_core::StoreError::unavailable_from(
            format!("cannot connect to db: {io}"),
            std::io::Error::other("Connection refused"),
        );
        let error = anyhow::Error::new(store).context("cannot open store db");
        assert_eq!(
            super::error_chain(&error),
            "cannot open store db: store unavailable: cannot connect to db: Connection refused"
        );
    }
}
