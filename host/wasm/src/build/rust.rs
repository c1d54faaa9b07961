//! Rust plugins: `cargo build --release --target wasm32-wasip2`, adding
//! the target with rustup first if it is missing.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::BuildError;

/// The Rust target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Makes sure the wasm32-wasip2 target is installed, adding it with rustup
/// if not. Returns whether it had to be added.
pub fn ensure_target() -> Result<bool, BuildError> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|source| BuildError::Spawn {
            tool: "rustup".to_owned(),
            source,
        })?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(false);
    }
    tracing::info!("the {TARGET} target is missing: running `rustup target add {TARGET}`");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|source| BuildError::Spawn {
            tool: "rustup".to_owned(),
            source,
        })?;
    if status.success() {
        Ok(true)
    } else {
        Err(BuildError::Target)
    }
}

/// Builds the plugin crate in `crate_dir` (release, wasm32-wasip2) and
/// returns the path of the component it wrote. Compiler output goes to
/// this process's stderr.
pub(super) fn build(crate_dir: &Path) -> Result<PathBuf, BuildError> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(crate_dir.to_owned()));
    }
    ensure_target()?;
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(crate_dir)
        // A parent `cargo test` or `cargo run` must not leak its own target
        // settings into the plugin build.
        .env_remove("CARGO_BUILD_TARGET")
        // Plugins build in their own workspace's target dir: sharing the
        // host's (a global CARGO_TARGET_DIR) could wait on the lock of the
        // very `cargo test` that asked for the plugin.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| BuildError::Spawn {
            tool: "cargo".to_owned(),
            source,
        })?;

    let mut artifact = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(path) = component_artifact(&line, &manifest) {
                artifact = Some(path);
            }
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn {
        tool: "cargo".to_owned(),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Cargo(crate_dir.to_owned()));
    }
    artifact.ok_or_else(|| BuildError::NoArtifact(crate_dir.to_owned()))
}

/// The `.wasm` file of a `compiler-artifact` message for the crate at
/// `manifest`, if `line` is one.
fn component_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let manifest_path = message.get("manifest_path")?.as_str()?;
    if Path::new(manifest_path) != manifest {
        return None;
    }
    message
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}
