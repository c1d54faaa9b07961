//! `xylem plugin build|inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::format;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Build a plugin crate into a component (release, wasm32-wasip2).
    ///
    /// Adds the wasm32-wasip2 target with rustup if it is missing. The last
    /// line of standard output is the path of the component written.
    Build {
        /// The plugin crate's directory (holding its Cargo.toml).
        path: PathBuf,
    },
    /// Validate a component and store it: every worker picks it up
    /// without a restart (jobs already running finish on their version).
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stored plugin versions, newest first.
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
    /// Delete a stored version; its tasks fall back to the newest other
    /// version that declares them.
    Rm {
        /// Digest or a unique prefix of it.
        digest: String,
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
        PluginCommand::Push { file, json } => push(store_url, file, json).await,
        PluginCommand::Ls { json } => list(store_url, json).await,
        PluginCommand::Show { what, json } => show(store_url, &what, json).await,
        PluginCommand::Rm { digest } => remove(store_url, &digest).await,
    }
}

#[allow(clippy::print_stdout)]
async fn push(store_url: &str, file: PathBuf, json: bool) -> anyhow::Result<ExitCode> {
    let bytes = tokio::fs::read(&file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let store = crate::store::open(store_url).await?;
    let runtime = super::wasm_runtime()?;
    let plugin = xylem_wasm::push_plugin(&runtime, store.stores.plugins.as_ref(), &bytes)
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
async fn remove(store_url: &str, digest: &str) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let plugin = find(&store, digest).await?;
    store.stores.plugins.remove_plugin(&plugin.digest).await?;
    println!("removed sha256:{}", plugin.digest);
    Ok(ExitCode::SUCCESS)
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
    println!("world    xylem:task/plugin@0.1.0 (valid)");
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
    }
    Ok(ExitCode::SUCCESS)
}
