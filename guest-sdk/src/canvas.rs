//! Canvases from a task: chains, groups and chords of tasks, nested as
//! deep as needed, enqueued in one host call ([`Context::submit_canvas`],
//! or [`Context::chain`], [`Context::group`], [`Context::chord`]). The
//! workers drive them to their end; this run may finish at once. Every
//! task in a canvas counts as a child of this run against its quotas.
//!
//! ```ignore
//! let id = ctx.chord(
//!     vec![Node::task_with("images.resize", json!({"size": "small"})),
//!          Node::task_with("images.resize", json!({"size": "large"}))],
//!     Node::task("images.index"),      // receives the list of results
//! )?;
//! ```

use serde_json::{Value, json};

use crate::bindings::xylem::task::host;
use crate::context::{Context, EnqueueError};

/// One node of a canvas (its JSON form, as `xylem canvas submit` reads it).
#[derive(Debug, Clone, PartialEq)]
pub struct Node(Value);

impl Node {
    /// A task that receives its input whole (the first node of a canvas
    /// runs with `{}`).
    pub fn task(task: &str) -> Self {
        Self(json!({ "kind": "task", "task": task }))
    }

    /// A task with arguments of its own (a JSON object); its input is
    /// added to them under `"result"`.
    pub fn task_with(task: &str, args: Value) -> Self {
        Self(json!({ "kind": "task", "task": task, "args": args }))
    }

    /// Steps one after another, each result the next one's input.
    pub fn chain(steps: Vec<Node>) -> Self {
        Self(
            json!({ "kind": "chain", "steps": steps.into_iter().map(|n| n.0).collect::<Vec<_>>() }),
        )
    }

    /// Members side by side; the result is their results, in order.
    pub fn group(members: Vec<Node>) -> Self {
        Self(
            json!({ "kind": "group", "members": members.into_iter().map(|n| n.0).collect::<Vec<_>>() }),
        )
    }

    /// Members side by side, then `callback` with the list of results.
    pub fn chord(members: Vec<Node>, callback: Node) -> Self {
        Self(json!({
            "kind": "chord",
            "members": members.into_iter().map(|n| n.0).collect::<Vec<_>>(),
            "callback": callback.0,
        }))
    }

    /// For a group or chord: a failed member's place in the results holds
    /// its error and the canvas goes on (by default the group fails).
    pub fn include_errors(mut self) -> Self {
        if let Some(object) = self.0.as_object_mut() {
            object.insert("member_errors".to_owned(), json!("include"));
        }
        self
    }

    /// The JSON the host reads.
    pub fn to_json(&self) -> String {
        self.0.to_string()
    }
}

impl Context {
    /// Enqueues the canvas `root`; returns its id.
    pub fn submit_canvas(&self, root: &Node) -> Result<String, EnqueueError> {
        host::submit_canvas(&root.to_json()).map_err(EnqueueError::from)
    }

    /// Enqueues a chain of `steps`; returns the canvas id.
    pub fn chain(&self, steps: Vec<Node>) -> Result<String, EnqueueError> {
        self.submit_canvas(&Node::chain(steps))
    }

    /// Enqueues a group of `members`; returns the canvas id.
    pub fn group(&self, members: Vec<Node>) -> Result<String, EnqueueError> {
        self.submit_canvas(&Node::group(members))
    }

    /// Enqueues a chord of `members` and `callback`; returns the canvas id.
    pub fn chord(&self, members: Vec<Node>, callback: Node) -> Result<String, EnqueueError> {
        self.submit_canvas(&Node::chord(members, callback))
    }
}
