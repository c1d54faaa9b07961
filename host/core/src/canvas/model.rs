//! The canvas tree: its nodes, their paths, ids given at enqueue, and the
//! state of a node read from its jobs' records.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::callback::Callback;
use crate::record::{TaskRecord, TaskState};
use crate::time::Millis;

/// Where a node sits in its canvas: the child index at each level from the
/// root (a chord's callback comes after its members).
pub type Path = Vec<u32>;

/// What a group or chord does when a member fails for good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberErrors {
    /// The group fails, and the canvas with it (nothing after it runs).
    #[default]
    Fail,
    /// The member's place in the results holds its error object; the
    /// canvas goes on.
    Include,
}

/// One node of a canvas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    /// One job of a task (its id is the node's job id).
    Task(Callback),
    /// Steps one after another; each result is the next step's input.
    Chain {
        /// The steps (at least one).
        steps: Vec<Node>,
    },
    /// Members side by side; the result is their results in order.
    Group {
        /// The group's id in the store (given at enqueue).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        id: String,
        /// The members (at least one).
        members: Vec<Node>,
        /// What a failed member does.
        #[serde(default)]
        member_errors: MemberErrors,
    },
    /// A group, then a callback given the list of its results.
    Chord {
        /// The group's id in the store (given at enqueue).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        id: String,
        /// The members (at least one).
        members: Vec<Node>,
        /// Runs once every member has finished, with their results.
        callback: Box<Node>,
        /// What a failed member does.
        #[serde(default)]
        member_errors: MemberErrors,
    },
}

/// Deepest a canvas may nest, and most task nodes it may hold.
pub const MAX_DEPTH: usize = 32;
/// Most task nodes in one canvas.
pub const MAX_TASKS: usize = 10_000;

impl Node {
    /// A task node of `task` with `args` (a JSON object as text), if any.
    pub fn task(task: impl Into<String>, args: Option<String>) -> Self {
        Self::Task(Callback {
            args,
            ..Callback::new(task)
        })
    }

    /// A chain of `steps`.
    pub fn chain(steps: Vec<Node>) -> Self {
        Self::Chain { steps }
    }

    /// A group of `members` that fails with any of them.
    pub fn group(members: Vec<Node>) -> Self {
        Self::Group {
            id: String::new(),
            members,
            member_errors: MemberErrors::Fail,
        }
    }

    /// A chord: `members`, then `callback` with their results.
    pub fn chord(members: Vec<Node>, callback: Node) -> Self {
        Self::Chord {
            id: String::new(),
            members,
            callback: Box::new(callback),
            member_errors: MemberErrors::Fail,
        }
    }

    /// Its children, in path order (a chord's callback last).
    pub fn children(&self) -> Vec<&Node> {
        match self {
            Self::Task(_) => Vec::new(),
            Self::Chain { steps } => steps.iter().collect(),
            Self::Group { members, .. } => members.iter().collect(),
            Self::Chord {
                members, callback, ..
            } => members.iter().chain([callback.as_ref()]).collect(),
        }
    }

    fn children_mut(&mut self) -> Vec<&mut Node> {
        match self {
            Self::Task(_) => Vec::new(),
            Self::Chain { steps } => steps.iter_mut().collect(),
            Self::Group { members, .. } => members.iter_mut().collect(),
            Self::Chord {
                members, callback, ..
            } => members.iter_mut().chain([callback.as_mut()]).collect(),
        }
    }

    /// The node at `path` below this one.
    pub fn at(&self, path: &[u32]) -> Option<&Node> {
        match path.split_first() {
            None => Some(self),
            Some((i, rest)) => self.children().get(*i as usize)?.at(rest),
        }
    }

    /// Every task node under this one (itself included), with its path.
    pub fn tasks(&self, path: &[u32]) -> Vec<(Path, &Callback)> {
        match self {
            Self::Task(callback) => vec![(path.to_vec(), callback)],
            _ => self
                .children()
                .into_iter()
                .enumerate()
                .flat_map(|(i, child)| child.tasks(&child_path(path, i)))
                .collect(),
        }
    }

    /// Every group and chord under this one: its id and member count.
    pub fn groups(&self) -> Vec<(&str, u32)> {
        let own = match self {
            Self::Group { id, members, .. } | Self::Chord { id, members, .. } => {
                vec![(
                    id.as_str(),
                    u32::try_from(members.len()).unwrap_or(u32::MAX),
                )]
            }
            _ => Vec::new(),
        };
        own.into_iter()
            .chain(self.children().into_iter().flat_map(Node::groups))
            .collect()
    }

    /// The task nodes that start when this node (at `path`) starts with
    /// `input`: a chain's first step's, every member's of a group or chord.
    pub fn starts(
        &self,
        path: &[u32],
        input: Option<&Value>,
    ) -> Vec<(Path, Callback, Option<Value>)> {
        match self {
            Self::Task(callback) => vec![(path.to_vec(), callback.clone(), input.cloned())],
            Self::Chain { steps } => steps
                .first()
                .map(|first| first.starts(&child_path(path, 0), input))
                .unwrap_or_default(),
            Self::Group { members, .. } | Self::Chord { members, .. } => members
                .iter()
                .enumerate()
                .flat_map(|(i, m)| m.starts(&child_path(path, i), input))
                .collect(),
        }
    }

