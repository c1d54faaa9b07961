//! Moving a canvas on: starting it, and what a finished task node starts
//! next — the one rule every worker applies (see the module above for why
//! it is exactly-once).

use serde_json::Value;

use super::model::{Canvas, CanvasRef, MemberErrors, Node, Path, child_path};
use crate::Envelope;
use crate::callback::{Callback, Trigger};
use crate::client::{Client, ClientError, EnqueueRequest};

/// What a finished task node did to its canvas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// These jobs were started (ids; some may have been started already by
    /// an earlier delivery).
    Started(Vec<String>),
    /// Its group has members still running.
    Waiting,
    /// The canvas finished.
    Done,
    /// The canvas failed at this node (its `link_error`, if any, fired:
    /// the id).
    Failed {
        /// The task node that failed.
        at: Path,
        /// The canvas's error callback's job, if it has one.
        link_error: Option<String>,
    },
}

/// Writes `canvas` to the store, creates its groups and starts its first
/// task nodes. Returns their job ids.
pub async fn start_canvas(client: &Client, canvas: &Canvas) -> Result<Vec<String>, ClientError> {
    // Every task named must exist now: a typo is refused before anything
    // is written.
    for (_, callback) in canvas.root.tasks(&[]) {
        client
            .prepare(EnqueueRequest::new(&callback.task, "{}"))
            .await
            .map(|_| ())
            .or_else(|e| match e {
                // Arguments are checked when the node starts (its input is
                // not known yet); only an unknown task or name is fatal.
                ClientError::SchemaMismatch { .. } => Ok(()),
                other => Err(other),
            })?;
    }
    let stores = client.stores();
    let text = serde_json::to_string(canvas)
        .map_err(|e| ClientError::InvalidOption(format!("cannot encode the canvas: {e}")))?;
    stores.canvases.put_canvas(&canvas.id, &text).await?;
    for (id, size) in canvas.root.groups() {
        stores.groups.create_group(id, size).await?;
    }
    start(client, canvas, &[], None, None).await
}

/// Starts the node at `path` with `input`: enqueues its first task nodes
/// under their ids (an id in use: started already). `parent`: the job
/// whose end started it.
async fn start(
    client: &Client,
    canvas: &Canvas,
    path: &[u32],
    input: Option<&Value>,
    parent: Option<&Envelope>,
) -> Result<Vec<String>, ClientError> {
    let node = canvas.node(path).ok_or_else(|| {
        ClientError::InvalidOption(format!("canvas {} has no node {path:?}", canvas.id))
    })?;
    let mut ids = Vec::new();
    for (path, callback, input) in node.starts(path, input) {
        let mut envelope = client
            .prepare(request(canvas, &callback, Trigger::Success, input, parent))
            .await?;
        envelope.id.clone_from(&callback.id);
        envelope.canvas = Some(CanvasRef {
            canvas: canvas.id.clone(),
            path,
        });
        if let Some(lineage) = &canvas.lineage {
            // A canvas enqueued by task code is in that task's job tree
            // (its nodes were counted against the quotas when it was).
            lineage.adopt(&mut envelope);
        }
        client.enqueue_by_id(&envelope).await?;
        ids.push(envelope.id);
    }
    Ok(ids)
}

/// The request of a task node given its input (the callback argument rule).
fn request(
    canvas: &Canvas,
    callback: &Callback,
    trigger: Trigger,
    input: Option<Value>,
    parent: Option<&Envelope>,
) -> EnqueueRequest {
    let args = match input {
        Some(value) => callback.args_with(trigger, value),
        None => callback.args.clone().unwrap_or_else(|| "{}".to_owned()),
    };
    let mut req = EnqueueRequest::new(&callback.task, args);
    req.queue.clone_from(&callback.queue);
    req.priority = callback.priority;
    req.headers.clone_from(&canvas.headers);
    // Its record names its canvas (the dashboard links a job to its tree).
    crate::envelope::set_header(&mut req.headers, super::CANVAS_HEADER, &canvas.id);
    req.parent = parent.map(|p| p.id.clone());
    req
}

