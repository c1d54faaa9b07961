//! Fires a finished job's callback (`crate::callback`): its `link` when it
//! succeeded, its `link_error` when it is dead; and moves its canvas on
//! (`crate::canvas`), if it is a canvas's task node. Fired before the job's
//! outcome is written, under the callback's id chosen at enqueue: if the
//! worker dies in between, the job runs again and its second firing finds
//! the id in use — the callback is enqueued once. What happened is added
//! to the job's history entry, including why a callback could not be
//! enqueued (its task removed since, say): never silently dropped.

use serde_json::Value;

use super::{RunningJob, WorkerShared};
use crate::callback::{Callback, Trigger, error_value};
use crate::client::{ClientError, EnqueueRequest};
use crate::lineage::{Lineage, TREE_QUOTA_TTL, tree_quota_key};
use crate::record::TaskState;
use crate::store::Completion;
use crate::{Envelope, Failure, FailureKind, TaskOptions};

/// Enqueues the callback `completion` calls for, if any, and notes it in
/// the completion's history detail. `task` is the job's task's declared
/// options (its limits cap a callback in a job tree).
pub(super) async fn fire(
    shared: &WorkerShared,
    job: &RunningJob,
    envelope: &Envelope,
    task: &TaskOptions,
    completion: &mut Completion,
) {
    let (callback, trigger, value) = match end_value(envelope, completion) {
        Some(Ok(result)) => match &envelope.options.link {
            Some(callback) => (callback, Trigger::Success, result),
            None => return,
        },
        Some(Err(error)) => match &envelope.options.link_error {
            Some(callback) => (callback, Trigger::Failure, error),
            None => return,
        },
        None => return,
    };
    let note = match enqueue(shared, job, envelope, task, callback, trigger, value).await {
        Ok(Fired::Now) => format!(
            "{} `{}` enqueued as {}",
            trigger.option(),
            callback.task,
            callback.id
        ),
        Ok(Fired::Before) => format!(
            "{} `{}` was enqueued already as {} (by an earlier delivery)",
            trigger.option(),
            callback.task,
            callback.id
        ),
        Err(why) => {
            tracing::warn!(id = %envelope.id, callback = %callback.task, %why, "callback not enqueued");
            format!(
                "{} `{}` NOT enqueued: {why}",
                trigger.option(),
                callback.task
            )
        }
    };
    completion.transition.add_note(&note);
}

/// How a job ended, for what follows it: its result if it succeeded, its
/// error object (`crate::callback::error_value`) if it is dead, nothing
/// otherwise (waiting again, retrying, cancelled, expired).
fn end_value(envelope: &Envelope, completion: &Completion) -> Option<Result<Value, Value>> {
    let outcome = completion.transition.outcome.as_ref();
    match completion.transition.state {
        TaskState::Succeeded => Some(Ok(outcome
            .and_then(|o| o.result.clone())
            .unwrap_or(Value::Null))),
        TaskState::Dead => {
            let failure = outcome.and_then(|o| o.error.clone()).unwrap_or_else(|| {
                Failure::new(
                    FailureKind::PluginError,
                    completion.transition.detail.clone().unwrap_or_default(),
                )
            });
            Some(Err(error_value(envelope, &failure)))
        }
        _ => None,
    }
}

/// Whether this firing enqueued the callback or found it enqueued.
enum Fired {
    Now,
    Before,
}

async fn enqueue(
    shared: &WorkerShared,
    job: &RunningJob,
    parent: &Envelope,
    task: &TaskOptions,
    callback: &Callback,
    trigger: Trigger,
    value: Value,
) -> Result<Fired, String> {
    let mut req = EnqueueRequest::new(&callback.task, callback.args_with(trigger, value));
    req.queue = callback.queue.clone();
    req.priority = callback.priority;
    req.headers = parent.headers.clone();
    req.parent = Some(parent.id.clone());
    let req = &req;
    let attempt = move || async move {
        let mut envelope = shared.client.prepare(req.clone()).await?;
        envelope.id = callback.id.clone();
        // A callback of a job in a tree (enqueued by task code) is in
        // the tree too: its depth, quota and limits — so links cannot
        // grow a tree past its quota.
        if let Some(lineage) = &parent.lineage {
            let child = Lineage::child_of(parent, lineage.quota, parent.limits(task));
            if child.depth > child.quota.max_depth {
                return Err(ClientError::InvalidOption(format!(
                    "it would be {} levels below its root, over the tree's limit of {}",
                    child.depth, child.quota.max_depth
                )));
            }
            child.adopt(&mut envelope);
            let taken = shared
                .stores
                .quotas
                .take_quota(
                    &tree_quota_key(&child.root),
                    1,
                    child.quota.per_tree,
                    TREE_QUOTA_TTL,
                )
                .await?;
            if !taken {
                return Err(ClientError::InvalidOption(format!(
                    "the tree under root job {} has used its quota of {} descendants",
                    child.root, child.quota.per_tree
                )));
            }
        }
        Ok::<_, ClientError>(shared.client.enqueue_by_id(&envelope).await?)
    };
    match super::held::while_lease_holds(shared, job, "enqueue a callback", transient, attempt)
        .await
    {
        Ok(true) => Ok(Fired::Now),
        Ok(false) => Ok(Fired::Before),
        Err(e) => Err(e.to_string()),
    }
}

