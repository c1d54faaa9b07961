//! Python plugins: `app.py` (with `class Handler`, usually Xylem's guest
//! helper's), built with componentize-py. The WIT and the helper
//! (`xylem.py`) come from this binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BuildError, Staging, installed, output_path, run};

/// Xylem's Python guest helper (`guest-sdk/python/xylem.py`).
pub(super) const HELPER: &str = include_str!("../../../../guest-sdk/python/xylem.py");

const TOOL: &str = "componentize-py";

/// componentize-py: on the `PATH`, else in the virtualenv
/// `scripts/install-toolchains` makes
/// (`$XDG_CACHE_HOME/xylem/toolchains/python`, by default under
/// `~/.cache`).
fn find_tool() -> Option<PathBuf> {
    if installed(TOOL) {
        return Some(PathBuf::from(TOOL));
    }
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let cache = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|home| home.join(".cache")))?;
    let venv_tool = cache.join("xylem/toolchains/python/bin").join(TOOL);
    installed(&venv_tool).then_some(venv_tool)
}

pub(super) fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    if !dir.join("app.py").is_file() {
        return Err(BuildError::Unrecognised(dir.to_owned()));
    }
    let Some(tool) = find_tool() else {
        return Err(BuildError::Missing {
            language: "Python",
            tool: TOOL,
            install: "pip install componentize-py==0.25.1 (or scripts/install-toolchains)",
        });
    };
    let out = output_path(dir)?;
    let staging = Staging::new(&[("sdk/xylem.py", HELPER)])?;
    let mut command = Command::new(tool);
    command
        .arg("-d")
        .arg(staging.path("wit"))
        .args(["-w", "plugin", "componentize", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(staging.path("sdk"))
        .arg("app")
        .arg("-o")
        .arg(&out)
        .current_dir(dir);
    run(command, TOOL, dir)?;
    Ok(out)
}
