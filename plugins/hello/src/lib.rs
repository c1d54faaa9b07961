//! The `hello` example plugin: the smallest useful Xylem plugin.
//!
//! - `hello.greet` `{"name": "Ada"}` → `"Hello, Ada!"`
//! - `hello.echo` any JSON → the same JSON (also the benchmark's no-op task)
//! - `hello.flaky` `{"fail_times": N}` → fails on its first N attempts, then succeeds

use serde::Deserialize;
use serde_json::Value;
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
}

fn flaky(ctx: &Context, args: Flaky) -> TaskResult<String> {
    if ctx.attempt() <= args.fail_times {
        return Err(TaskError::fail(format!(
            "attempt {} of a task set to fail {} time(s)",
            ctx.attempt(),
            args.fail_times
        )));
    }
    Ok(format!("succeeded on attempt {}", ctx.attempt()))
}

fn tasks() -> Vec<Task> {
    vec![
        Task::new("hello.greet", greet).description("Returns a greeting for `name`"),
        Task::new("hello.echo", echo).description("Returns its arguments unchanged"),
        Task::new("hello.flaky", flaky)
            .description("Fails its first `fail_times` attempts, then succeeds")
            .max_retries(5),
    ]
}

xylem_guest::export_plugin!(tasks);
