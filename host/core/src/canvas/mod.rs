//! Canvas: `chain`, `group` and `chord` — tasks composed into a tree that
//! the workers and the store drive to its end. No client waits on it: the
//! one that enqueues a canvas may exit at once, and any worker may die at
//! any point.
//!
//! - A **chain** runs its steps one after another; each step's result
//!   becomes the next step's input.
//! - A **group** runs its members side by side, each with the group's
//!   input; its result is the list of its members' results, in member
//!   order.
//! - A **chord** is a group and a callback: the callback runs once, with
//!   the list.
//!
//! Nodes nest freely (a chain of groups, a group of chains, a chord whose
//! callback is a chain). A task node receives its input by the callback
//! argument rule (`crate::callback`): no arguments of its own → the input
//! whole; a JSON object → the object plus `"result"`. The first node of a
//! canvas gets no input: its own arguments, or `{}`.
//!
//! How it stays exactly-once: when a canvas is enqueued every task node is
//! given its job id and every group its id, and the definition is written
//! once to the store ([`crate::store::CanvasStore`]). Starting a node is
//! enqueueing its job under that id — a second start (a redelivered job
//! advancing the canvas again) finds the id in use and does nothing. A
//! finished member is recorded in its group by index
//! ([`crate::store::GroupStore`], idempotent), and whichever worker sees
//! the group complete starts what follows — under fixed ids, so two workers
//! seeing it at the same instant start it once. The worker advances a
//! job's canvas before it writes the job's outcome (`worker/callbacks.rs`):
//! if it dies in between, the job runs again and advances again.
//!
//! A failure (a task node's job dead) stops what follows it. A group or
//! chord whose member fails fails too, unless it says
//! `member_errors: include`: then the member's place in the list holds its
//! error object (`{"id","task","attempt","kind","message"}`) and the
//! canvas goes on. A failed canvas fires its `link_error`, if any, with
//! the failing node's error.

/// The header every job of a canvas carries: its canvas's id (kept on the
/// job's record, so a job links to its tree).
pub const CANVAS_HEADER: &str = "xylem-canvas";

mod advance;
mod model;

pub use advance::{Advance, advance, start_canvas};
pub use model::{
    Canvas, CanvasRef, MAX_DEPTH, MAX_TASKS, MemberErrors, Node, NodeState, Path, node_result,
    node_state,
};

use std::collections::HashMap;

use crate::record::TaskRecord;
use crate::store::{StoreResult, Stores};

/// The records of a canvas's task nodes that have started, by job id.
pub async fn records(stores: &Stores, canvas: &Canvas) -> StoreResult<HashMap<String, TaskRecord>> {
    let mut records = HashMap::new();
    for (_, node) in canvas.root.tasks(&[]) {
        if let Some(record) = stores.results.get(&node.id).await? {
            records.insert(node.id.clone(), record);
        }
    }
    Ok(records)
}
