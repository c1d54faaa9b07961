//! `xylem dlq ls|show|replay|purge`: the dead-letter queue.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use xylem_core::limits::parse_duration;
use xylem_core::store::DeadFilter;
use xylem_core::time::format_ms;

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
    let dead_letters = &store.stores.dead_letters;
    match cmd {
        DlqCommand::Ls { queue, limit, json } => {
            let filter = DeadFilter {
                ids: Vec::new(),
                queue,
            };
            let dead = dead_letters.dead_jobs(&filter, limit).await?;
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
            let Some(dead) = dead_letters.dead_jobs(&filter, 1).await?.pop() else {
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
                dead_letters
                    .dead_jobs(&filter, usize::MAX)
                    .await?
                    .into_iter()
                    .map(|d| d.envelope.id)
                    .collect()
            } else {
                // The store sets each record back to `queued` itself.
                dead_letters.replay_dead(&filter, delay).await?
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
                report_not_dead(&selection, &missing);
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge {
            selection,
            dry_run,
            json,
        } => {
            let filter = selection.filter();
            let dead: Vec<String> = dead_letters
                .dead_jobs(&filter, usize::MAX)
                .await?
                .into_iter()
                .map(|d| d.envelope.id)
                .collect();
            let count = if dry_run {
                dead.len() as u64
            } else {
                dead_letters.purge_dead(&filter).await?
            };
            let missing: Vec<&String> = selection
                .ids
                .iter()
                .filter(|id| !dead.contains(id))
                .collect();
            if json {
                let doc = serde_json::json!({
                    "dry_run": dry_run,
                    "purged": count,
                    "not_dead": missing,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                let verb = if dry_run { "would purge" } else { "purged" };
                println!("{verb} {count} job(s)");
            }
            if !missing.is_empty() {
                report_not_dead(&selection, &missing);
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ids asked for by name that were not in the dead-letter queue: the
/// others were acted on all the same, but the command fails.
fn report_not_dead(selection: &Selection, missing: &[&String]) {
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
}
