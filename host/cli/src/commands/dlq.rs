//! `xylem dlq ls|show|replay|purge`: the dead-letter queue.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use xylem_core::limits::parse_duration;
use xylem_core::store::DeadFilter;
use xylem_core::time::format_ms;
use xylem_core::{TaskState, Transition};

use crate::format;

#[derive(Debug, Args)]
pub(crate) struct Selection {
    /// Job ids (default: every dead job, or those of --queue).
    ids: Vec<String>,
    /// Only dead jobs of this queue.
    #[arg(long, short)]
    queue: Option<String>,
}

impl Selection {
    fn filter(&self) -> DeadFilter {
        DeadFilter {
            ids: self.ids.clone(),
            queue: self.queue.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Dead jobs, newest first, with why they died.
    Ls {
        /// Only this queue.
        #[arg(long, short)]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One dead job in full.
    Show {
        /// Job id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back on their queues (attempt reset to 1).
    Replay {
        #[command(flatten)]
        selection: Selection,
        /// Only list what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Make them runnable only after this delay, e.g. 10m.
        #[arg(long)]
        delay: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead jobs for good.
    Purge {
        #[command(flatten)]
        selection: Selection,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(store_url: &str, cmd: DlqCommand) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let broker = &store.stores.broker;
    match cmd {
        DlqCommand::Ls { queue, limit, json } => {
            let filter = DeadFilter {
                ids: Vec::new(),
                queue,
            };
            let dead = broker.dead_jobs(&filter, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dead)?);
            } else if dead.is_empty() {
                println!("the dead-letter queue is empty");
            } else {
                let rows: Vec<Vec<String>> = dead
                    .iter()
                    .map(|d| {
                        vec![
                            d.envelope.id.clone(),
                            d.envelope.task.clone(),
                            d.envelope.queue.clone(),
                            format_ms(d.dead_at),
                            format::clip(&d.reason, 80),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    format::table(&["ID", "TASK", "QUEUE", "DEAD SINCE", "REASON"], &rows)
                );
            }
        }
        DlqCommand::Show { id, json } => {
            let filter = DeadFilter {
                ids: vec![id.clone()],
                queue: None,
            };
            let Some(dead) = broker.dead_jobs(&filter, 1).await?.pop() else {
                anyhow::bail!("job {id} is not in the dead-letter queue");
            };
            let record = store.stores.results.get(&id).await?;
            if json {
                let doc = serde_json::json!({ "dead": dead, "record": record });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!("reason    {}", dead.reason);
                println!("dead at   {}", format_ms(dead.dead_at));
                if let Some(record) = record {
                    super::task::print_record(&record, false)?;
                }
            }
        }
        DlqCommand::Replay {
            selection,
            dry_run,
            delay,
            json,
        } => {
            let filter = selection.filter();
            let delay = delay
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .unwrap_or(Duration::ZERO);
            let ids: Vec<String> = if dry_run {
                broker
                    .dead_jobs(&filter, usize::MAX)
                    .await?
                    .into_iter()
                    .map(|d| d.envelope.id)
                    .collect()
            } else {
                let ids = broker.replay_dead(&filter, delay).await?;
                for id in &ids {
                    let detail = if delay.is_zero() {
                        "replayed from the dead-letter queue".to_owned()
                    } else {
                        format!("replayed from the dead-letter queue, runnable in {delay:?}")
                    };
                    let t = Transition::to(TaskState::Queued, 1).detail(detail);
                    if let Err(e) = store.stores.results.transition(id, t).await {
                        tracing::warn!(id, error = %e, "replayed, but cannot record it");
                    }
                }
                ids
            };
            // Ids asked for by name that were not dead: say so, and fail
            // (the others are replayed all the same).
            let missing: Vec<&String> = selection
                .ids
                .iter()
                .filter(|id| !ids.contains(id))
                .collect();
            if json {
                let doc = serde_json::json!({
                    "dry_run": dry_run,
                    "ids": ids,
                    "not_dead": missing,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                let verb = if dry_run { "would replay" } else { "replayed" };
                println!("{verb} {} job(s)", ids.len());
                for id in &ids {
                    println!("  {id}");
                }
            }
            if !missing.is_empty() {
                let within = match &selection.queue {
                    Some(q) => format!(" (of queue {q})"),
                    None => String::new(),
                };
                eprintln!(
                    "error: {} of the {} id(s) given {} not in the dead-letter queue{within}: {}",
                    missing.len(),
                    selection.ids.len(),
                    if missing.len() == 1 { "is" } else { "are" },
                    missing
                        .iter()
                        .map(|id| id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge {
            selection,
            dry_run,
            json,
        } => {
            let filter = selection.filter();
            let count = if dry_run {
                broker.dead_jobs(&filter, usize::MAX).await?.len() as u64
            } else {
                broker.purge_dead(&filter).await?
            };
            if json {
                let doc = serde_json::json!({ "dry_run": dry_run, "purged": count });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                let verb = if dry_run { "would purge" } else { "purged" };
                println!("{verb} {count} job(s)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
