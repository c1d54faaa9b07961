//! Python plugins: `app.py` (with `class Handler`, usually Xylem's guest
//! helper's), built with componentize-py. The WIT and the helper
//! (`xylem.py`) come from this binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BuildError, Staging, installed, output_path, run};

/// Xylem's Python guest helper (`guest-sdk/python/xylem.py`).
pub(super) const HELPER: &str = include_str!("../../../../guest-sdk/python/xylem.py");

const TOOL: &str = "componentize-py";

pub(super) fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    if !dir.join("app.py").is_file() {
        return Err(BuildError::Unrecognised(dir.to_owned()));
    }
    if !installed(TOOL) {
        return Err(BuildError::Missing {
            language: "Python",
            tool: TOOL,
            install: "pip install componentize-py==0.25.1",
        });
    }
    let out = output_path(dir)?;
    let staging = Staging::new(&[("sdk/xylem.py", HELPER)])?;
    let mut command = Command::new(TOOL);
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
