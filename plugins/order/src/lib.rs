//! The activities of the `order.process` example workflow
//! (`plugins/order-workflow`): ordinary tasks, with retries, limits and
//! queues like any other.

use serde::{Deserialize, Serialize};
use xylem_guest::{Context, Task, TaskError, TaskResult};

#[derive(Debug, Deserialize, Serialize)]
struct Order {
    id: String,
    amount_cents: u64,
    #[serde(default)]
    ship_after_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Validated {
    order: Order,
    valid: bool,
}

#[derive(Debug, Deserialize, Serialize)]
struct Charged {
    order: String,
    charged_cents: u64,
    receipt: String,
    /// How long shipping takes, in ms (for tests that stop a worker
    /// mid-shipment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    work_ms: Option<u64>,
}

fn validate(ctx: &Context, order: Order) -> TaskResult<Validated> {
    if order.amount_cents == 0 {
        return Err(TaskError::reject(format!(
            "order {} is for nothing",
            order.id
        )));
    }
    ctx.log_info(&format!("order {} is valid", order.id));
    Ok(Validated { order, valid: true })
}

fn charge(ctx: &Context, v: Validated) -> TaskResult<Charged> {
    ctx.log_info(&format!(
        "charging {} cents for {}",
        v.order.amount_cents, v.order.id
    ));
    Ok(Charged {
        receipt: format!("rcpt-{}", v.order.id),
        order: v.order.id,
        charged_cents: v.order.amount_cents,
        work_ms: None,
    })
}

fn ship(ctx: &Context, c: Charged) -> TaskResult<serde_json::Value> {
    ctx.log_info(&format!("shipping {}", c.order));
    if let Some(ms) = c.work_ms {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(serde_json::json!({ "order": c.order, "receipt": c.receipt, "shipped": true }))
}

fn tasks() -> Vec<Task> {
    vec![
        Task::new("order.validate", validate).description("Checks an order"),
        Task::new("order.charge", charge).description("Charges an order"),
        Task::new("order.ship", ship).description("Ships a charged order"),
    ]
}

xylem_guest::export_plugin!(tasks);
