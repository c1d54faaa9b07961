//! Plugins in Python, JavaScript and C, built by `xylem_wasm::build_plugin`
//! (what `xylem plugin build` runs) with each language's own toolchain,
//! and run by the same sandbox as Rust plugins: the `hello` tasks answer
//! as the Rust example does, and an exception in a task ends its job as a
//! failure, never a trap. Without a toolchain these tests skip with the
//! install command — except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use xylem_core::{CancelToken, FailureKind, Limits, NoHostCalls, Outcome, RunRequest, TaskInfo};
use xylem_tests::{repo_root, runtime};
use xylem_wasm::{BuildError, Language, Plugin};

/// Builds `plugins/<dir>` in its language; `None` (skip) if a tool is
/// missing outside CI.
fn build(dir: &str) -> Option<PathBuf> {
    match xylem_tests::try_plugin(dir) {
        Ok(component) => Some(component),
        Err(e @ BuildError::Missing { .. }) => {
            if xylem_tests::in_ci() {
                panic!("{e}: CI must not skip this test");
            }
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("cannot build plugins/{dir}: {e}"),
    }
}

async fn load(component: &Path) -> Plugin {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("language-tests");
    runtime(&cache)
        .load_file(component)
        .await
        .unwrap_or_else(|e| panic!("{} loads: {e}", component.display()))
}

async fn run(plugin: &Plugin, task: &str, args: serde_json::Value) -> Outcome {
    let request = RunRequest {
        info: TaskInfo::new(format!("test-{task}"), task),
        args: args.to_string(),
        limits: Limits::default(),
        cancel: CancelToken::new(),
    };
    plugin.run(request, Arc::new(NoHostCalls)).await
}

/// The `hello` tasks (under the language's prefix: `py.greet`, ...), as
/// the Rust example answers them.
async fn answers_like_hello(dir: &str, prefix: &str) {
    let task = |name: &str| format!("{prefix}.{name}");
    let Some(component) = build(dir) else { return };
    let plugin = load(&component).await;
    let mut names: Vec<_> = plugin.tasks().iter().map(|t| t.name.clone()).collect();
    names.sort();
    // Python and JavaScript add a fan-out (child jobs with options).
    names.retain(|n| n != &task("fanout"));
    assert_eq!(names, [task("echo"), task("flaky"), task("greet")], "{dir}");
    let flaky = plugin
        .tasks()
        .iter()
        .find(|t| t.name == task("flaky"))
        .unwrap();
    assert_eq!(
        flaky.options.max_retries,
        Some(5),
        "{dir}: declared options"
    );
    if matches!(prefix, "py" | "js") {
        // A u64 option, given as a plain number in Python and JavaScript.
        assert_eq!(flaky.options.fuel, Some(200_000_000_000), "{dir}: fuel");
    }

    let greet = run(&plugin, &task("greet"), json!({"name": "Ada"})).await;
    assert_eq!(greet.result, Some(json!("Hello, Ada!")), "{dir}: {greet:?}");
    assert!(
        greet.log.iter().any(|l| l.message.contains("greeting Ada")),
        "{dir}: the task's log line: {:?}",
        greet.log
    );
    let echo = run(&plugin, &task("echo"), json!({"a": [1, 2, {"b": null}]})).await;
    assert_eq!(
        echo.result,
        Some(json!({"a": [1, 2, {"b": null}]})),
        "{dir}"
    );

    let empty = run(&plugin, &task("greet"), json!({"name": " "})).await;
    assert_eq!(
        empty.failure_kind(),
        Some(FailureKind::Rejected),
        "{dir}: {empty:?}"
    );
    // A failing attempt (in Python and JavaScript: an exception thrown by
    // the task) is a task failure, retried by policy — not a trap.
    let flaky = run(&plugin, &task("flaky"), json!({"fail_times": 2})).await;
    assert_eq!(
        flaky.failure_kind(),
        Some(FailureKind::PluginError),
        "{dir}: {flaky:?}"
    );
    assert!(
        flaky
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("attempt 1 of a task set to fail 2"),
        "{dir}: {flaky:?}"
    );
}

#[test]
fn plugin_directories_are_recognised_by_their_files() {
    let plugins = repo_root().join("plugins");
    for (dir, language) in [
        ("hello", Language::Rust),
        ("python", Language::Python),
        ("javascript", Language::JavaScript),
        ("c", Language::C),
    ] {
        assert_eq!(
            Language::detect(&plugins.join(dir)),
            Some(language),
            "{dir}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(Language::detect(empty.path()), None);
    let err = xylem_wasm::build_plugin(empty.path()).unwrap_err();
    assert!(err.to_string().contains("holds no plugin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_plugin_answers_like_hello() {
    answers_like_hello("c", "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_answers_like_hello() {
    answers_like_hello("python", "py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_plugin_answers_like_hello() {
    answers_like_hello("javascript", "js").await;
}

/// The C bindings kept in `plugins/c/gen` are what `wit-bindgen c` makes
/// of today's WIT: a WIT change without `make bindings` fails here.
#[test]
fn c_bindings_match_the_wit() {
    let installed = std::process::Command::new("wit-bindgen")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        let install = "cargo install --locked wit-bindgen-cli --version 0.57.1 --no-default-features --features c";
        if xylem_tests::in_ci() {
            panic!("wit-bindgen is not installed ({install}): CI must not skip this test");
        }
        eprintln!("skipping: wit-bindgen is not installed ({install})");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("wit-bindgen")
        .arg("c")
        .arg(repo_root().join("wit"))
        .args(["--world", "plugin", "--out-dir"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let kept = repo_root().join("plugins/c/gen");
    for file in ["plugin.c", "plugin.h", "plugin_component_type.o"] {
        let made = std::fs::read(out.path().join(file)).unwrap();
        let ours = std::fs::read(kept.join(file)).unwrap();
        assert!(
            made == ours,
            "plugins/c/gen/{file} differs from what wit-bindgen makes of wit/: run `make -C plugins/c bindings`"
        );
    }
}

/// A default componentize-js build imports `wasi:http`, which the host
/// does not provide: the load says so, naming the import, before it
/// compiles anything (the compile of an 11 MiB JS component takes seconds;
/// the linker's own error would come only after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_wasi_http_is_refused_before_it_compiles() {
    // The example's build installs componentize-js in its node_modules.
    if build("javascript").is_none() {
        return;
    }
    let dir = repo_root().join("plugins/javascript");
    let staged = tempfile::tempdir().unwrap();
    std::fs::write(staged.path().join("xylem.js"), GUEST_JS).unwrap();
    std::fs::copy(dir.join("app.js"), staged.path().join("app.js")).unwrap();
    let out = staged.path().join("with-http.wasm");
    let status = std::process::Command::new(dir.join("node_modules/.bin/componentize-js"))
        .arg(staged.path().join("app.js"))
        .arg("--wit")
        .arg(repo_root().join("wit"))
        .args(["--world-name", "plugin", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "componentize-js without -d");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("language-tests");
    let err = runtime(&cache)
        .load_file(&out)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("imports `wasi:http/") && err.contains("does not provide"),
        "{err}"
    );
}

/// The JavaScript guest helper, as `xylem plugin build` stages it.
const GUEST_JS: &str = include_str!("../../guest-sdk/javascript/xylem.js");

/// The four `hello`s — Rust, C, Python, JavaScript — pushed to one store
/// and run side by side by one worker process at `--concurrency 32`,
/// with 64 Python jobs at once among them: none fails (a Python instance
/// needs 14 core instances; a full pool waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_languages_run_side_by_side_in_one_worker() {
    let (Some(c), Some(python), Some(javascript)) =
        (build("c"), build("python"), build("javascript"))
    else {
        return;
    };
    let env = xylem_tests::cli_env::Env::new();
    env.push("hello");
    for component in [&c, &python, &javascript] {
        env.ok(&["plugin", "push", component.to_str().unwrap()]);
    }
    let jobs = env.dir.join("jobs.ndjson");
    let mut lines = String::new();
    for task in ["hello.greet", "c.greet", "js.greet"] {
        lines.push_str(&format!(
            "{{\"task\":\"{task}\",\"args\":{{\"name\":\"Ada\"}}}}\n"
        ));
    }
    for i in 0..64 {
        lines.push_str(&format!(
            "{{\"task\":\"py.greet\",\"args\":{{\"name\":\"p{i}\"}}}}\n"
        ));
    }
    // Child jobs from Python and JavaScript, with options: each fan-out
    // enqueues a unique greeting per name (the repeated name is a
    // duplicate) with a link to its echo task.
    for task in ["py.fanout", "js.fanout"] {
        lines.push_str(&format!(
            "{{\"task\":\"{task}\",\"args\":{{\"names\":[\"a\",\"b\",\"a\"]}}}}\n"
        ));
    }
    std::fs::write(&jobs, lines).unwrap();
    assert_eq!(
        env.ok(&["enqueue", "--batch", jobs.to_str().unwrap()])
            .lines()
            .count(),
        69
    );
    let mut worker = env.worker("w", &["--concurrency", "32"]);
    // 69 enqueued, 2 greetings and 2 links per fan-out.
    let done = env
        .wait_succeeded(69 + 8, std::time::Duration::from_secs(300))
        .await;
    xylem_tests::scenarios::terminate(&mut worker);
    for fanout in done.iter().filter(|r| r.task.ends_with(".fanout")) {
        let children = fanout.result.clone().unwrap();
        assert_eq!(children[0][1], false, "{children}");
        assert_eq!(children[1][1], false, "{children}");
        assert_eq!(
            children[2][1], true,
            "the repeat is a duplicate: {children}"
        );
        assert_eq!(children[2][0], children[0][0], "{children}");
        assert_ne!(children[0][0], children[1][0], "{children}");
    }
    let retried: Vec<_> = done.iter().filter(|r| r.attempt != 1).collect();
    assert!(retried.is_empty(), "no attempt failed: {retried:?}");
    let mut by_task = std::collections::BTreeMap::new();
    for record in &done {
        *by_task.entry(record.task.as_str()).or_insert(0) += 1;
    }
    assert_eq!(
        by_task.into_iter().collect::<Vec<_>>(),
        [
            ("c.greet", 1),
            ("hello.greet", 1),
            ("js.echo", 2),
            ("js.fanout", 1),
            ("js.greet", 3),
            ("py.echo", 2),
            ("py.fanout", 1),
            ("py.greet", 66)
        ]
    );
}
