//! Pausing and purging queues, whatever the store.
//!
//! - **Pause**: every worker stops taking jobs from the queue within
//!   [`crate::worker::PAUSE_REFRESH`] (it looks once a second); running
//!   jobs finish; jobs can still be enqueued and wait. **Resume** undoes
//!   it, as quickly.
//! - **Purge**: the queue's waiting jobs — ready, delayed, or both — are
//!   withdrawn as [`crate::cancel`] withdraws them (atomically: never one
//!   a worker holds) and marked `cancelled` with the detail
//!   [`PURGED`]. Running and dead jobs are left alone.

use crate::store::{StoreResult, Stores, Withdrawn};
use crate::time::now_ms;

/// The history detail of a purged job.
pub const PURGED: &str = "purged from its queue (xylem queues purge)";

/// Jobs purged per store round.
const BATCH: usize = 1000;

/// Which waiting jobs a purge takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// Jobs ready to run.
    pub ready: bool,
    /// Jobs waiting for their time.
    pub delayed: bool,
}

/// Purges `queue`'s waiting jobs (see the module docs); how many.
pub async fn purge(stores: &Stores, queue: &str, which: Waiting) -> StoreResult<u64> {
    let mut purged = 0_u64;
    loop {
        let ids = stores
            .queue_control
            .waiting_ids(queue, which.ready, which.delayed, BATCH)
            .await?;
        if ids.is_empty() {
            return Ok(purged);
        }
        let found = stores.cancellation.withdraw(&ids, now_ms()).await?;
        let mut removed = 0;
        for (id, withdrawn) in ids.iter().zip(found) {
            if withdrawn == Withdrawn::Removed {
                crate::cancel::mark_cancelled(stores, id, PURGED).await?;
                removed += 1;
            }
        }
        purged += removed;
        // Every id of the batch was taken by a worker meanwhile: what is
        // left is not waiting any more.
        if removed == 0 {
            return Ok(purged);
        }
    }
}
