//! A second version of `order.process` (`plugins/order-workflow`) with its
//! steps in another order — validate → sleep → charge → ship — to show
//! that a deploy does not disturb runs started on the first version: each
//! run stays on the version it started with; new runs take this one.

use std::time::Duration;

use serde_json::Value;
use xylem_guest::workflow::{Ctx, Workflow, WorkflowResult};

fn process(ctx: &Ctx, order: Value) -> WorkflowResult<Value> {
    let valid: Value = ctx.activity("order.validate", &order)?;
    let wait = order["ship_after_ms"].as_u64().unwrap_or(86_400_000);
    ctx.sleep(Duration::from_millis(wait));
    let charged: Value = ctx.activity("order.charge", &valid)?;
    let mut shipped: Value = ctx.activity("order.ship", &charged)?;
    shipped["version"] = Value::from(2);
    Ok(shipped)
}

fn workflows() -> Vec<Workflow> {
    vec![
        Workflow::new("order.process", process)
            .description("validate → sleep → charge → ship (v2)"),
    ]
}

xylem_guest::export_workflows!(workflows);
