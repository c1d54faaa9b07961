//! The `hello` example plugin: the smallest useful Xylem plugin.
//!
//! - `hello.greet` `{"name": "Ada"}` → `"Hello, Ada!"`
//! - `hello.echo` any JSON → the same JSON (also the benchmark's no-op task)
//! - `hello.flaky` `{"fail_times": N, "then_greet": "Ada"}` → fails on its first N attempts, then
//!   succeeds — enqueueing `hello.greet` for `then_greet` as a child job first, if given
//! - `hello.sleep` `{"ms": N}` → sleeps N ms (heart-beating, reporting progress), then returns N
//! - `hello.greet-all` `{"names": [...]}` → enqueues a chord from inside the task: a greeting
//!   per name, then `hello.echo` with the list; returns the canvas id

use serde::Deserialize;
use serde_json::Value;
use xylem_guest::canvas::Node;
use xylem_guest::{Context, Task, TaskError, TaskResult};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

fn greet(ctx: &Context, args: Greet) -> TaskResult<String> {
    if args.name.trim().is_empty() {
        return Err(TaskError::reject("`name` must not be empty"));
    }
    ctx.log_info(&format!("greeting {}", args.name));
    Ok(format!("Hello, {}!", args.name))
}

fn echo(_ctx: &Context, args: Value) -> TaskResult<Value> {
    Ok(args)
}

#[derive(Deserialize)]
struct Flaky {
    fail_times: u32,
    /// Enqueue `hello.greet` for this name as a child once it succeeds.
    #[serde(default)]
    then_greet: Option<String>,
}

fn flaky(ctx: &Context, args: Flaky) -> TaskResult<String> {
    if ctx.attempt() <= args.fail_times {
        return Err(TaskError::fail(format!(
            "attempt {} of a task set to fail {} time(s)",
            ctx.attempt(),
            args.fail_times
        )));
    }
    if let Some(name) = args.then_greet {
        let child = ctx.enqueue("hello.greet", &serde_json::json!({ "name": name }), None)?;
        return Ok(format!(
            "succeeded on attempt {}; enqueued {child}",
            ctx.attempt()
        ));
    }
    Ok(format!("succeeded on attempt {}", ctx.attempt()))
}

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

fn sleep(ctx: &Context, args: Sleep) -> TaskResult<u64> {
    let step = std::time::Duration::from_millis(args.ms.min(100));
    let mut slept = 0;
    while slept < args.ms {
        if ctx.cancelled() {
            return Err(TaskError::fail(format!("cancelled after {slept} ms")));
        }
        std::thread::sleep(step.min(std::time::Duration::from_millis(args.ms - slept)));
        slept += step.as_millis() as u64;
        ctx.heartbeat();
        let done = slept.min(args.ms);
        ctx.progress(
            100.0 * done as f32 / args.ms.max(1) as f32,
            Some(&format!("slept {done} of {} ms", args.ms)),
        );
    }
    Ok(args.ms)
}

#[derive(Deserialize)]
struct Names {
    names: Vec<String>,
}

/// A canvas from task code: a chord of greetings whose callback echoes
/// the list. The workers run it after this task has returned.
fn greet_all(ctx: &Context, args: Names) -> TaskResult<String> {
    let members = args
        .names
        .iter()
        .map(|name| Node::task_with("hello.greet", serde_json::json!({ "name": name })))
        .collect();
    Ok(ctx.chord(members, Node::task("hello.echo"))?)
}

fn tasks() -> Vec<Task> {
    vec![
        Task::new("hello.greet", greet).description("Returns a greeting for `name`"),
        Task::new("hello.echo", echo).description("Returns its arguments unchanged"),
        Task::new("hello.flaky", flaky)
            .description("Fails its first `fail_times` attempts, then succeeds (enqueueing hello.greet for `then_greet`, if given)")
            .max_retries(5),
        Task::new("hello.sleep", sleep)
            .description("Sleeps `ms` milliseconds (reporting progress), then returns it"),
        Task::new("hello.greet-all", greet_all)
            .description("Enqueues a chord: a greeting per name, then hello.echo with the list"),
    ]
}

xylem_guest::export_plugin!(tasks);
