//! Which queues a worker claims from: its configured queues minus the
//! paused ones (`xylem queues pause`), looked up every [`PAUSE_REFRESH`].
//! A worker of every queue (none configured) claims from every queue while
//! none is paused — the store's own "all queues" path — and from the known
//! queues minus the paused ones while some are (a queue first seen
//! meanwhile is picked up at the next look).

use std::time::{Duration, Instant};

use crate::Stores;

/// How often a worker looks at which queues are paused: a pause reaches
/// every worker within this (plus one claim).
pub const PAUSE_REFRESH: Duration = Duration::from_secs(1);

pub(crate) struct ClaimQueues {
    configured: Vec<String>,
    /// What to claim from (empty: every queue); `None`: nothing, every
    /// queue this worker serves is paused.
    current: Option<Vec<String>>,
    looked: Option<Instant>,
}

impl ClaimQueues {
    pub(crate) fn new(configured: Vec<String>) -> Self {
        Self {
            current: Some(configured.clone()),
            configured,
            looked: None,
        }
    }

    /// The queues to claim from now (empty: all), or `None` if every one
    /// this worker serves is paused.
    pub(crate) async fn current(&mut self, stores: &Stores) -> Option<&[String]> {
        if self.looked.is_none_or(|at| at.elapsed() >= PAUSE_REFRESH) {
            self.looked = Some(Instant::now());
            match self.look(stores).await {
                Ok(current) => self.current = current,
                // Keep what we had: a store hiccup neither pauses nor
                // resumes anything.
                Err(e) => tracing::debug!(error = %e, "cannot read the paused queues"),
            }
        }
        self.current.as_deref()
    }

    async fn look(&self, stores: &Stores) -> crate::store::StoreResult<Option<Vec<String>>> {
        let paused = stores.queue_control.paused_queues().await?;
        if paused.is_empty() {
            return Ok(Some(self.configured.clone()));
        }
        let serving: Vec<String> = if self.configured.is_empty() {
            stores
                .statistics
                .queue_stats()
                .await?
                .into_iter()
                .map(|s| s.queue)
                .collect()
        } else {
            self.configured.clone()
        };
        let open: Vec<String> = serving
            .into_iter()
            .filter(|q| !paused.contains(q))
            .collect();
        Ok((!open.is_empty()).then_some(open))
    }
}
