//! `xylem schedule` (add, ls, show, rm, enable, disable, next, apply) and
//! `xylem beat`: schedules kept in the store, fired by any number of beat
//! processes, each tick once (`xylem_core::schedule`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use xylem_core::limits::parse_duration;
use xylem_core::schedule::apply::{self as applying, Step};
use xylem_core::schedule::{MissedRuns, Schedule, Spec};
use xylem_core::time::{Millis, format_ms, ms, now_ms, parse_rfc3339};
use xylem_core::{Client, EnqueueRequest};

use crate::format;

/// What `xylem schedule` does.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Add a schedule: `--cron EXPR [--tz ZONE]`, `--every 30s` or `--at TIME`.
    Add(Box<AddArgs>),
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
    /// Make the store's schedules what a YAML, TOML or JSON file says:
    /// adds, changes and (with --prune) removes, shown as a diff first.
    /// Applying the same file again changes nothing.
    Apply(ApplyArgs),
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
    #[command(flatten)]
    definition: Definition,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What defines a schedule: the flags of `schedule add`, and the keys of
/// an entry of a schedule file (`_` for `-`).
#[derive(Debug, Clone, Args, serde::Deserialize)]
pub(crate) struct Definition {
    /// The task it enqueues.
    #[arg(long)]
    task: String,
    /// Its JSON arguments.
    #[arg(long, default_value = "{}")]
    #[serde(default = "empty_object")]
    args: String,
    /// A cron expression: 5 fields, or 6 with seconds first; names,
    /// ranges, steps, lists, L, W, #, @hourly/@daily/@weekly/@monthly/@yearly.
    #[arg(long, conflicts_with_all = ["every", "at"], required_unless_present_any = ["every", "at"])]
    #[serde(default)]
    cron: Option<String>,
    /// The cron expression's IANA time zone (default UTC).
    #[arg(long, requires = "cron")]
    #[serde(default)]
    tz: Option<String>,
    /// A fixed interval, e.g. 30s or 1h.
    #[arg(long, conflicts_with = "at")]
    #[serde(default)]
    every: Option<String>,
    /// Once, at this time (RFC 3339).
    #[arg(long)]
    #[serde(default)]
    at: Option<String>,
    /// Queue of the jobs it enqueues (default: the task's).
    #[arg(long, short)]
    #[serde(default)]
    queue: Option<String>,
    /// Priority of its jobs, 0-9.
    #[arg(long, short, allow_negative_numbers = true, value_parser = super::enqueue::parse_priority)]
    #[serde(default)]
    priority: Option<u8>,
    /// A fired job expires if it has not started this long after its tick.
    #[arg(long, allow_hyphen_values = true,
          value_parser = |s: &str| super::enqueue::not_negative("an expiry", s))]
    #[serde(default)]
    expires: Option<String>,
    /// What to do about ticks missed while no beat ran (over 10 s late).
    #[arg(long, value_enum, default_value = "run-once")]
    #[serde(default)]
    missed: Missed,
    /// Add it disabled.
    #[arg(long)]
    #[serde(default)]
    disabled: bool,
    /// Each fired job's retries, limits, callbacks and headers.
    #[command(flatten)]
    #[serde(flatten)]
    run: super::enqueue::RunFlags,
}

fn empty_object() -> String {
    "{}".to_owned()
}

/// The keys of a schedule file's entry besides [`super::enqueue::RUN_KEYS`].
const DEFINITION_KEYS: &[&str] = &[
    "name", "task", "args", "cron", "tz", "every", "at", "queue", "priority", "expires", "missed",
    "enabled",
];

/// `xylem schedule apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// The file: YAML (.yaml, .yml), TOML (.toml) or JSON (.json) — a list
    /// of schedules under `schedules`, each with a `name` and the keys of
    /// `schedule add`'s flags (`_` for `-`); see docs/schedules.md.
    file: std::path::PathBuf,
    /// Show what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove the store's schedules the file does not name.
    #[arg(long)]
    prune: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

