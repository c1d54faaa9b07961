//! Hostile workflows, for the sandbox tests: each must end its run with a
//! readable reason within its budget and hurt no other run.

use serde_json::Value;
use xylem_guest::workflow::{Ctx, Workflow, WorkflowResult};

/// Spins forever, calling nothing: stopped by fuel or the step's time.
fn spin(_ctx: &Ctx, _input: Value) -> WorkflowResult<Value> {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Calls the host forever: stopped by the run's call budget.
fn flood(ctx: &Ctx, _input: Value) -> WorkflowResult<Value> {
    let mut total: u64 = 0;
    loop {
        total = total.wrapping_add(ctx.random());
    }
}

/// Schedules copies of itself, due at once, forever, whatever it is
/// answered: a fork bomb, stopped by its tree's quota of runs (then each
/// run by its call budget).
fn fork(ctx: &Ctx, input: Value) -> WorkflowResult<Value> {
    loop {
        let _ = ctx.schedule_in("hostile.fork", &input, std::time::Duration::ZERO);
    }
}

/// Starts a hundred child copies of itself at once and waits for them
/// all: a fork bomb by child workflows, stopped by its tree's quota.
fn swarm(ctx: &Ctx, input: Value) -> WorkflowResult<Value> {
    let set = ctx.join_set();
    for _ in 0..100 {
        set.submit_child("hostile.swarm", &input);
    }
    let mut refused = 0u32;
    while let Some((_, result)) = set.next::<Value>() {
        refused += u32::from(result.is_err());
    }
    Ok(Value::from(refused))
}

/// Allocates until it cannot: stopped by the step's memory cap.
fn hog(_ctx: &Ctx, _input: Value) -> WorkflowResult<Value> {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        kept.push(vec![7u8; 16 * 1024 * 1024]);
        std::hint::black_box(&kept);
    }
}

/// Sends a 4 MiB state: refused by the per-call budget.
fn huge(ctx: &Ctx, _input: Value) -> WorkflowResult<Value> {
    ctx.set_state(&"x".repeat(4 * 1024 * 1024));
    Ok(Value::Null)
}

/// Panics: the run fails with the panic's message.
fn panics(_ctx: &Ctx, _input: Value) -> WorkflowResult<Value> {
    panic!("this workflow panics on purpose");
}

fn workflows() -> Vec<Workflow> {
    vec![
        Workflow::new("hostile.spin", spin),
        Workflow::new("hostile.flood", flood),
        Workflow::new("hostile.hog", hog),
        Workflow::new("hostile.fork", fork),
        Workflow::new("hostile.swarm", swarm),
        Workflow::new("hostile.huge", huge),
        Workflow::new("hostile.panic", panics),
    ]
}

xylem_guest::export_workflows!(workflows);
