//! `xylem enqueue`: queue a job.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use xylem_core::limits::{parse_duration, parse_size};
use xylem_core::time::{ms, now_ms, parse_rfc3339};
use xylem_core::{Client, EnqueueRequest, JobOptions};

use super::task::{print_record, record_exit_code};

/// Queue a job; prints its id (with --wait, waits and prints the result).
#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// Task name, e.g. hello.greet (see `xylem tasks`).
    task: String,
    /// JSON arguments, or @FILE to read them from a file.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Queue (default: the task's declared queue, else `default`).
    #[arg(long, short)]
    queue: Option<String>,
    /// Priority 0 (lowest) to 9 (highest).
    #[arg(long, short, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: Option<u8>,
    /// Run no sooner than this from now, e.g. 30s.
    #[arg(long, conflicts_with = "eta")]
    delay: Option<String>,
    /// Run no sooner than this time (RFC 3339, e.g. 2026-11-22T15:00:00Z).
    #[arg(long)]
    eta: Option<String>,
    /// Expire the job if it has not started within this long.
    #[arg(long)]
    expires: Option<String>,
    /// Retries before the job is dead-lettered.
    #[arg(long)]
    max_retries: Option<u32>,
    /// First retry delay (doubled each retry, with jitter), e.g. 1s.
    #[arg(long)]
    backoff: Option<String>,
    /// Largest retry delay.
    #[arg(long)]
    backoff_max: Option<String>,
    /// Hard time limit of a run.
    #[arg(long)]
    timeout: Option<String>,
    /// Soft time limit of a run.
    #[arg(long)]
    soft_timeout: Option<String>,
    /// Fuel budget of a run.
    #[arg(long)]
    fuel: Option<u64>,
    /// Memory cap of a run, e.g. 64MiB.
    #[arg(long)]
    memory: Option<String>,
    /// A header, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Wait for the job to finish and print its result; the exit code
    /// tells how it ended.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (exit code 124).
    #[arg(long, default_value = "5m")]
    wait_timeout: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn millis(text: &Option<String>) -> anyhow::Result<Option<u64>> {
    text.as_deref()
        .map(|t| parse_duration(t).map(|d| d.as_millis() as u64))
        .transpose()
        .map_err(Into::into)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(store_url: &str, a: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let args = match a.args.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read arguments from {path}"))?,
        None => a.args.clone(),
    };
    if let Some(q) = &a.queue {
        super::worker::check_queue_name(q)?;
    }
    let mut req = EnqueueRequest::new(&a.task, args);
    req.queue = a.queue.clone();
    req.priority = a.priority;
    req.max_retries = a.max_retries;
    if let Some(delay) = &a.delay {
        req = req.delay(parse_duration(delay)?);
    }
    if let Some(eta) = &a.eta {
        req.not_before = Some(parse_rfc3339(eta).map_err(anyhow::Error::msg)?);
    }
    if let Some(expires) = &a.expires {
        req.expires_at = Some(now_ms() + ms(parse_duration(expires)?));
    }
    for header in &a.headers {
        let (k, v) = header
            .split_once('=')
            .with_context(|| format!("invalid header `{header}`: use NAME=VALUE"))?;
        req.headers.push((k.to_owned(), v.to_owned()));
    }
    req.options = JobOptions {
        retry_backoff_ms: millis(&a.backoff)?,
        retry_backoff_max_ms: millis(&a.backoff_max)?,
        soft_time_limit_ms: millis(&a.soft_timeout)?,
        hard_time_limit_ms: millis(&a.timeout)?,
        fuel: a.fuel,
        max_memory_bytes: a.memory.as_deref().map(parse_size).transpose()?,
    };

    let store = crate::store::open(store_url).await?;
    let client = Client::new(store.stores.clone());
    let envelope = client.enqueue(req).await?;
    if !a.wait {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&envelope)?);
        } else {
            println!("{}", envelope.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.json {
        eprintln!("enqueued {} ({}); waiting…", envelope.id, envelope.task);
    }
    let timeout: Duration = parse_duration(&a.wait_timeout)?;
    match client.wait(&envelope.id, timeout).await {
        Ok(record) => {
            print_record(&record, a.json)?;
            Ok(record_exit_code(&record))
        }
        Err(xylem_core::ClientError::Timeout { waited, state }) => {
            eprintln!(
                "gave up after {waited:?}: job {} is still {state}",
                envelope.id
            );
            Ok(ExitCode::from(124))
        }
        Err(e) => Err(e.into()),
    }
}
