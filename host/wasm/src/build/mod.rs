//! Builds a plugin directory into a WebAssembly component, in the
//! plugin's own language.
//!
//! Used by `xylem plugin build`, by the tests and by the benchmarks, so all
//! three build plugins the same way. The language is recognised by what
//! the directory holds ([`Language::detect`]):
//!
//! | holds | language | toolchain |
//! |---|---|---|
//! | `Cargo.toml` | Rust | cargo, target wasm32-wasip2 (added with rustup if missing) |
//! | `app.py` (or `pyproject.toml`) | Python | componentize-py |
//! | `package.json` | JavaScript | componentize-js, from the plugin's `node_modules` (`npm install` run first if needed) |
//! | `Makefile` or `*.c` | C | clang + wasi-libc, linked by the Rust toolchain's `wasm-component-ld`, through the plugin's Makefile |
//!
//! Python and JavaScript builds get the WIT and Xylem's guest helper
//! (`guest-sdk/python/xylem.py`, `guest-sdk/javascript/xylem.js`) from
//! this binary, so a plugin directory builds anywhere. A missing tool is
//! named with the command that installs it.

mod c;
mod javascript;
mod python;
mod rust;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use rust::{TARGET, ensure_target};

/// The WIT package every plugin implements (`wit/task.wit`).
pub const TASK_WIT: &str = include_str!("../../../../wit/task.wit");

/// The language of a plugin directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A cargo crate (`Cargo.toml`).
    Rust,
    /// `app.py`, built with componentize-py.
    Python,
    /// `package.json` + its entry module, built with componentize-js.
    JavaScript,
    /// C sources and a `Makefile`, built with clang for wasm32-wasi.
    C,
}

impl Language {
    /// Recognises a plugin directory's language by the files it holds;
    /// `None` if nothing tells.
    pub fn detect(dir: &Path) -> Option<Self> {
        let has = |name: &str| dir.join(name).is_file();
        if has("Cargo.toml") {
            Some(Self::Rust)
        } else if has("app.py") || has("pyproject.toml") {
            Some(Self::Python)
        } else if has("package.json") {
            Some(Self::JavaScript)
        } else if has("Makefile")
            || std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "c"))
            })
        {
            Some(Self::C)
        } else {
            None
        }
    }

    /// The language's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::Python => "Python",
            Self::JavaScript => "JavaScript",
            Self::C => "C",
        }
    }
}

/// Why a plugin could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The directory holds nothing a plugin build recognises.
    #[error(
        "{0} holds no plugin: expected Cargo.toml (Rust), app.py (Python), package.json (JavaScript) or a Makefile with *.c files (C)"
    )]
    Unrecognised(PathBuf),
    /// No `Cargo.toml` where the crate should be.
    #[error("no Cargo.toml in {0}: point at a plugin crate's directory")]
    NotACrate(PathBuf),
    /// A tool the build needs is not installed.
    #[error("building a {language} plugin needs {tool}, which is not installed: {install}")]
    Missing {
        /// The plugin's language.
        language: &'static str,
        /// The tool.
        tool: &'static str,
        /// How to install it.
        install: &'static str,
    },
    /// A tool could not be started.
    #[error("cannot run `{tool}`: {source}")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// The wasm32-wasip2 target is missing and could not be added.
    #[error(
        "the {TARGET} target is not installed and `rustup target add {TARGET}` failed; install it by hand"
    )]
    Target,
    /// cargo reported an error.
    #[error("cargo build failed for {0} (see the compiler output above)")]
    Cargo(PathBuf),
    /// cargo built nothing that looks like a component.
    #[error(
        "cargo built no .wasm for {0}: is the crate a `cdylib` (`[lib] crate-type = [\"cdylib\"]`)?"
    )]
    NoArtifact(PathBuf),
    /// The language's toolchain reported an error.
    #[error("`{tool}` failed for {dir} (see its output above)")]
    Tool {
        /// The tool.
        tool: String,
        /// The plugin directory.
        dir: PathBuf,
    },
    /// Writing the build's files failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds the plugin in `dir`, in its language (see the module docs), and