/// `--missed`.
#[derive(Debug, Clone, Copy, Default, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Missed {
    /// Fire nothing for them.
    Skip,
    /// Fire once for all of them.
    #[default]
    #[serde(alias = "run_once")]
    RunOnce,
    /// Fire each (at most 100).
    #[serde(alias = "run_all")]
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
        ScheduleCommand::Add(a) => add(&store.stores, *a).await,
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
        ScheduleCommand::Apply(a) => apply(&store.stores, a).await,
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

impl Definition {
    /// The schedule `name` this defines, its first tick after `now`; its
    /// task must exist (a typo is refused before it fires) and its jobs'
    /// options pass the rules every enqueue does.
    async fn schedule(&self, client: &Client, name: &str, now: Millis) -> anyhow::Result<Schedule> {
        xylem_core::client::validate_task_name(&self.task)?;
        serde_json::from_str::<serde_json::Value>(&self.args).context("args are not JSON")?;
        let spec = match (&self.cron, &self.every, &self.at) {
            (Some(expr), None, None) => Spec::cron(expr, self.tz.as_deref())?,
            (None, Some(every), None) => {
                let every = super::enqueue::duration("an interval", every)?;
                let spec = Spec::Every {
                    every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                };
                spec.check()?;
                spec
            }
            (None, None, Some(at)) => Spec::At {
                at: parse_rfc3339(at).map_err(anyhow::Error::msg)?,
            },
            _ => anyhow::bail!("give one of cron, every or at"),
        };
        anyhow::ensure!(
            self.tz.is_none() || self.cron.is_some(),
            "tz goes with cron (intervals and one-shots are in UTC)"
        );
        let mut req = EnqueueRequest::new(&self.task, &self.args);
        req.queue = super::enqueue::checked_queue(&self.queue)?;
        req.priority = super::enqueue::checked_priority(self.priority)?;
        self.run.apply(&mut req)?;
        client.prepare(req.clone()).await?;
        let mut schedule = Schedule::new(name, &self.task, spec, now)?;
        schedule.args = self.args.clone();
        schedule.queue = req.queue;
        schedule.priority = req.priority;
        schedule.max_retries = req.max_retries;
        schedule.headers = req.headers;
        schedule.options = req.options;
        schedule.expires_ms = self
            .expires
            .as_deref()
            .map(|e| super::enqueue::duration("an expiry", e).map(|d| ms(d) as u64))
            .transpose()?;
        schedule.enabled = !self.disabled;
        schedule.missed = match self.missed {
            Missed::Skip => MissedRuns::Skip,
            Missed::RunOnce => MissedRuns::RunOnce,
            Missed::RunAll => MissedRuns::RunAll,
        };
        Ok(schedule)
    }
}

async fn add(stores: &xylem_core::Stores, a: AddArgs) -> anyhow::Result<ExitCode> {
    let schedule = add_schedule(stores, &a.name, &a.definition).await?;
    if a.json {
        return print_json(&serde_json::to_value(&schedule)?);
    }
    eprintln!(
        "added schedule {}: {}; next run {}",
        schedule.name,
        spec_text(&schedule.spec),
        schedule.next_run.map_or("never".to_owned(), format_ms)
    );
    Ok(ExitCode::SUCCESS)
}

/// Adds schedule `name` as `definition` defines it (checked first); fails
/// if the name is taken.
pub(crate) async fn add_schedule(
    stores: &xylem_core::Stores,
    name: &str,
    definition: &Definition,
) -> anyhow::Result<Schedule> {
    validate_name(name)?;
    let client = Client::new(stores.clone());
    let mut schedule = definition.schedule(&client, name, now_ms()).await?;
    let Some(version) = stores.schedules.put_schedule(&schedule).await? else {
        anyhow::bail!(
            "a schedule named `{}` exists (remove it first, pick another name, or use `schedule apply`)",
            schedule.name
        );
    };
    schedule.version = version;
    Ok(schedule)
}

/// A schedule's name: what a job name may be (it goes into headers and
/// job ids' hash), 1-200 characters, no control characters.
fn validate_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.trim().is_empty() && name.len() <= 200 && !name.chars().any(char::is_control),
        "a schedule name must be 1-200 characters with no control characters, not `{}`",
        name.escape_debug()
    );
    Ok(())
}

