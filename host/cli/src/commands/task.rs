//! `xylem task show|wait|ls`: job records.

use std::process::ExitCode;

use clap::Subcommand;
use xylem_core::limits::parse_duration;
use xylem_core::time::format_ms;
use xylem_core::{Client, ClientError, TaskFilter, TaskRecord, TaskState};

use crate::format;

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// A job's state, history, attempts, result or error, and resource use.
    Show {
        /// Job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait for a job to finish; print it; the exit code tells how it ended
    /// (0 succeeded, the failure's code if it failed, 124 on timeout).
    Wait {
        /// Job id.
        id: String,
        /// Give up after this long.
        #[arg(long, default_value = "5m")]
        timeout: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel jobs: a waiting one (queued, delayed, retrying) never runs; a
    /// running one is stopped by its worker, on any machine, within about
    /// 100 ms (the task may see `cancelled()` and wrap up first).
    #[command(
        after_help = "Examples:\n  xylem task cancel 0193...e1 0193...e2\n  xylem task cancel --task report.build --state queued --dry-run\n  xylem task cancel --task report.build            # every unfinished job of the task"
    )]
    Cancel {
        /// Job ids.
        #[arg(required_unless_present = "task", conflicts_with = "task")]
        ids: Vec<String>,
        /// Every unfinished job of this task (at most --limit).
        #[arg(long)]
        task: Option<String>,
        /// With --task: only jobs in this state (queued, retrying or
        /// running; default: all three).
        #[arg(long, requires = "task")]
        state: Option<TaskState>,
        /// With --task: at most this many jobs.
        #[arg(long, default_value_t = 1000, requires = "task")]
        limit: usize,
        /// List what would be cancelled; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recent jobs, newest first.
    Ls {
        /// Only jobs in this state (queued, running, succeeded, retrying, dead, ...).
        #[arg(long)]
        state: Option<TaskState>,
        /// Only jobs of this task.
        #[arg(long)]
        task: Option<String>,
        /// Only jobs enqueued with this header, NAME=VALUE (exact).
        #[arg(long, value_name = "NAME=VALUE", value_parser = parse_header)]
        header: Option<(String, String)>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A `NAME=VALUE` header filter.
pub(crate) fn parse_header(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("invalid header `{text}`: use NAME=VALUE"))
}

/// The exit code for a finished job: 0 if it succeeded, else its failure's.
pub(crate) fn record_exit_code(record: &TaskRecord) -> ExitCode {
    match (record.state, &record.error) {
        (TaskState::Succeeded, _) => ExitCode::SUCCESS,
        (_, Some(failure)) => ExitCode::from(u8::try_from(failure.kind.exit_code()).unwrap_or(1)),
        _ => ExitCode::FAILURE,
    }
}

/// Prints a job in full (human) or as JSON.
#[allow(clippy::print_stdout)]
pub(crate) fn print_record(r: &TaskRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("id        {}", r.id);
    println!("task      {}   queue {}", r.task, r.queue);
    println!("state     {}", r.state);
    println!("attempt   {} of {}", r.attempt, r.max_retries + 1);
    println!("args      {}", format::clip(&r.args, 200));
    println!("enqueued  {}", format_ms(r.enqueued_at));
    if !r.headers.is_empty() {
        let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("headers   {}", format::clip(&headers.join("  "), 300));
    }
    if let Some(plugin) = &r.plugin {
        println!("plugin    sha256:{}", &plugin[..plugin.len().min(16)]);
    }
    if let Some(p) = &r.progress {
        println!(
            "progress  {:.0}%{}",
            p.percent,
            p.message
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default()
        );
    }
    if let Some(u) = &r.usage {
        println!(
            "usage     wall {}  fuel {}  peak memory {}",
            format::duration(u.wall_time()),
            format::count(u.fuel),
            format::bytes(u.peak_memory)
        );
    }
    if r.state == TaskState::Succeeded
        && let Some(result) = &r.result
    {
        println!("result    {}", serde_json::to_string(result)?);
    }
    if let Some(e) = &r.error {
        println!("error     {e}");
    }
    println!("history");
    for h in &r.history {
        println!(
            "  {}  {:<9} attempt {}{}",
            format_ms(h.at),
            h.state.as_str(),
            h.attempt,
            h.detail
                .as_deref()
                .map(|d| format!("  {d}"))
                .unwrap_or_default()
        );
    }
    if !r.log.is_empty() {
        println!("log (last run)");
        for line in &r.log {
            println!(
                "  +{}ms {:?}: {}",
                line.at_ms,
                line.level,
                format::clip(&line.message, 200)
            );
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(store_url: &str, cmd: TaskCommand) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let client = Client::new(store.stores.clone());
    match cmd {
        TaskCommand::Show { id, json } => {
            let record = client.get(&id).await?;
            print_record(&record, json)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Wait { id, timeout, json } => {
            match crate::progress::wait(&client, &id, parse_duration(&timeout)?).await {
                Ok(record) => {
                    print_record(&record, json)?;
                    Ok(record_exit_code(&record))
                }
                Err(ClientError::Timeout { waited, state }) => {
                    eprintln!("gave up after {waited:?}: job {id} is still {state}");
                    Ok(ExitCode::from(124))
                }
                Err(e) => Err(e.into()),
            }
        }
        TaskCommand::Cancel {
            ids,
            task,
            state,
            limit,
            dry_run,
            json,
        } => cancel(&store.stores, ids, task, state, limit, dry_run, json).await,
        TaskCommand::Ls {
            state,
            task,
            header,
            limit,
            json,
        } => {
            let filter = TaskFilter {
                state,
                task,
                header,
                limit,
            };
            let records = store.stores.results.list(&filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.task.clone(),
                        r.queue.clone(),
                        r.state.to_string(),
                        format!("{}/{}", r.attempt, r.max_retries + 1),
                        format_ms(r.enqueued_at),
                        format::clip(&format::record_summary(r), 60),
                    ]
                })
                .collect();
            println!(
                "{}",
                format::table(
                    &[
                        "ID",
                        "TASK",
                        "QUEUE",
                        "STATE",
                        "ATTEMPT",
                        "ENQUEUED",
                        "RESULT / ERROR"
                    ],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `xylem task cancel`: by id, or every unfinished job of a task.
#[allow(clippy::print_stdout)]
async fn cancel(
    stores: &xylem_core::Stores,
    ids: Vec<String>,
    task: Option<String>,
    state: Option<TaskState>,
    limit: usize,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let unfinished = [TaskState::Queued, TaskState::Retrying, TaskState::Running];
    let ids = match task {
        None => ids,
        Some(task) => {
            let states: Vec<TaskState> = match state {
                Some(state) if unfinished.contains(&state) => vec![state],
                Some(state) => anyhow::bail!(
                    "a {state} job has finished: only queued, retrying or running jobs can be cancelled"
                ),
                None => unfinished.to_vec(),
            };
            let mut ids = Vec::new();
            for state in states {
                let filter = TaskFilter {
                    state: Some(state),
                    task: Some(task.clone()),
                    limit: limit.saturating_sub(ids.len()).max(1),
                    ..TaskFilter::default()
                };
                if ids.len() < limit {
                    ids.extend(
                        stores
                            .results
                            .list(&filter)
                            .await?
                            .into_iter()
                            .map(|r| r.id),
                    );
                }
            }
            ids.truncate(limit);
            ids
        }
    };
    if dry_run {
        if json {
            println!("{}", serde_json::to_string_pretty(&ids)?);
        } else {
            for id in &ids {
                println!("{id}");
            }
            eprintln!(
                "{} job(s) would be cancelled (dry run: nothing changed)",
                ids.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let results = xylem_core::cancel::cancel(stores, &ids).await?;
    if json {
        let doc: Vec<serde_json::Value> = ids
            .iter()
            .zip(&results)
            .map(|(id, r)| serde_json::json!({ "id": id, "outcome": r }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (id, result) in ids.iter().zip(&results) {
            println!("{id}  {result}");
        }
    }
    // Exit 1 when a named job does not exist.
    let missing = results.contains(&xylem_core::cancel::CancelResult::NotFound);
    Ok(if missing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
