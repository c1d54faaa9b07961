//! `xylem run`: one task, once, in the sandbox.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use xylem_core::limits::{parse_duration, parse_size};
use xylem_core::{CancelToken, Limits, NoHostCalls, RunRequest, TaskInfo};

use crate::format;

/// Run one task once in a fresh sandbox.
///
/// On success the JSON result is printed on standard output (the rest goes
/// to standard error), so `xylem run ... | jq` works. Exit codes on failure:
/// 10 plugin-error, 11 retry-requested, 12 rejected, 20 time-limit-exceeded,
/// 21 fuel-exhausted, 22 memory-limit-exceeded, 23 trap, 24 bad-output,
/// 25 cancelled, 30 unknown-task, 31 invalid-args, 32 plugin-load;
/// 1 if the component cannot be loaded at all.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct RunArgs {
    /// The plugin component (.wasm).
    file: PathBuf,
    /// The task to run, e.g. hello.greet.
    task: String,
    /// JSON arguments, or @FILE to read them from a file.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Fuel budget (about one unit per Wasm instruction).
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory cap, e.g. 64MiB.
    #[arg(long)]
    memory: Option<String>,
    /// Hard time limit, e.g. 5s: the run is stopped when it passes.
    #[arg(long)]
    timeout: Option<String>,
    /// Soft time limit, e.g. 2s: after it, the task's cancelled() is true.
    #[arg(long)]
    soft_timeout: Option<String>,
    /// Largest result accepted, e.g. 1MiB.
    #[arg(long)]
    max_output: Option<String>,
    /// Most log kept (stdout, stderr and log calls together; 64 bytes per
    /// line plus its text), e.g. 1MiB.
    #[arg(long)]
    max_log: Option<String>,
    /// Most log lines kept.
    #[arg(long)]
    max_log_lines: Option<u64>,
    /// Print the whole outcome (result or error, usage, log) as JSON.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let json_args = match args.args.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read arguments from {path}"))?,
        None => args.args.clone(),
    };
    let runtime = super::wasm_runtime()?;
    let plugin = runtime
        .load_file(&args.file)
        .await
        .with_context(|| format!("{} is not a usable plugin", args.file.display()))?;

    // The task's declared defaults, then the flags on top.
    let mut limits = Limits::default();
    if let Some(spec) = plugin.task(&args.task) {
        limits = limits.with_options(&spec.options);
    }
    if let Some(fuel) = args.fuel {
        limits.fuel = fuel;
    }
    if let Some(memory) = &args.memory {
        limits.max_memory = parse_size(memory)?;
    }
    if let Some(timeout) = &args.timeout {
        limits.hard_time_limit = parse_duration(timeout)?;
    }
    if let Some(soft) = &args.soft_timeout {
        limits.soft_time_limit = Some(parse_duration(soft)?);
    }
    if let Some(max) = &args.max_output {
        limits.max_output = parse_size(max)?;
    }
    if let Some(max) = &args.max_log {
        limits.max_log = parse_size(max)?;
    }
    if let Some(max) = args.max_log_lines {
        limits.max_log_entries = max;
    }

    let id = format!("run-{}", std::process::id());
    let request = RunRequest {
        info: TaskInfo::new(id, &args.task),
        args: json_args,
        limits,
        cancel: CancelToken::new(),
    };
    // Ctrl-C cancels the run for real, through the same path as a limit.
    let cancel = request.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let outcome = plugin.run(request, Arc::new(NoHostCalls)).await;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        for line in &outcome.log {
            eprintln!(
                "  [{:>6} +{}ms] {}",
                format!("{:?}", line.level).to_lowercase(),
                line.at_ms,
                line.message
            );
        }
        if outcome.log_truncated {
            eprintln!("  [log truncated at {}]", format::bytes(limits.max_log));
        }
        match (&outcome.result, &outcome.error) {
            (Some(result), _) => {
                eprintln!("✔ {} succeeded — {}", args.task, format::usage(&outcome));
                println!("{}", serde_json::to_string(result)?);
            }
            (None, Some(failure)) => {
                eprintln!("✘ {} failed: {failure}", args.task);
                eprintln!("  {}", format::usage(&outcome));
            }
            (None, None) => {}
        }
        if outcome.soft_limit_reached {
            eprintln!("  (the soft time limit was reached during the run)");
        }
    }
    Ok(match outcome.error {
        None => ExitCode::SUCCESS,
        Some(failure) => ExitCode::from(u8::try_from(failure.kind.exit_code()).unwrap_or(1)),
    })
}
