//! C plugins: sources and a `Makefile`, built for `wasm32-wasi` with clang
//! and wasi-libc and linked into a component by the Rust toolchain's
//! `wasm-component-ld`. The Makefile gets `OUT` (the component to write),
//! `WIT` (a directory holding the WIT) and `RUSTBIN` (where
//! `wasm-component-ld` and `wasm-ld` are); `plugins/c/Makefile` is the
//! example. The bindings (`gen/`) are generated with `wit-bindgen c` and
//! kept with the sources (`make bindings` makes them anew).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BuildError, Staging, installed, output_path, run};

const APT: &str = "apt-get install clang wasi-libc libclang-rt-dev-wasm32";

pub(super) fn build(dir: &Path) -> Result<PathBuf, BuildError> {
    if !dir.join("Makefile").is_file() {
        return Err(BuildError::Missing {
            language: "C",
            tool: "a Makefile in the plugin's directory",
            install: "copy plugins/c/Makefile and adapt SOURCES",
        });
    }
    for (tool, install) in [("make", "apt-get install make"), ("clang", APT)] {
        if !installed(tool) {
            return Err(BuildError::Missing {
                language: "C",
                tool,
                install,
            });
        }
    }
    if !Path::new("/usr/include/wasm32-wasi/stdlib.h").is_file()
        && !Path::new("/usr/share/wasi-sysroot/include/stdlib.h").is_file()
    {
        return Err(BuildError::Missing {
            language: "C",
            tool: "wasi-libc",
            install: APT,
        });
    }
    let rustbin = rust_tools()?;
    let out = output_path(dir)?;
    let staging = Staging::new(&[])?;
    let mut command = Command::new("make");
    command
        .arg("-C")
        .arg(dir)
        .arg(format!("OUT={}", out.display()))
        .arg(format!("WIT={}", staging.path("wit").display()))
        .arg(format!("RUSTBIN={}", rustbin.display()));
    run(command, "make", dir)?;
    Ok(out)
}

/// The Rust toolchain's directory of `wasm-component-ld` and
/// `gcc-ld/wasm-ld`.
fn rust_tools() -> Result<PathBuf, BuildError> {
    let missing = BuildError::Missing {
        language: "C",
        tool: "wasm-component-ld (shipped with the Rust toolchain)",
        install: "install Rust with rustup (https://rustup.rs)",
    };
    let output = |args: &[&str]| -> Option<String> {
        let out = Command::new("rustc").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let (Some(sysroot), Some(version)) = (output(&["--print", "sysroot"]), output(&["-vV"])) else {
        return Err(missing);
    };
    let Some(host) = version.lines().find_map(|l| l.strip_prefix("host: ")) else {
        return Err(missing);
    };
    let bin = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin");
    if bin.join("wasm-component-ld").is_file() {
        Ok(bin)
    } else {
        Err(missing)
    }
}
