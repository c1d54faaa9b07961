//! Store writes a finished job still owes — its outcome, its callbacks,
//! its canvas's next step, its workflow run's end — tried again through a
//! store outage for as long as the job's lease is known to be held (the
//! lease keeper goes on extending it meanwhile). Past that the job will be delivered again, so
//! giving up loses nothing.

use std::future::Future;
use std::time::Duration;

use super::{RunningJob, WorkerShared};

/// Runs `attempt` until it succeeds, fails for good, or a transient error
/// (`transient`) would outlast the job's lease; backs off from 50 ms to
/// 2 s, logging each retry as "cannot `what`".
pub(super) async fn while_lease_holds<T, E, F>(
    shared: &WorkerShared,
    job: &RunningJob,
    what: &str,
    transient: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(e) if transient(&e) && shared.now() + pause < job.held_until() => {
                tracing::warn!(id = %job.id, error = %e, retry_in = ?pause, "cannot {what}; retrying while the job's lease holds");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}
