//! `xylem plugin build|inspect`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use xylem_core::{TaskFilter, TaskState};

use crate::format;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Build a plugin directory into a component, in its language.
    ///
    /// Recognised by its files: Cargo.toml (Rust: cargo, wasm32-wasip2,
    /// the target added with rustup if missing), app.py (Python:
    /// componentize-py), package.json (JavaScript: componentize-js, `npm
    /// install` first), Makefile + *.c (C: clang + wasi-libc). A missing
    /// tool is named with its install command. The last line of standard
    /// output is the path of the component written (Rust: cargo's target
    /// dir; others: DIR/build/).
    Build {
        /// The plugin's directory.
        path: PathBuf,
    },
    /// Validate a component and store it: every worker picks it up
    /// without a restart (jobs already running finish on their version).
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Refuse a file larger than this (checked before it is read),
        /// e.g. 256MiB.
        #[arg(long, default_value = "64MiB", value_parser = parse_max_size)]
        max_size: u64,
        #[command(flatten)]
        quota: PushQuotaFlags,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stored plugin versions, latest push first.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One stored version: by digest (or a prefix of it) or by a task name.
    Show {
        /// Digest, digest prefix, or task name.
        what: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored version; each of its tasks falls back to the most
    /// recently pushed other version that declares it (push order, not
    /// clocks; a re-push counts as a push). Refused if it is the only version
    /// providing some task (its queued jobs would be dead-lettered),
    /// unless --force.
    Rm {
        /// Digest or a unique prefix of it.
        digest: String,
        /// Remove it even if some task would be left without a plugin.
        #[arg(long)]
        force: bool,
    },
    /// Validate a component against the plugin WIT world and list its tasks.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(store_url: &str, cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Build { path } => build(path).await,
        PluginCommand::Inspect { file, json } => inspect(file, json).await,
        PluginCommand::Push {
            file,
            max_size,
            quota,
            json,
        } => push(store_url, file, max_size, quota.into_push_quota()?, json).await,
        PluginCommand::Ls { json } => list(store_url, json).await,
        PluginCommand::Show { what, json } => show(store_url, &what, json).await,
        PluginCommand::Rm { digest, force } => remove(store_url, &digest, force).await,
    }
}

/// The largest component `plugin push` reads by default.
pub(crate) const DEFAULT_MAX_SIZE: u64 = 64 * 1024 * 1024;