    /// Checks the shape (no empty chain or group, not too deep or large,
    /// task arguments objects) and gives every task node and group an id.
    fn prepare(&mut self, depth: usize, tasks: &mut usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("a canvas may nest at most {MAX_DEPTH} levels"));
        }
        match self {
            Self::Task(callback) => {
                *tasks += 1;
                if *tasks > MAX_TASKS {
                    return Err(format!("a canvas may hold at most {MAX_TASKS} tasks"));
                }
                callback.check_args()?;
                if callback.id.is_empty() {
                    callback.id = uuid::Uuid::now_v7().to_string();
                }
                return Ok(());
            }
            Self::Chain { steps } if steps.is_empty() => {
                return Err("a chain needs at least one step".into());
            }
            Self::Group { members, .. } | Self::Chord { members, .. } if members.is_empty() => {
                return Err("a group or chord needs at least one member".into());
            }
            Self::Group { id, .. } | Self::Chord { id, .. } => {
                if id.is_empty() {
                    *id = uuid::Uuid::now_v7().to_string();
                }
            }
            Self::Chain { .. } => {}
        }
        for child in self.children_mut() {
            child.prepare(depth + 1, tasks)?;
        }
        Ok(())
    }
}

/// `path` with child `i` appended.
pub(crate) fn child_path(path: &[u32], i: usize) -> Path {
    let mut child = path.to_vec();
    child.push(u32::try_from(i).unwrap_or(u32::MAX));
    child
}

/// A canvas as stored: its tree and what applies to all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canvas {
    /// The canvas id.
    pub id: String,
    /// The tree.
    pub root: Node,
    /// Headers every job of the canvas carries (tenant, trace context).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Enqueued with the error of the node that failed the canvas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_error: Option<Callback>,
    /// For a canvas enqueued by a running task: the job tree its jobs join
    /// (depth, quota, the limits they may not exceed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<crate::Lineage>,
    /// When it was enqueued.
    pub created_at: Millis,
}

impl Canvas {
    /// A canvas of `root`, checked, its ids given.
    pub fn new(mut root: Node) -> Result<Self, String> {
        root.prepare(0, &mut 0)?;
        Ok(Self {
            id: uuid::Uuid::now_v7().to_string(),
            root,
            headers: Vec::new(),
            link_error: None,
            lineage: None,
            created_at: crate::time::now_ms(),
        })
    }

    /// Fires `callback` with the failing node's error if the canvas fails
    /// (its id given now, so it fires once).
    pub fn with_link_error(mut self, mut callback: Callback) -> Result<Self, String> {
        callback.check_args()?;
        callback.id = uuid::Uuid::now_v7().to_string();
        self.link_error = Some(callback);
        Ok(self)
    }

    /// The node at `path`.
    pub fn node(&self, path: &[u32]) -> Option<&Node> {
        self.root.at(path)
    }
}

/// Carried by the job of a canvas's task node: which canvas, which node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanvasRef {
    /// The canvas id.
    pub canvas: String,
    /// The node's path.
    pub path: Path,
}

/// A node's state, from its jobs' records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Nothing of it has started.
    Pending,
    /// Some of it is queued or running.
    Running,
    /// All of it succeeded.
    Succeeded,
    /// It failed (a job of it is dead, cancelled or expired).
    Failed,
    /// A group whose members include failures it carried on past
    /// (`member_errors: include`), every member finished.
    Partial,
}

/// The state of `node` given the records of its task nodes' jobs (by id).
pub fn node_state(node: &Node, records: &HashMap<String, TaskRecord>) -> NodeState {
    match node {
        Node::Task(callback) => match records.get(&callback.id).map(|r| r.state) {
            None => NodeState::Pending,
            Some(TaskState::Succeeded) => NodeState::Succeeded,
            Some(TaskState::Dead | TaskState::Cancelled | TaskState::Expired) => NodeState::Failed,
            Some(_) => NodeState::Running,
        },
        Node::Chain { steps } => {
            let states: Vec<NodeState> = steps.iter().map(|s| node_state(s, records)).collect();
            if states.contains(&NodeState::Failed) {
                NodeState::Failed
            } else if states.iter().all(|s| *s == NodeState::Pending) {
                NodeState::Pending
            } else if states
                .iter()
                .all(|s| matches!(s, NodeState::Succeeded | NodeState::Partial))
            {
                if states.contains(&NodeState::Partial) {
                    NodeState::Partial
                } else {
                    NodeState::Succeeded
                }
            } else {
                NodeState::Running
            }
        }
        Node::Group {
            members,
            member_errors,
            ..
        }
        | Node::Chord {
            members,
            member_errors,
            ..
        } => {
            let states: Vec<NodeState> = members.iter().map(|m| node_state(m, records)).collect();
            let failed = states.contains(&NodeState::Failed);
            let finished = states.iter().all(|s| {
                matches!(
                    s,
                    NodeState::Succeeded | NodeState::Failed | NodeState::Partial
                )
            });
            let group = if failed && *member_errors == MemberErrors::Fail {
                NodeState::Failed
            } else if states.iter().all(|s| *s == NodeState::Pending) {
                NodeState::Pending
            } else if !finished {
                NodeState::Running
            } else if failed || states.contains(&NodeState::Partial) {
                NodeState::Partial
            } else {
                NodeState::Succeeded
            };
            match node {
                Node::Chord { callback, .. }
                    if matches!(group, NodeState::Succeeded | NodeState::Partial) =>
                {
                    match node_state(callback, records) {
                        NodeState::Pending => NodeState::Running,
                        NodeState::Succeeded => group,
                        other => other,
                    }
                }
                _ => group,
            }
        }
    }
}