/// The task node of `job` (at `job.canvas`) ended with `outcome`: its
/// result, or the error object of a dead job. Starts what follows.
pub async fn advance(
    client: &Client,
    canvas: &Canvas,
    job: &Envelope,
    at: &[u32],
    outcome: Result<Value, Value>,
) -> Result<Advance, ClientError> {
    let groups = &client.stores().groups;
    let mut path: Path = at.to_vec();
    let mut value = outcome;
    loop {
        let Some((&index, parent_path)) = path.split_last() else {
            // The root finished.
            return match value {
                Ok(_) => Ok(Advance::Done),
                Err(error) => fail(client, canvas, job, at, error).await,
            };
        };
        let parent = canvas.node(parent_path).ok_or_else(|| {
            ClientError::InvalidOption(format!("canvas {} has no node {parent_path:?}", canvas.id))
        })?;
        let index = index as usize;
        match (parent, value) {
            (Node::Chain { steps }, Ok(result)) if index + 1 < steps.len() => {
                let next = child_path(parent_path, index + 1);
                return start(client, canvas, &next, Some(&result), Some(job))
                    .await
                    .map(Advance::Started);
            }
            (Node::Chain { .. }, done) => value = done,
            (
                Node::Group {
                    id,
                    members,
                    member_errors,
                }
                | Node::Chord {
                    id,
                    members,
                    member_errors,
                    ..
                },
                done,
            ) if index < members.len() => {
                let member = match done {
                    Ok(result) => result,
                    Err(error) if *member_errors == MemberErrors::Include => error,
                    Err(error) => {
                        value = Err(error);
                        path = parent_path.to_vec();
                        continue;
                    }
                };
                let member_index = u32::try_from(index).unwrap_or(u32::MAX);
                let status = match groups.complete_member(id, member_index, &member).await? {
                    Some(status) => status,
                    None => {
                        // Created when the canvas was; a store that lost it
                        // gets it again.
                        let size = u32::try_from(members.len()).unwrap_or(u32::MAX);
                        groups.create_group(id, size).await?;
                        groups
                            .complete_member(id, member_index, &member)
                            .await?
                            .ok_or_else(|| {
                                ClientError::InvalidOption(format!("group {id} is missing"))
                            })?
                    }
                };
                if !status.is_complete() {
                    return Ok(Advance::Waiting);
                }
                let results = Value::Array(groups.group_results(id).await?.unwrap_or_default());
                if let Node::Chord { .. } = parent {
                    let callback = child_path(parent_path, members.len());
                    return start(client, canvas, &callback, Some(&results), Some(job))
                        .await
                        .map(Advance::Started);
                }
                value = Ok(results);
            }
            // A chord's callback finished: the chord did.
            (Node::Chord { .. }, done) => value = done,
            (Node::Group { .. } | Node::Task(_), _) => {
                return Err(ClientError::InvalidOption(format!(
                    "canvas {} has no node {path:?}",
                    canvas.id
                )));
            }
        }
        path = parent_path.to_vec();
    }
}

/// The canvas failed at `at`: fire its `link_error` with the error.
async fn fail(
    client: &Client,
    canvas: &Canvas,
    job: &Envelope,
    at: &[u32],
    error: Value,
) -> Result<Advance, ClientError> {
    let Some(callback) = &canvas.link_error else {
        return Ok(Advance::Failed {
            at: at.to_vec(),
            link_error: None,
        });
    };
    let mut envelope = client
        .prepare(request(
            canvas,
            callback,
            Trigger::Failure,
            Some(error),
            Some(job),
        ))
        .await?;
    envelope.id.clone_from(&callback.id);
    client.enqueue_by_id(&envelope).await?;
    Ok(Advance::Failed {
        at: at.to_vec(),
        link_error: Some(envelope.id),
    })
}
