//! The binary's help lists every command with a description.
//!
//! (Having an integration test here also makes `cargo test --workspace`
//! build the `xylem` binary before any test runs: the scenario tests in
//! `tests/` drive it.)

use std::process::Command;

#[test]
fn help_lists_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_xylem"))
        .arg("--help")
        .output()
        .expect("xylem runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "demo", "worker", "enqueue", "task", "tasks", "queues", "dlq", "plugin", "health", "run",
        "bench",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`{command}` missing from --help:\n{help}"
        );
    }
    assert!(help.contains("--store"), "{help}");
}

#[test]
fn version_is_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_xylem"))
        .arg("--version")
        .output()
        .expect("xylem runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("xylem "));
}