/// The value `node` produced, once it has: a task's result; a chain's
/// last step's; a group's list of its members' (an error object in a
/// failed member's place); a chord's callback's.
pub fn node_result(node: &Node, records: &HashMap<String, TaskRecord>) -> Option<Value> {
    match node {
        Node::Task(callback) => {
            let record = records.get(&callback.id)?;
            match record.state {
                TaskState::Succeeded => Some(record.result.clone().unwrap_or(Value::Null)),
                TaskState::Dead | TaskState::Cancelled | TaskState::Expired => {
                    Some(serde_json::json!({
                        "id": record.id,
                        "task": record.task,
                        "attempt": record.attempt,
                        "kind": record.error.as_ref().map_or("cancelled", |e| e.kind.as_str()),
                        "message": record.error.as_ref().map(|e| e.message.clone()),
                    }))
                }
                _ => None,
            }
        }
        Node::Chain { steps } => steps.last().and_then(|s| node_result(s, records)),
        Node::Group { members, .. } => members
            .iter()
            .map(|m| node_result(m, records))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Node::Chord { callback, .. } => node_result(callback, records),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Node {
        Node::task(name, None)
    }

    #[test]
    fn ids_paths_and_starts() {
        let canvas = Canvas::new(Node::chain(vec![
            t("a"),
            Node::group(vec![t("b"), Node::chain(vec![t("c"), t("d")])]),
            Node::chord(vec![t("e"), t("f")], Node::chain(vec![t("g"), t("h")])),
        ]))
        .unwrap();
        let tasks = canvas.root.tasks(&[]);
        let names: Vec<(Path, &str)> = tasks
            .iter()
            .map(|(p, c)| (p.clone(), c.task.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (vec![0], "a"),
                (vec![1, 0], "b"),
                (vec![1, 1, 0], "c"),
                (vec![1, 1, 1], "d"),
                (vec![2, 0], "e"),
                (vec![2, 1], "f"),
                (vec![2, 2, 0], "g"),
                (vec![2, 2, 1], "h"),
            ]
        );
        assert!(tasks.iter().all(|(_, c)| !c.id.is_empty()));
        assert_eq!(canvas.root.groups().len(), 2);
        // A group starts every member's first task, with the same input.
        let group = canvas.node(&[1]).unwrap();
        let input = serde_json::json!(7);
        let starts = group.starts(&[1], Some(&input));
        let started: Vec<(Path, &str)> = starts
            .iter()
            .map(|(p, c, _)| (p.clone(), c.task.as_str()))
            .collect();
        assert_eq!(started, [(vec![1, 0], "b"), (vec![1, 1, 0], "c")]);
        assert!(starts.iter().all(|(_, _, i)| i.as_ref() == Some(&input)));
        assert!(matches!(canvas.node(&[2, 2, 1]), Some(Node::Task(c)) if c.task == "h"));
        assert!(canvas.node(&[2, 3]).is_none());
    }

    #[test]
    fn empty_or_huge_canvases_are_refused() {
        assert!(
            Canvas::new(Node::chain(vec![]))
                .unwrap_err()
                .contains("at least one step")
        );
        assert!(
            Canvas::new(Node::group(vec![]))
                .unwrap_err()
                .contains("at least one member")
        );
        let mut deep = t("x");
        for _ in 0..40 {
            deep = Node::chain(vec![deep]);
        }
        assert!(Canvas::new(deep).unwrap_err().contains("nest"));
        let bad = Node::task("x", Some("[1]".into()));
        assert!(Canvas::new(bad).unwrap_err().contains("JSON object"));
    }

    #[test]
    fn the_tree_round_trips_through_json() {
        let canvas = Canvas::new(Node::chord(vec![t("a")], t("b"))).unwrap();
        let text = serde_json::to_string(&canvas).unwrap();
        assert!(text.contains(r#""kind":"chord""#), "{text}");
        assert_eq!(serde_json::from_str::<Canvas>(&text).unwrap(), canvas);
    }
}
