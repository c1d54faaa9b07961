//! Fires a finished job's callback (`crate::callback`): its `link` when it
//! succeeded, its `link_error` when it is dead. Fired before the job's
//! outcome is written, under the callback's id chosen at enqueue: if the
//! worker dies in between, the job runs again and its second firing finds
//! the id in use — the callback is enqueued once. What happened is added
//! to the job's history entry, including why a callback could not be
//! enqueued (its task removed since, say): never silently dropped.

use std::time::Duration;

use serde_json::Value;

use super::{RunningJob, WorkerShared};
use crate::callback::{Callback, Trigger, error_value};
use crate::client::{ClientError, EnqueueRequest};
use crate::lineage::{Lineage, TREE_QUOTA_TTL, tree_quota_key};
use crate::record::TaskState;
use crate::store::{Completion, StoreError};
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
    let outcome = completion.transition.outcome.as_ref();
    let (callback, trigger, value) = match completion.transition.state {
        TaskState::Succeeded => match &envelope.options.link {
            Some(callback) => (
                callback,
                Trigger::Success,
                outcome
                    .and_then(|o| o.result.clone())
                    .unwrap_or(Value::Null),
            ),
            None => return,
        },
        TaskState::Dead => match &envelope.options.link_error {
            Some(callback) => {
                let failure = outcome.and_then(|o| o.error.clone()).unwrap_or_else(|| {
                    Failure::new(
                        FailureKind::PluginError,
                        completion.transition.detail.clone().unwrap_or_default(),
                    )
                });
                (callback, Trigger::Failure, error_value(envelope, &failure))
            }
            None => return,
        },
        _ => return,
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
    let detail = &mut completion.transition.detail;
    *detail = Some(match detail.take() {
        Some(before) => format!("{before}; {note}"),
        None => note,
    });
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
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = async {
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
            shared
                .stores
                .broker
                .enqueue(std::slice::from_ref(&envelope))
                .await?;
            Ok::<_, ClientError>(())
        };
        match attempt.await {
            Ok(()) => return Ok(Fired::Now),
            Err(ClientError::Store(StoreError::Duplicate(_))) => return Ok(Fired::Before),
            Err(ClientError::Store(e))
                if e.is_transient() && shared.now() + pause < job.held_until() =>
            {
                tracing::warn!(error = %e, retry_in = ?pause, "cannot enqueue a callback; retrying while the job's lease holds");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
