//! `xylem`: the command-line tool of the Xylem job platform.

mod commands;
mod format;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, inspect and manage plugins (task code as .wasm components).
    #[command(subcommand)]
    Plugin(commands::plugin::PluginCommand),
    /// Run one task once in the sandbox and print its outcome.
    Run(commands::run::RunArgs),
    /// Measure the platform on this machine.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XYLEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plugin(cmd) => commands::plugin::run(cmd).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Bench(cmd) => commands::bench::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