/// `xylem schedule apply FILE`: every entry checked, the plan shown, then
/// (unless --dry-run) carried out.
#[allow(clippy::print_stdout)]
async fn apply(stores: &xylem_core::Stores, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let file = a.file.display().to_string();
    let entries = read_file(&a.file)?;
    let client = Client::new(stores.clone());
    let now = now_ms();
    let mut desired = Vec::with_capacity(entries.len());
    for (i, (name, definition)) in entries.iter().enumerate() {
        let schedule = definition
            .schedule(&client, name, now)
            .await
            .with_context(|| {
                format!("{file}: schedule {} (`{name}`): nothing was applied", i + 1)
            })?;
        desired.push(schedule);
    }
    let current = stores.schedules.list_schedules().await?;
    let steps = applying::plan(&current, &desired, a.prune);
    if !a.dry_run {
        applying::apply(stores.schedules.as_ref(), &steps, now).await?;
    }
    if a.json {
        return print_json(&serde_json::json!({ "dry_run": a.dry_run, "steps": steps }));
    }
    let count = |f: fn(&Step) -> bool| steps.iter().filter(|s| f(s)).count();
    for step in &steps {
        match step {
            Step::Add { schedule } => println!(
                "+ {}: {} → {}",
                schedule.name,
                spec_text(&schedule.spec),
                schedule.task
            ),
            Step::Change { name, changes, .. } => {
                println!("~ {name}:");
                for change in changes {
                    println!(
                        "    {}: {} → {}",
                        change.field,
                        field_text(&change.field, &change.from),
                        field_text(&change.field, &change.to)
                    );
                }
            }
            Step::Keep { name } => println!("= {name}"),
            Step::Remove { name } => println!("- {name}"),
        }
    }
    eprintln!(
        "{}{} added, {} changed, {} unchanged, {} removed",
        if a.dry_run {
            "dry run, nothing written: "
        } else {
            ""
        },
        count(|s| matches!(s, Step::Add { .. })),
        count(|s| matches!(s, Step::Change { .. })),
        count(|s| matches!(s, Step::Keep { .. })),
        count(|s| matches!(s, Step::Remove { .. })),
    );
    Ok(ExitCode::SUCCESS)
}

/// A changed field's value as a person reads it (a spec as `schedule ls`
/// shows it, anything else as JSON; unset as `-`).
fn field_text(field: &str, value: &serde_json::Value) -> String {
    if value.is_null() {
        return "-".to_owned();
    }
    if field == "spec"
        && let Ok(spec) = serde_json::from_value::<Spec>(value.clone())
    {
        return spec_text(&spec);
    }
    value.to_string()
}

/// The entries of a schedule file, by name, in the file's order: each
/// checked for unknown keys and a name used twice.
fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<(String, Definition)>> {
    let file = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {file}"))?;
    let doc: serde_json::Value = match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).with_context(|| format!("{file}: not TOML"))?,
        Some("json") => serde_json::from_str(&text).with_context(|| format!("{file}: not JSON"))?,
        // YAML is a superset of JSON: any other name is read as YAML.
        _ => yaml_serde::from_str(&text).with_context(|| format!("{file}: not YAML"))?,
    };
    let list = match doc {
        serde_json::Value::Array(list) => list,
        serde_json::Value::Object(mut top) => match top.remove("schedules") {
            Some(serde_json::Value::Array(list)) if top.is_empty() => list,
            _ => anyhow::bail!(
                "{file}: want a list of schedules under `schedules` (and nothing else)"
            ),
        },
        serde_json::Value::Null => Vec::new(),
        _ => anyhow::bail!("{file}: want a list of schedules under `schedules`"),
    };
    let mut entries: Vec<(String, Definition)> = Vec::with_capacity(list.len());
    for (i, entry) in list.into_iter().enumerate() {
        let at = |why: String| anyhow::anyhow!("{file}: schedule {}: {why}", i + 1);
        let (name, definition) = definition_entry(entry).map_err(at)?;
        if entries.iter().any(|(n, _)| *n == name) {
            return Err(at(format!("the name `{name}` is used twice")));
        }
        entries.push((name, definition));
    }
    Ok(entries)
}