/// A store error that may pass.
fn transient(e: &ClientError) -> bool {
    matches!(e, ClientError::Store(e) if e.is_transient())
}

/// Moves the canvas of a finished job on (`crate::canvas::advance`), if it
/// belongs to one, and notes what happened in its history. Transient store
/// errors are tried again while the job's lease holds; past that the note
/// says so and the job's next delivery (if any) tries again.
pub(super) async fn advance_canvas(
    shared: &WorkerShared,
    job: &RunningJob,
    envelope: &Envelope,
    completion: &mut Completion,
) {
    let Some(at) = &envelope.canvas else { return };
    let Some(value) = end_value(envelope, completion) else {
        return;
    };
    let value = &value;
    let step = move || async move {
        let text = shared
            .stores
            .canvases
            .get_canvas(&at.canvas)
            .await?
            .ok_or_else(|| {
                ClientError::InvalidOption(format!("canvas {} is not in the store", at.canvas))
            })?;
        let canvas: crate::canvas::Canvas = serde_json::from_str(&text).map_err(|e| {
            ClientError::InvalidOption(format!("canvas {} cannot be read: {e}", at.canvas))
        })?;
        crate::canvas::advance(&shared.client, &canvas, envelope, &at.path, value.clone()).await
    };
    let advanced =
        super::held::while_lease_holds(shared, job, "move a canvas on", transient, step).await;
    let note = match advanced {
        Ok(crate::canvas::Advance::Started(ids)) => {
            format!("canvas {}: started {}", at.canvas, ids.join(", "))
        }
        Ok(crate::canvas::Advance::Waiting) => {
            format!("canvas {}: its group waits for other members", at.canvas)
        }
        Ok(crate::canvas::Advance::Done) => format!("canvas {} finished", at.canvas),
        Ok(crate::canvas::Advance::Failed { link_error, .. }) => match link_error {
            Some(id) => format!("canvas {} failed here; its link_error is {id}", at.canvas),
            None => format!("canvas {} failed here", at.canvas),
        },
        Err(e) => {
            tracing::warn!(id = %envelope.id, canvas = %at.canvas, error = %e, "cannot move a canvas on");
            format!("canvas {}: NOT moved on: {e}", at.canvas)
        }
    };
    completion.transition.add_note(&note);
}

/// Gives the workflow run an activity's job belongs to (its
/// `xylem-workflow-run` header) the job's end — its result, or its
/// failure when dead or cancelled — before the job's own end is written,
/// so a job delivered again delivers again (a no-op for the run).
///
/// False if the store failed in a way that may pass but outlasted the
/// job's lease: the job's end must then not be written either, and the
/// job runs again once its lease lapses (marked done, its end would be
/// lost to the run). A failure for good (a run that cannot be read) is
/// noted in the job's record instead, and the job ends.
pub(super) async fn deliver_to_workflow(
    shared: &WorkerShared,
    job: &RunningJob,
    envelope: &Envelope,
    completion: &mut Completion,
) -> bool {
    let Some((run, seq)) = crate::workflow::engine::activity_of(&envelope.headers) else {
        return true;
    };
    let at = crate::time::now_ms();
    let outcome = match (completion.transition.state, end_value(envelope, completion)) {
        (TaskState::Succeeded, Some(Ok(value))) => crate::workflow::StepOutcome::Ok {
            value: value.to_string(),
            at,
        },
        (TaskState::Dead, Some(Err(error))) => crate::workflow::StepOutcome::Err {
            kind: error["kind"].as_str().unwrap_or("dead").to_owned(),
            message: error["message"].as_str().unwrap_or_default().to_owned(),
            at,
        },
        (state @ (TaskState::Cancelled | TaskState::Expired), _) => {
            crate::workflow::StepOutcome::Err {
                kind: state.as_str().to_owned(),
                message: completion.transition.detail.clone().unwrap_or_default(),
                at,
            }
        }
        _ => return true,
    };
    let (to, what) = (run.as_str(), &outcome);
    let delivered = super::held::while_lease_holds(
        shared,
        job,
        "give a workflow run its activity's end",
        crate::store::StoreError::is_transient,
        move || shared.deliveries.deliver(to, seq, what.clone()),
    )
    .await;
    match delivered {
        Ok(()) => true,
        Err(e) if e.is_transient() => {
            tracing::warn!(%run, seq, error = %e, "cannot give a workflow run its activity's end; the job's end is not written, and it runs again when its lease lapses");
            false
        }
        Err(e) => {
            tracing::error!(%run, seq, error = %e, "cannot give a workflow run its activity's end");
            completion
                .transition
                .add_note(&format!("workflow run {run}: NOT given this end: {e}"));
            true
        }
    }
}
