//! The `xylem` binary, driven as a user would: `plugin build`, `plugin
//! inspect` and `run`, with their output and exit codes.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use xylem_tests::{plugin, repo_root, xylem_bin};

fn xylem(args: &[&str]) -> Output {
    let cache = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests-cache");
    Command::new(xylem_bin())
        .args(args)
        .env("XYLEM_CACHE_DIR", cache)
        .output()
        .expect("xylem runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plugin_build_prints_the_component_path_last() {
    let dir = repo_root().join("plugins/hello");
    let out = xylem(&["plugin", "build", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let last = stdout(&out).lines().last().unwrap_or_default().to_owned();
    assert!(last.ends_with("xylem_plugin_hello.wasm"), "{last}");
    assert!(std::path::Path::new(&last).is_file());
}

#[test]
fn plugin_build_of_a_non_crate_fails_clearly() {
    let out = xylem(&["plugin", "build", "/nonexistent/plugin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no Cargo.toml"), "{}", stderr(&out));
}

#[test]
fn run_greet_prints_the_greeting_as_json() {
    let wasm = plugin("hello");
    let out = xylem(&[
        "run",
        wasm.to_str().unwrap(),
        "hello.greet",
        "--args",
        r#"{"name":"Ada"}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), r#""Hello, Ada!""#);
    assert!(stderr(&out).contains("fuel"), "{}", stderr(&out));
}

#[test]
fn run_json_prints_the_whole_outcome() {
    let wasm = plugin("hello");
    let out = xylem(&[
        "run",
        wasm.to_str().unwrap(),
        "hello.greet",
        "--args",
        r#"{"name":"Ada"}"#,
        "--json",
    ]);
    assert!(out.status.success());
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcome["result"], "Hello, Ada!");
    assert!(outcome["usage"]["fuel"].as_u64().unwrap() > 0);
    assert!(outcome["usage"]["peak_memory"].as_u64().unwrap() > 0);
}

#[test]
fn run_loop_with_timeout_exits_with_the_time_limit_code_in_time() {
    let wasm = plugin("hostile");
    // Compiled once first (a cold compile of this component takes seconds
    // on a loaded machine, and depends on which test ran first): what is
    // timed is the limit, not the compiler.
    xylem(&[
        "run",
        wasm.to_str().unwrap(),
        "hostile.loop",
        "--timeout",
        "10ms",
    ]);
    let started = Instant::now();
    let out = xylem(&[
        "run",
        wasm.to_str().unwrap(),
        "hostile.loop",
        "--timeout",
        "1s",
        "--json",
    ]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(20), "{}", stderr(&out));
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(outcome["error"]["kind"], "time-limit-exceeded");
    // Process start and plugin load included.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn run_maps_each_failure_to_its_exit_code() {
    let wasm = plugin("hostile");
    let wasm = wasm.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["hostile.memory-bomb", "--memory", "16MiB"],
            22,
            "memory-limit-exceeded",
        ),
        (&["hostile.loop", "--fuel", "1000000"], 21, "fuel-exhausted"),
        (&["hostile.panic"], 23, "panics on purpose"),
        (
            &[
                "hostile.huge-output",
                "--args",
                r#"{"bytes":100000}"#,
                "--max-output",
                "10KiB",
            ],
            24,
            "bad-output",
        ),
        (&["hostile.nope"], 30, "unknown-task"),
        (&["hostile.burn", "--args", "{oops"], 31, "invalid-args"),
    ];
    for (args, code, needle) in cases {
        let mut argv = vec!["run", wasm];
        argv.extend_from_slice(args);
        let out = xylem(&argv);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn inspect_lists_tasks_with_their_defaults() {
    let wasm = plugin("textstats");
    let out = xylem(&["plugin", "inspect", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("text.stats"), "{text}");
    assert!(text.contains("retries=2"), "{text}");
    assert!(text.contains("timeout=30s"), "{text}");

    let out = xylem(&["plugin", "inspect", wasm.to_str().unwrap(), "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["tasks"][0]["name"], "text.stats");
    assert_eq!(doc["tasks"][0]["options"]["max_retries"], 2);
}

#[test]
fn inspect_refuses_a_file_that_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"hello").unwrap();
    let out = xylem(&["plugin", "inspect", bogus.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a valid WebAssembly component"),
        "{}",
        stderr(&out)
    );

    let out = xylem(&["plugin", "inspect", "/nonexistent.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn bad_flags_are_usage_errors() {
    let wasm = plugin("hello");
    let out = xylem(&[
        "run",
        wasm.to_str().unwrap(),
        "hello.greet",
        "--memory",
        "lots",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid size"), "{}", stderr(&out));
    let out = xylem(&["run", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_benchmarks_run_and_report_their_figures() {
    let run = |args: &[&str]| {
        let out = Command::new(xylem_bin())
            .args(args)
            .current_dir(repo_root())
            .env(
                "XYLEM_CACHE_DIR",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests-cache"),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    let sandbox = run(&["bench", "sandbox", "--iterations", "50", "--json"]);
    assert!(
        sandbox["run_us"]["p50"].as_f64().unwrap() > 0.0,
        "{sandbox}"
    );
    assert!(sandbox["cached_load_ms"].as_f64().unwrap() < sandbox["compile_ms"].as_f64().unwrap());
    let throughput = run(&["bench", "--jobs", "100", "--latency-samples", "5", "--json"]);
    assert!(
        throughput["processed_per_second"].as_f64().unwrap() > 0.0,
        "{throughput}"
    );
    assert_eq!(throughput["enqueue_to_start_us"]["samples"], 5);
    assert_eq!(throughput["task"], "hello.echo");
    // Any plugin's task, named with --task; a task the plugin lacks is
    // refused before anything is enqueued, naming the ones it has.
    let hostile = plugin("hostile");
    let hostile = hostile.to_str().unwrap();
    let other_task = run(&[
        "bench",
        "--plugin",
        hostile,
        "--task",
        "hostile.remember",
        "--jobs",
        "40",
        "--latency-samples",
        "3",
        "--json",
    ]);
    assert_eq!(other_task["task"], "hostile.remember", "{other_task}");
    assert_eq!(other_task["enqueue_to_start_us"]["samples"], 3);
    let out = xylem(&["bench", "--plugin", hostile, "--task", "hostile.nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("has no task \"hostile.nope\"") && message.contains("hostile.remember"),
        "{message}"
    );
    // Workflows: every run completes, each step's code is timed inside the
    // step, and a 60-call history replays whole.
    let workflows = run(&[
        "bench",
        "workflow",
        "--runs",
        "30",
        "--steps-timed",
        "8",
        "--replay-calls",
        "60",
        "--json",
    ]);
    assert!(
        workflows["runs_per_second"].as_f64().unwrap() > 0.0,
        "{workflows}"
    );
    assert!(workflows["step_us"]["samples"].as_u64().unwrap() >= 8);
    let (step, code) = (
        workflows["step_us"]["p50"].as_f64().unwrap(),
        workflows["code_us"]["p50"].as_f64().unwrap(),
    );
    assert!(code > 0.0 && code < step, "{workflows}");
    assert_eq!(workflows["replay"]["calls"], 60);
    assert!(workflows["replay"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(
        workflows["kept_instances"]["steps_resumed"]
            .as_u64()
            .unwrap()
            > 0,
        "steps go on in kept instances: {workflows}"
    );
}

#[test]
fn a_workflow_run_started_with_a_delay_waits_for_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("x.db").display());
    let wasm = plugin("order-workflow");
    let out = xylem(&["--store", &store, "plugin", "push", wasm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = xylem_core::time::now_ms();
    let start_in = |delay: &str, more: &[&str]| {
        let mut args = vec!["--store", &store, "workflow", "start", "order.clock"];
        args.extend(["--delay", delay]);
        args.extend(more);
        xylem(&args)
    };
    let out = start_in("1h", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let out = xylem(&["--store", &store, "workflow", "show", &id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(run["state"], "waiting", "{run}");
    let wakes = run["wake_at"].as_i64().unwrap();
    assert!(
        wakes >= before + 3_600_000 && wakes < before + 3_660_000,
        "{run}"
    );
    let out = start_in("soon", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("soon"), "{}", stderr(&out));

    // A root's own limit of runs for its tree, kept with the run and
    // shown.
    let out = start_in("1h", &["--max-descendants", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let out = xylem(&["--store", &store, "workflow", "show", &id, "--json"]);
    let run: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(run["tree"]["root"], id.as_str(), "{run}");
    assert_eq!(run["tree"]["max_runs"], 5, "{run}");
    let out = xylem(&["--store", &store, "workflow", "show", &id]);
    assert!(
        stdout(&out).contains(&format!("tree      root {id} (may start 5 runs)")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_plugin_whose_describe_never_returns_is_refused_not_waited_for() {
    // Issue 8, item 3: a plugin can attack before any task runs. Its
    // describe() spins; inspect and push must end with a clear error
    // within the describe limits (fuel or time), never hang.
    let hostile = plugin("hostile-describe");
    let path = hostile.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("x.db").display());
    for args in [
        vec!["plugin", "inspect", path],
        vec!["--store", &store, "plugin", "push", path],
    ] {
        let started = Instant::now();
        let out = xylem(&args);
        let elapsed = started.elapsed();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("describe() failed"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            elapsed < Duration::from_secs(15),
            "{args:?} took {elapsed:?}"
        );
    }
    let out = xylem(&["--store", &store, "plugin", "ls", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[]", "nothing was stored");
}
