//! The seed's example workflow, `order.process`: validate → charge →
//! a durable sleep → ship. Each step is an activity (a task of
//! `plugins/order`); the sleep survives restarts of every process.
//! `ship_after_ms` in the order sets the sleep (default a day);
//! `ship_work_ms`, how long shipping takes.
//!
//! Also `order.clock`, which reads the clock and random numbers the ways a
//! workflow must not rely on (WASI directly) beside the recorded ones: on
//! every replay it sees the same values. `order.express` and
//! `order.batch` are what `xylem bench workflow` runs; `order.approve`
//! waits for an event (a person's approval, with a timeout) and then runs
//! `order.express` as a child run; `order.remind` schedules a run of
//! `order.express` for later (`schedule-at`) and ends at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use xylem_guest::workflow::{Ctx, Workflow, WorkflowResult};

fn process(ctx: &Ctx, order: Value) -> WorkflowResult<Value> {
    let valid: Value = ctx.activity("order.validate", &order)?;
    ctx.set_state(&serde_json::json!({ "step": "charging" }));
    let charged: Value = ctx.activity("order.charge", &valid)?;
    let wait = order["ship_after_ms"].as_u64().unwrap_or(86_400_000);
    ctx.set_state(&serde_json::json!({ "step": "waiting to ship" }));
    ctx.sleep(Duration::from_millis(wait));
    let mut shipment = charged;
    if let Some(work) = order.get("ship_work_ms") {
        shipment["work_ms"] = work.clone();
    }
    let shipped: Value = ctx.activity("order.ship", &shipment)?;
    ctx.set_state(&serde_json::json!({ "step": "shipped" }));
    Ok(shipped)
}

/// `order.express`: validate → charge → ship with no wait between — the
/// three-step workflow `xylem bench workflow` times.
fn express(ctx: &Ctx, order: Value) -> WorkflowResult<Value> {
    let valid: Value = ctx.activity("order.validate", &order)?;
    let charged: Value = ctx.activity("order.charge", &valid)?;
    let shipped: Value = ctx.activity("order.ship", &charged)?;
    Ok(shipped)
}

/// `order.approve`: waits for a person's approval (event `approval`, up
/// to `approve_within_ms`, a day by default), then ships the order as a
/// child `order.express` run; not approved in time, it ends declined.
fn approve(ctx: &Ctx, order: Value) -> WorkflowResult<Value> {
    let within = order["approve_within_ms"].as_u64().unwrap_or(86_400_000);
    let Some(approval) = ctx.await_event::<Value>("approval", Duration::from_millis(within)) else {
        return Ok(serde_json::json!({ "order": order["id"], "approved": false }));
    };
    let shipped: Value = ctx.child("order.express", &order)?;
    Ok(serde_json::json!({
        "order": order["id"],
        "approved_by": approval["by"],
        "shipped": shipped,
    }))
}

/// `order.batch`: validates `{"orders": n}` orders one after another — a
/// run with a long history (n activities), for the replay benchmark.
fn batch(ctx: &Ctx, input: Value) -> WorkflowResult<Value> {
    let n = input["orders"].as_u64().unwrap_or(10);
    for i in 0..n {
        let order = serde_json::json!({ "id": format!("b{i}"), "amount_cents": 100 + i });
        let _: Value = ctx.activity("order.validate", &order)?;
    }
    Ok(serde_json::json!({ "validated": n }))
}

fn clock(ctx: &Ctx, _input: Value) -> WorkflowResult<Value> {
    let wasi_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut map = std::collections::HashMap::new();
    map.insert("k", 1);
    let recorded_ms = ctx
        .now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let drawn = ctx.random();
    // A step between: the rest runs on a replay.
    ctx.sleep(Duration::from_millis(200));
    let wasi_again = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(serde_json::json!({
        "wasi_ms": wasi_ms,
        "wasi_again": wasi_again,
        "recorded_ms": recorded_ms,
        "random": drawn.to_string(),
        "map": map.len(),
    }))
}

/// `order.remind`: schedules `workflow` (default `order.express`) for
/// `order` to begin `after_ms` from now, and ends at once with the new
/// run's id — it does not wait for it.
fn remind(ctx: &Ctx, input: Value) -> WorkflowResult<Value> {
    let workflow = input["workflow"].as_str().unwrap_or("order.express");
    let after = Duration::from_millis(input["after_ms"].as_u64().unwrap_or(60_000));
    let at = ctx.now() + after;
    let id = ctx.schedule_at(workflow, &input["order"], at)?;
    let at_ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(serde_json::json!({ "scheduled": id, "at_ms": at_ms }))
}

fn workflows() -> Vec<Workflow> {
    vec![
        Workflow::new("order.process", process).description("validate → charge → sleep → ship"),
        Workflow::new("order.express", express).description("validate → charge → ship"),
        Workflow::new("order.batch", batch).description("validates n orders in turn"),
        Workflow::new("order.approve", approve)
            .description("waits for an approval, then ships as a child run"),
        Workflow::new("order.clock", clock).description("clocks and random numbers, replayed"),
        Workflow::new("order.remind", remind)
            .description("schedules a run of order.express for later, without waiting"),
    ]
}

xylem_guest::export_workflows!(workflows);
