//! `xylem schedule` (add, ls, show, rm, enable, disable, next) and
//! `xylem beat`: schedules kept in the store, fired by any number of beat
//! processes, each tick once (`xylem_core::schedule`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use xylem_core::Client;
use xylem_core::limits::parse_duration;
use xylem_core::schedule::{MissedRuns, Schedule, Spec};
use xylem_core::time::{format_ms, now_ms, parse_rfc3339};

use crate::format;

/// What `xylem schedule` does.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Add a schedule: `--cron EXPR [--tz ZONE]`, `--every 30s` or `--at TIME`.
    Add(AddArgs),
    /// List the schedules.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule.
    Show {
        /// Its name.
        name: String,
    },
    /// Delete a schedule.
    Rm {
        /// Its name.
        name: String,
    },
    /// Let a schedule fire again (from its next tick after now).
    Enable {
        /// Its name.
        name: String,
    },
    /// Stop a schedule firing (it is kept).
    Disable {
        /// Its name.
        name: String,
    },
    /// The next fire times of a schedule, in its zone and in UTC.
    Next {
        /// Its name.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `xylem schedule add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// A unique name.
    name: String,
    /// The task it enqueues.
    #[arg(long)]
    task: String,
    /// Its JSON arguments.
    #[arg(long, default_value = "{}")]
    args: String,
    /// A cron expression: 5 fields, or 6 with seconds first; names,
    /// ranges, steps, lists, L, W, #, @hourly/@daily/@weekly/@monthly/@yearly.
    #[arg(long, conflicts_with_all = ["every", "at"], required_unless_present_any = ["every", "at"])]
    cron: Option<String>,
    /// The cron expression's IANA time zone (default UTC).
    #[arg(long, requires = "cron")]
    tz: Option<String>,
    /// A fixed interval, e.g. 30s or 1h.
    #[arg(long, conflicts_with = "at")]
    every: Option<String>,
    /// Once, at this time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    /// Queue of the jobs it enqueues (default: the task's).
    #[arg(long)]
    queue: Option<String>,
    /// Priority of its jobs, 0-9.
    #[arg(long)]
    priority: Option<u8>,
    /// What to do about ticks missed while no beat ran.
    #[arg(long, value_enum, default_value = "run-once")]
    missed: Missed,
    /// Add it disabled.
    #[arg(long)]
    disabled: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `--missed`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Missed {
    /// Fire nothing for them.
    Skip,
    /// Fire once for all of them.
    RunOnce,
    /// Fire each (at most 100).
    RunAll,
}

/// `xylem beat`.
#[derive(Debug, Args)]
pub(crate) struct BeatArgs {
    /// How often to look for due schedules.
    #[arg(long, default_value = "500ms")]
    interval: String,
}

pub(crate) async fn run(store_url: &str, command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let schedules = store.stores.schedules.clone();
    match command {
        ScheduleCommand::Add(a) => add(&store.stores, a).await,
        ScheduleCommand::Ls { json } => {
            let all = schedules.list_schedules().await?;
            print_list(&all, json)
        }
        ScheduleCommand::Show { name } => {
            let schedule = get(&store.stores, &name).await?;
            print_json(&serde_json::to_value(&schedule)?)
        }
        ScheduleCommand::Rm { name } => {
            anyhow::ensure!(
                schedules.remove_schedule(&name).await?,
                "no schedule named `{name}`"
            );
            eprintln!("removed schedule {name}");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Enable { name } => set_enabled(&store.stores, &name, true).await,
        ScheduleCommand::Disable { name } => set_enabled(&store.stores, &name, false).await,
        ScheduleCommand::Next { name, count, json } => {
            let schedule = get(&store.stores, &name).await?;
            next(&schedule, count, json)
        }
    }
}

async fn get(stores: &xylem_core::Stores, name: &str) -> anyhow::Result<Schedule> {
    stores
        .schedules
        .get_schedule(name)
        .await?
        .with_context(|| format!("no schedule named `{name}` (see `xylem schedule ls`)"))
}

async fn add(stores: &xylem_core::Stores, a: AddArgs) -> anyhow::Result<ExitCode> {
    let spec = match (&a.cron, &a.every, &a.at) {
        (Some(expr), _, _) => Spec::cron(expr, a.tz.as_deref())?,
        (_, Some(every), _) => {
            let every = parse_duration(every)?;
            let spec = Spec::Every {
                every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            };
            spec.check()?;
            spec
        }
        (_, _, Some(at)) => Spec::At {
            at: parse_rfc3339(at).map_err(anyhow::Error::msg)?,
        },
        _ => anyhow::bail!("give --cron, --every or --at"),
    };
    xylem_core::client::validate_task_name(&a.task)?;
    serde_json::from_str::<serde_json::Value>(&a.args).context("--args is not JSON")?;
    // The task must exist now: a typo is refused before it fires.
    let client = Client::new(stores.clone());
    client
        .prepare(xylem_core::EnqueueRequest::new(&a.task, &a.args))
        .await?;
    let mut schedule = Schedule::new(&a.name, &a.task, spec, now_ms())?;
    schedule.args = a.args;
    schedule.queue = a.queue;
    schedule.priority = a.priority;
    schedule.enabled = !a.disabled;
    schedule.missed = match a.missed {
        Missed::Skip => MissedRuns::Skip,
        Missed::RunOnce => MissedRuns::RunOnce,
        Missed::RunAll => MissedRuns::RunAll,
    };
    anyhow::ensure!(
        stores.schedules.put_schedule(&schedule).await?.is_some(),
        "a schedule named `{}` exists (remove it first, or pick another name)",
        schedule.name
    );
    if a.json {
        return print_json(&serde_json::to_value(&schedule)?);
    }
    eprintln!(
        "added schedule {}: next run {}",
        schedule.name,
        schedule.next_run.map_or("never".to_owned(), format_ms)
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_enabled(
    stores: &xylem_core::Stores,
    name: &str,
    enabled: bool,
) -> anyhow::Result<ExitCode> {
    // Read, change, write the version read: a beat moving it on meanwhile
    // makes the write lose, and it is tried again.
    for _ in 0..10 {
        let mut schedule = get(stores, name).await?;
        schedule.enabled = enabled;
        if enabled {
            schedule.next_run = schedule.spec.next_after(now_ms(), schedule.anchor)?;
        }
        if stores.schedules.put_schedule(&schedule).await?.is_some() {
            eprintln!(
                "schedule {name} {}",
                if enabled { "enabled" } else { "disabled" }
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    anyhow::bail!("schedule `{name}` keeps changing under this edit: try again")
}

#[allow(clippy::print_stdout)]
fn print_json(value: &serde_json::Value) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

fn spec_text(spec: &Spec) -> String {
    match spec {
        Spec::Cron { expr, tz } => format!("cron {expr} ({tz})"),
        Spec::Every { every_ms } => format!("every {}", format::ms(*every_ms)),
        Spec::At { at } => format!("at {}", format_ms(*at)),
    }
}

#[allow(clippy::print_stdout)]
fn print_list(all: &[Schedule], json: bool) -> anyhow::Result<ExitCode> {
    if json {
        return print_json(&serde_json::to_value(all)?);
    }
    if all.is_empty() {
        println!("no schedules: add one with `xylem schedule add NAME --task T --every 1h`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.task.clone(),
                spec_text(&s.spec),
                if s.enabled { "yes" } else { "no" }.to_owned(),
                s.last_run.map_or("-".to_owned(), format_ms),
                s.next_run.map_or("-".to_owned(), format_ms),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(
            &["NAME", "TASK", "WHEN", "ENABLED", "LAST RUN", "NEXT RUN"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn next(schedule: &Schedule, count: usize, json: bool) -> anyhow::Result<ExitCode> {
    let times = schedule.spec.upcoming(now_ms(), schedule.anchor, count)?;
    let zone = schedule.spec.time_zone()?;
    let local = |t: i64| -> String {
        jiff::Timestamp::from_millisecond(t)
            .map(|ts| {
                ts.to_zoned(zone.clone())
                    .strftime("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_default()
    };
    if json {
        let doc: Vec<serde_json::Value> = times
            .iter()
            .map(|t| serde_json::json!({ "utc": format_ms(*t), "local": local(*t) }))
            .collect();
        return print_json(&serde_json::Value::Array(doc));
    }
    for t in times {
        println!("{}  ({})", local(t), format_ms(t));
    }
    Ok(ExitCode::SUCCESS)
}

/// `xylem beat`: fires due schedules until stopped (Ctrl-C, SIGTERM).
pub(crate) async fn beat(store_url: &str, a: BeatArgs) -> anyhow::Result<ExitCode> {
    let interval: Duration = parse_duration(&a.interval)?;
    let shutdown = super::worker::ShutdownSignal::install();
    let store = crate::store::open(store_url).await?;
    let client = Client::new(store.stores.clone());
    xylem_core::schedule::beat::run(client, interval, shutdown.wait()).await;
    Ok(ExitCode::SUCCESS)
}