fn parse_max_size(text: &str) -> Result<u64, String> {
    match xylem_core::limits::parse_size(text) {
        Ok(0) => Err("the size limit must be more than 0".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads a component, refusing it from its metadata — before reading a
/// byte — if it is larger than `max_size` (and, should it grow meanwhile,
/// reading no more than `max_size + 1` bytes).
pub(crate) async fn read_component(file: &Path, max_size: u64) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;

    let too_big = |size: u64| {
        let hint = if max_size == DEFAULT_MAX_SIZE {
            " (raise it with --max-size)"
        } else {
            ""
        };
        anyhow::anyhow!(
            "{} is {} ({size} bytes), over the {} limit of a plugin{hint}",
            file.display(),
            format::bytes(size),
            format::bytes(max_size)
        )
    };
    let opened = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let metadata = opened
        .metadata()
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    anyhow::ensure!(
        metadata.is_file(),
        "cannot read {}: not a file",
        file.display()
    );
    if metadata.len() > max_size {
        return Err(too_big(metadata.len()));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    opened
        .take(max_size.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    if bytes.len() as u64 > max_size {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The operator's child-job quota for the tasks of a plugin being pushed:
/// the quota of their root jobs on every worker (overriding the worker's
/// flags; a job's own `enqueue --max-...` overrides this).
#[derive(Debug, clap::Args)]
pub(crate) struct PushQuotaFlags {
    #[command(flatten)]
    quota: super::enqueue::ChildQuotaFlags,
    /// Only for this task (repeatable; default: every task of the plugin).
    #[arg(
        long = "quota-task",
        value_name = "TASK",
        help_heading = "Child-job quota"
    )]
    tasks: Vec<String>,
    /// At most this many jobs of TASK running at once across every worker,
    /// optionally per value of a job header: `report.build=2`,
    /// `api.call='2 by tenant'` (repeatable).
    #[arg(long, value_name = "TASK=LIMIT", value_parser = parse_concurrency)]
    concurrency: Vec<(String, String)>,
    /// At most N starts of TASK per second, minute or hour across every
    /// worker, optionally per header value: `api.call=20/s`,
    /// `api.call='5/s by tenant'` (repeatable); replaces the limit the
    /// plugin declares.
    #[arg(long, value_name = "TASK=LIMIT", value_parser = parse_rate_limit)]
    rate_limit: Vec<(String, String)>,
}

/// `TASK=LIMIT` with a limit that parses as `L`; `examples` for the message.
fn parse_task_limit<L>(text: &str, examples: &str) -> Result<(String, String), String>
where
    L: std::str::FromStr,
    L::Err: std::fmt::Display,
{
    let (task, limit) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: write TASK=LIMIT, e.g. {examples}"))?;
    limit.parse::<L>().map_err(|e| e.to_string())?;
    Ok((task.trim().to_owned(), limit.trim().to_owned()))
}

fn parse_rate_limit(text: &str) -> Result<(String, String), String> {
    parse_task_limit::<xylem_core::rate_limit::RateLimit>(
        text,
        "api.call=20/s or 'api.call=5/s by tenant'",
    )
}

fn parse_concurrency(text: &str) -> Result<(String, String), String> {
    parse_task_limit::<xylem_core::concurrency::ConcurrencyLimit>(
        text,
        "report.build=2 or 'api.call=2 by tenant'",
    )
}

impl PushQuotaFlags {
    fn into_push_quota(self) -> anyhow::Result<xylem_wasm::PushQuota> {
        let quota = self.quota.overrides()?;
        anyhow::ensure!(
            self.tasks.is_empty() || !quota.is_empty(),
            "--quota-task names tasks for a quota, but no --max-children, --max-child-args, \
             --max-depth or --max-descendants was given"
        );
        Ok(xylem_wasm::PushQuota {
            quota,
            tasks: self.tasks,
            concurrency: self.concurrency,
            rate_limits: self.rate_limit,
        })
    }
}

#[allow(clippy::print_stdout)]
async fn push(
    store_url: &str,
    file: PathBuf,
    max_size: u64,
    quota: xylem_wasm::PushQuota,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = read_component(&file, max_size).await?;
    let store = crate::store::open(store_url).await?;
    let runtime = super::wasm_runtime()?;
    if xylem_wasm::is_workflow_component(&bytes) {
        let plugin =
            xylem_wasm::push_workflow_plugin(&runtime, store.stores.plugins.as_ref(), &bytes)
                .await
                .with_context(|| format!("{} was not pushed", file.display()))?;
        let names: Vec<&str> = plugin.workflows().iter().map(|(n, _)| n.as_str()).collect();
        if json {
            let doc = serde_json::json!({ "digest": plugin.digest(), "workflows": names });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            println!(
                "pushed sha256:{} (workflow plugin, {})",
                plugin.digest(),
                format::bytes(bytes.len() as u64)
            );
            for name in names {
                println!("  workflow {name}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let plugin =
        xylem_wasm::push_plugin_with_quota(&runtime, store.stores.plugins.as_ref(), &bytes, &quota)
            .await
            .with_context(|| format!("{} was not pushed", file.display()))?;
    if json {
        let doc = serde_json::json!({ "digest": plugin.digest(), "tasks": plugin.tasks() });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "pushed sha256:{} ({})",
            plugin.digest(),
            format::bytes(plugin.size() as u64)
        );
        for task in plugin.tasks() {
            println!("  {}", task.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one stored version `what` names: a digest, a digest prefix or a task.
async fn find(
    store: &crate::store::OpenStore,
    what: &str,
) -> anyhow::Result<xylem_core::store::PluginInfo> {
    let plugins = store.stores.plugins.plugins().await?;
    let routes = store.stores.plugins.routes().await?;
    let digest = routes
        .iter()
        .find(|r| r.task == what)
        .map(|r| r.digest.clone());
    let matches: Vec<_> = plugins
        .into_iter()
        .filter(|p| match &digest {
            Some(d) => &p.digest == d,
            None => p.digest.starts_with(what.trim_start_matches("sha256:")),
        })
        .collect();
    match matches.len() {
        0 => anyhow::bail!("no stored plugin matches `{what}` (see `xylem plugin ls`)"),
        1 => Ok(matches.into_iter().next().expect("one match")),
        n => anyhow::bail!("`{what}` matches {n} plugins: give more of the digest"),
    }
}

#[allow(clippy::print_stdout)]
async fn list(store_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let plugins = store.stores.plugins.plugins().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(ExitCode::SUCCESS);
    }
    if plugins.is_empty() {
        println!("no plugins: push one with `xylem plugin push FILE.wasm`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let tasks: Vec<&str> = p.tasks.iter().map(|t| t.name.as_str()).collect();
            vec![
                p.digest[..12].to_owned(),
                format::bytes(p.size),
                xylem_core::time::format_ms(p.pushed_at),
                format!("{}/{}", p.active_tasks.len(), tasks.len()),
                format::clip(&tasks.join(" "), 60),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(&["DIGEST", "SIZE", "PUSHED", "ACTIVE", "TASKS"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn show(store_url: &str, what: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let plugin = find(&store, what).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plugin)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("digest   sha256:{}", plugin.digest);
    println!("size     {}", format::bytes(plugin.size));
    println!("pushed   {}", xylem_core::time::format_ms(plugin.pushed_at));
    println!("grants   none (no files, no environment, no network)");
    println!();
    for task in &plugin.tasks {
        let active = if plugin.active_tasks.contains(&task.name) {
            "active"
        } else {
            "superseded"
        };
        println!(
            "{}  [{active}]  {}",
            task.name,
            task.description.as_deref().unwrap_or("")
        );
        println!("    {}", format::options(&task.options));
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn remove(store_url: &str, digest: &str, force: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let plugin = find(&store, digest).await?;
    // Tasks no other stored version declares: once this one is gone, their
    // jobs can only be dead-lettered as unknown tasks.
    let others = store.stores.plugins.plugins().await?;
    let orphaned: Vec<&str> = plugin
        .tasks
        .iter()
        .map(|t| t.name.as_str())
        .filter(|name| {
            !others
                .iter()
                .filter(|p| p.digest != plugin.digest)
                .any(|p| p.tasks.iter().any(|t| t.name == *name))
        })
        .collect();
    if !orphaned.is_empty() && !force {
        let mut lines = Vec::new();
        for task in &orphaned {
            let waiting = waiting_jobs(&store, task).await?;
            lines.push(format!("  {task}  ({waiting} waiting)"));
        }
        eprintln!(
            "error: sha256:{} is the only version providing {} task(s); removing it \
             would leave them without a plugin, and their queued jobs would be \
             dead-lettered as unknown tasks:\n{}\nPush a version that declares them \
             first, or remove it anyway with --force.",
            &plugin.digest[..12],
            orphaned.len(),
            lines.join("\n")
        );
        return Ok(ExitCode::FAILURE);
    }
    store.stores.plugins.remove_plugin(&plugin.digest).await?;
    if !orphaned.is_empty() {
        eprintln!(
            "warning: no plugin provides {} any more (--force)",
            orphaned.join(", ")
        );
    }
    println!("removed sha256:{}", plugin.digest);
    Ok(ExitCode::SUCCESS)
}

/// How many jobs of `task` wait to run (queued or retrying), as text:
/// counted up to 10,000.
async fn waiting_jobs(store: &crate::store::OpenStore, task: &str) -> anyhow::Result<String> {
    const CAP: usize = 10_000;
    let mut total = 0;
    for state in [TaskState::Queued, TaskState::Retrying] {
        let filter = TaskFilter {
            state: Some(state),
            task: Some(task.to_owned()),
            limit: CAP + 1,
            ..TaskFilter::default()
        };
        total += store.stores.results.list(&filter).await?.len();
    }
    Ok(if total > CAP {
        format!("more than {CAP} jobs")
    } else {
        format!("{total} job(s)")
    })
}

#[allow(clippy::print_stdout)]
async fn build(path: PathBuf) -> anyhow::Result<ExitCode> {
    let component = tokio::task::spawn_blocking(move || xylem_wasm::build_plugin(&path))
        .await
        .context("the build task failed")??;
    println!("{}", component.display());
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
async fn inspect(file: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = super::wasm_runtime()?;
    let plugin = runtime
        .load_file(&file)
        .await
        .with_context(|| format!("{} is not a usable plugin", file.display()))?;
    if json {
        let doc = serde_json::json!({
            "file": file,
            "digest": plugin.digest(),
            "size": plugin.size(),
            "tasks": plugin.tasks(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("plugin   {}", file.display());
    println!("digest   sha256:{}", plugin.digest());
    println!("size     {}", format::bytes(plugin.size() as u64));
    println!("world    {} (valid)", xylem_wasm::WIT_WORLD);
    println!();
    let width = plugin
        .tasks()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}  DESCRIPTION / DEFAULTS", "TASK");
    for task in plugin.tasks() {
        println!(
            "{:width$}  {}",
            task.name,
            task.description.as_deref().unwrap_or("-")
        );
        println!("{:width$}  {}", "", format::options(&task.options));
        if let Some(schema) = &task.args_schema {
            println!("{:width$}  args schema: {schema}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}