/// returns the path of the component it wrote. Tool output goes to this
/// process's stderr.
pub fn build_plugin(dir: &Path) -> Result<PathBuf, BuildError> {
    // Tools run in the plugin's directory: every path handed to them is
    // absolute.
    let dir = &std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    match Language::detect(dir) {
        // cargo locks its own build directory.
        Some(Language::Rust) => rust::build(dir),
        Some(language) => {
            let _lock = BuildLock::take(dir)?;
            if let Some(built) = up_to_date(dir) {
                tracing::info!(component = %built.display(), "up to date: newer than every source and this xylem");
                return Ok(built);
            }
            match language {
                Language::Python => python::build(dir),
                Language::JavaScript => javascript::build(dir),
                _ => c::build(dir),
            }
        }
        None if !dir.is_dir() => Err(BuildError::NotACrate(dir.to_owned())),
        None => Err(BuildError::Unrecognised(dir.to_owned())),
    }
}

/// The component a previous build wrote, if it is newer than every file
/// of the plugin (but `build/`, `node_modules/`, `__pycache__/` and dot
/// files) and than this executable (which carries the WIT and the guest
/// helpers): then there is nothing to do, as `make` would say.
fn up_to_date(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let built = dir.join("build").join(format!("{name}.wasm"));
    let built_at = std::fs::metadata(&built).ok()?.modified().ok()?;
    let exe_at = std::env::current_exe()
        .and_then(std::fs::metadata)
        .and_then(|m| m.modified())
        .ok()?;
    (exe_at < built_at && newest_source(dir)? < built_at).then_some(built)
}

/// The latest modification time of the plugin's sources (see
/// [`up_to_date`]); `None` if one cannot be read.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = std::time::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            || ["build", "node_modules", "__pycache__"].contains(&name.as_ref())
        {
            continue;
        }
        let meta = entry.metadata().ok()?;
        let at = if meta.is_dir() {
            newest_source(&entry.path())?
        } else {
            meta.modified().ok()?
        };
        newest = newest.max(at);
    }
    Some(newest)
}

/// An exclusive lock on `DIR/build/.lock`, held for a whole build: two
/// processes building one directory at once (`npm ci` in one
/// `node_modules`, two writers of one `.wasm`) take turns instead of
/// tripping over each other. Released when dropped, or when the process
/// dies.
struct BuildLock {
    _file: std::fs::File,
}

impl BuildLock {
    fn take(dir: &Path) -> Result<Self, BuildError> {
        let path = dir.join("build").join(".lock");
        let io = |source| BuildError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir.join("build")).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(dir = %dir.display(), "another build of this plugin is running: waiting for it");
                file.lock().map_err(io)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Self { _file: file })
    }
}

/// Where a non-Rust build writes its component: `DIR/build/NAME.wasm`,
/// NAME being the directory's name (`dir` is absolute: see
/// [`build_plugin`]).
fn output_path(dir: &Path) -> Result<PathBuf, BuildError> {
    let name = dir
        .file_name()
        .map_or_else(|| "plugin".into(), |n| n.to_string_lossy().into_owned());
    let out = dir.join("build");
    std::fs::create_dir_all(&out).map_err(|source| BuildError::Io {
        path: out.clone(),
        source,
    })?;
    Ok(out.join(format!("{name}.wasm")))
}

/// A private temporary directory holding the WIT (`wit/task.wit`) and
/// the given files, removed when dropped.
struct Staging {
    dir: tempfile::TempDir,
}

impl Staging {
    fn new(files: &[(&str, &str)]) -> Result<Self, BuildError> {
        let dir = tempfile::Builder::new()
            .prefix("xylem-build-")
            .tempdir()
            .map_err(|source| BuildError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let staging = Self { dir };
        staging.write("wit/task.wit", TASK_WIT)?;
        for (name, text) in files {
            staging.write(name, text)?;
        }
        Ok(staging)
    }

    fn write(&self, name: &str, text: &str) -> Result<(), BuildError> {
        let path = self.path(name);
        let io = |source| BuildError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Whether `tool --version` runs.
fn installed(tool: impl AsRef<std::ffi::OsStr>) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `command` (output to this process's stderr); an error names
/// `tool` and `dir`.
fn run(mut command: Command, tool: &str, dir: &Path) -> Result<(), BuildError> {
    tracing::info!(?command, "building");
    let status = command
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|source| BuildError::Spawn {
            tool: tool.to_owned(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Tool {
            tool: tool.to_owned(),
            dir: dir.to_owned(),
        })
    }
}
