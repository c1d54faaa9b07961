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
    /// Validate a component against the plugin WIT world and list its tasks.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Build { path } => build(path).await,
        PluginCommand::Inspect { file, json } => inspect(file, json).await,
    }
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
