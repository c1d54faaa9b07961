//! JavaScript plugins: `package.json` and its entry module (`main`, by
//! default `app.js`) exporting `handler`, built with componentize-js from
//! the plugin's own `node_modules` (`npm install` runs first when it is
//! missing). The build runs on a copy of the plugin's files beside the WIT
//! and Xylem's guest helper (`xylem.js`, importable as `./xylem.js`), so
//! nothing is written into the plugin's directory but `node_modules` and
//! `build/`. The component does not import `wasi:http` (built with
//! `-d http fetch-event`): the host does not provide it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BuildError, Staging, installed, output_path, run};

/// Xylem's JavaScript guest helper (`guest-sdk/javascript/xylem.js`).
pub(super) const HELPER: &str = include_str!("../../../../guest-sdk/javascript/xylem.js");

const INSTALL: &str = "npm install --save-dev @bytecodealliance/componentize-js@0.23.0";

pub(super) fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    let componentize = dir.join("node_modules/.bin/componentize-js");
    if !componentize.is_file() {
        if !installed("npm") {
            return Err(BuildError::Missing {
                language: "JavaScript",
                tool: "npm",
                install: "install Node.js 18 or later with npm (apt-get install nodejs npm)",
            });
        }
        let mut npm = Command::new("npm");
        let verb = if dir.join("package-lock.json").is_file() {
            "ci"
        } else {
            "install"
        };
        npm.args([verb, "--no-audit", "--no-fund"]).current_dir(dir);
        run(npm, "npm", dir)?;
        if !componentize.is_file() {
            return Err(BuildError::Missing {
                language: "JavaScript",
                tool: "componentize-js (in the plugin's node_modules)",
                install: INSTALL,
            });
        }
    }
    let entry = entry_module(dir);
    let out = output_path(dir)?;
    let staging = Staging::new(&[("src/xylem.js", HELPER)])?;
    copy_sources(dir, &staging.path("src"))?;
    let mut command = Command::new(&componentize);
    command
        .arg(staging.path("src").join(&entry))
        .arg("--wit")
        .arg(staging.path("wit"))
        .args(["--world-name", "plugin", "-o"])
        .arg(&out)
        // Last: `-d` takes every value after it.
        .args(["-d", "http", "fetch-event"])
        .current_dir(dir);
    run(command, "componentize-js", dir)?;
    Ok(out)
}

/// The entry module: `main` in package.json, else `app.js`.
fn entry_module(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|package| package.get("main")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "app.js".to_owned())
}

/// Copies the plugin's files (not `node_modules`, `build` or dot files)
/// into `to`; the staged `xylem.js` is kept if the plugin has none.
fn copy_sources(from: &Path, to: &Path) -> Result<(), BuildError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io { path, source }
    };
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') || name_str == "node_modules" || name_str == "build" {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        if source.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
            copy_sources(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(io(&target))?;
        }
    }
    Ok(())
}