/// One schedule of a file, or of a `POST /api/schedules` body: its name
/// and definition (the keys of `schedule add`'s flags, `args` as any value,
/// headers as a table or a list, `enabled`); an unknown key is refused.
pub(crate) fn definition_entry(entry: serde_json::Value) -> Result<(String, Definition), String> {
    let serde_json::Value::Object(mut entry) = entry else {
        return Err("not a table of keys".to_owned());
    };
    if let Some(key) = entry.keys().find(|k| {
        !DEFINITION_KEYS.contains(&k.as_str()) && !super::enqueue::RUN_KEYS.contains(&k.as_str())
    }) {
        return Err(format!(
            "unknown key `{key}` (known: {}, {})",
            DEFINITION_KEYS.join(", "),
            super::enqueue::RUN_KEYS.join(", ")
        ));
    }
    let name = match entry.remove("name") {
        Some(serde_json::Value::String(name)) => name,
        _ => return Err("no `name` (a string)".to_owned()),
    };
    validate_name(&name).map_err(|e| e.to_string())?;
    // Arguments as a value of the file's own format; headers as a
    // table or a list of NAME=VALUE; `enabled` rather than a flag.
    if let Some(args) = entry.remove("args") {
        entry.insert(
            "args".to_owned(),
            serde_json::Value::String(args.to_string()),
        );
    }
    for key in ["headers", "header"] {
        if let Some(serde_json::Value::Object(table)) = entry.remove(key) {
            let list = table
                .into_iter()
                .map(|(k, v)| {
                    serde_json::Value::String(match v {
                        serde_json::Value::String(v) => format!("{k}={v}"),
                        v => format!("{k}={v}"),
                    })
                })
                .collect();
            entry.insert(key.to_owned(), serde_json::Value::Array(list));
        }
    }
    if let Some(enabled) = entry.remove("enabled") {
        let enabled = enabled
            .as_bool()
            .ok_or_else(|| "`enabled` must be true or false".to_owned())?;
        entry.insert("disabled".to_owned(), serde_json::Value::Bool(!enabled));
    }
    let definition: Definition = serde_json::from_value(serde_json::Value::Object(entry))
        .map_err(|e| format!("`{name}`: {e}"))?;
    Ok((name, definition))
}

async fn set_enabled(
    stores: &xylem_core::Stores,
    name: &str,
    enabled: bool,
) -> anyhow::Result<ExitCode> {
    set_schedule_enabled(stores, name, enabled).await?;
    eprintln!(
        "schedule {name} {}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Enables or disables schedule `name` (an enabled one is due at its next
/// tick from now); the schedule as written.
pub(crate) async fn set_schedule_enabled(
    stores: &xylem_core::Stores,
    name: &str,
    enabled: bool,
) -> anyhow::Result<Schedule> {
    // Read, change, write the version read: a beat moving it on meanwhile
    // makes the write lose, and it is tried again.
    for _ in 0..10 {
        let mut schedule = get(stores, name).await?;
        schedule.enabled = enabled;
        if enabled {
            schedule.next_run = schedule.spec.next_after(now_ms(), schedule.anchor)?;
        }
        if let Some(version) = stores.schedules.put_schedule(&schedule).await? {
            schedule.version = version;
            return Ok(schedule);
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
    let times = upcoming(schedule, count)?;
    if json {
        return print_json(&serde_json::to_value(&times)?);
    }
    for t in times {
        println!("{}  ({})", t.local, t.utc);
    }
    Ok(ExitCode::SUCCESS)
}

/// One fire time, in UTC and in the schedule's zone.
#[derive(Debug, serde::Serialize)]
pub(crate) struct FireTime {
    utc: String,
    local: String,
}

/// The next `count` fire times of `schedule` from now.
pub(crate) fn upcoming(schedule: &Schedule, count: usize) -> anyhow::Result<Vec<FireTime>> {
    let times = schedule.spec.upcoming(now_ms(), schedule.anchor, count)?;
    let zone = schedule.spec.time_zone()?;
    Ok(times
        .into_iter()
        .map(|t| FireTime {
            utc: format_ms(t),
            local: jiff::Timestamp::from_millisecond(t)
                .map(|ts| {
                    ts.to_zoned(zone.clone())
                        .strftime("%Y-%m-%d %H:%M:%S %Z")
                        .to_string()
                })
                .unwrap_or_default(),
        })
        .collect())
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
