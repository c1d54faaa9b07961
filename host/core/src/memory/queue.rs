//! The in-memory store's queue: jobs by id, indexed per queue the way the
//! Redis adapter keys them — ready jobs in claim order, delayed jobs by
//! their run time, leased jobs by their lease expiry — so a claim costs
//! O(k log n) for k jobs, whatever the backlog.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::Envelope;
use crate::store::{Delivery, Nack};
use crate::time::{Millis, ms};

/// Where a job is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Status {
    Ready,
    Leased { until: Millis },
    Dead { reason: String, at: Millis },
}

#[derive(Debug, Clone)]
pub(super) struct QueuedJob {
    pub(super) envelope: Envelope,
    pub(super) run_at: Millis,
    pub(super) status: Status,
    pub(super) lease: u64,
    pub(super) deliveries: u32,
}

/// Claim order: highest priority, then earliest run time, then oldest id.
type ReadyKey = (Reverse<u8>, Millis, String);

#[derive(Debug, Default)]
struct Index {
    ready: BTreeSet<ReadyKey>,
    delayed: BTreeSet<(Millis, String)>,
    leased: BTreeSet<(Millis, String)>,
}

/// Every queued, leased and dead job.
#[derive(Debug, Default)]
pub(super) struct JobQueue {
    jobs: HashMap<String, QueuedJob>,
    index: HashMap<String, Index>,
}

fn ready_key(job: &QueuedJob) -> ReadyKey {
    (
        Reverse(job.envelope.priority),
        job.run_at,
        job.envelope.id.clone(),
    )
}

impl JobQueue {
    fn unindex(&mut self, job: &QueuedJob) {
        let Some(index) = self.index.get_mut(&job.envelope.queue) else {
            return;
        };
        match job.status {
            Status::Ready => {
                index.ready.remove(&ready_key(job));
                index.delayed.remove(&(job.run_at, job.envelope.id.clone()));
            }
            Status::Leased { until } => {
                index.leased.remove(&(until, job.envelope.id.clone()));
            }
            Status::Dead { .. } => {}
        }
    }

    fn reindex(&mut self, job: &QueuedJob, now: Millis) {
        let index = self.index.entry(job.envelope.queue.clone()).or_default();
        match job.status {
            Status::Ready if job.run_at <= now => {
                index.ready.insert(ready_key(job));
            }
            Status::Ready => {
                index.delayed.insert((job.run_at, job.envelope.id.clone()));
            }
            Status::Leased { until } => {
                index.leased.insert((until, job.envelope.id.clone()));
            }
            Status::Dead { .. } => {}
        }
    }

    /// Changes job `id` with `f`, keeping the indexes right.
    fn update<T>(
        &mut self,
        id: &str,
        now: Millis,
        f: impl FnOnce(&mut QueuedJob) -> T,
    ) -> Option<T> {
        let mut job = self.jobs.remove(id)?;
        self.unindex(&job);
        let out = f(&mut job);
        self.reindex(&job, now);
        self.jobs.insert(id.to_owned(), job);
        Some(out)
    }

    /// Queues a new job (its id is not in use: `enqueue` checked).
    pub(super) fn insert(&mut self, envelope: &Envelope, now: Millis) {
        let job = QueuedJob {
            envelope: envelope.clone(),
            run_at: envelope.run_at(),
            status: Status::Ready,
            lease: 0,
            deliveries: 0,
        };
        self.reindex(&job, now);
        self.jobs.insert(envelope.id.clone(), job);
    }

    /// Whether a job with this id is here, in any status.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.jobs.contains_key(id)
    }

    /// Removes a waiting job (ready, delayed, or leased with its lease run
    /// out at `now`), and says what it found.
    pub(super) fn withdraw(&mut self, id: &str, now: Millis) -> crate::store::Withdrawn {
        use crate::store::Withdrawn;
        let found = match self.jobs.get(id).map(|j| &j.status) {
            None => return Withdrawn::Absent,
            Some(Status::Dead { .. }) => return Withdrawn::Dead,
            Some(Status::Leased { until }) if *until > now => return Withdrawn::Running,
            Some(_) => Withdrawn::Removed,
        };
        self.remove(id);
        found
    }

    /// Removes a job; whether it was there.
    pub(super) fn remove(&mut self, id: &str) -> bool {
        match self.jobs.remove(id) {
            Some(job) => {
                self.unindex(&job);
                true
            }
            None => false,
        }
    }

    /// Whether job `id` is leased under `lease`.
    pub(super) fn held(&self, id: &str, lease: u64) -> bool {
        self.jobs
            .get(id)
            .is_some_and(|j| j.lease == lease && matches!(j.status, Status::Leased { .. }))
    }

    /// Moves the lease of a held job to `until`; whether it was held.
    pub(super) fn extend(&mut self, id: &str, lease: u64, until: Millis, now: Millis) -> bool {
        if !self.held(id, lease) {
            return false;
        }
        self.update(id, now, |job| job.status = Status::Leased { until });
        true
    }

    /// Requeues, releases or dead-letters job `id`.
    pub(super) fn settle(&mut self, id: &str, action: Nack, now: Millis) {
        self.update(id, now, |job| match action {
            Nack::Retry { envelope, delay } => {
                job.envelope = *envelope;
                job.run_at = now + ms(delay);
                job.status = Status::Ready;
            }
            Nack::Release => job.status = Status::Ready,
            Nack::DeadLetter { reason } => job.status = Status::Dead { reason, at: now },
        });
    }

    /// Makes job `id` (dead) ready again at `run_at` with `envelope`.
    pub(super) fn revive(&mut self, id: &str, envelope: Envelope, run_at: Millis, now: Millis) {
        self.update(id, now, |job| {
            job.envelope = envelope;
            job.run_at = run_at;
            job.status = Status::Ready;
        });
    }

    /// Leases up to `max` due jobs of `queues` (all if empty), in claim
    /// order: due delayed jobs and expired leases become ready first.
    pub(super) fn lease_due(
        &mut self,
        queues: &[String],
        max: usize,
        lease: Duration,
        now: Millis,
    ) -> Vec<Delivery> {
        let mut names: Vec<String> = if queues.is_empty() {
            self.index.keys().cloned().collect()
        } else {
            queues.to_vec()
        };
        // A queue named twice is one queue: never lease a job twice.
        names.sort();
        names.dedup();
        let mut candidates: Vec<ReadyKey> = Vec::new();
        for name in &names {
            let Some(index) = self.index.get_mut(name) else {
                continue;
            };
            let due: Vec<String> = index
                .delayed
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| id.clone())
                .chain(
                    index
                        .leased
                        .iter()
                        .take_while(|(until, _)| *until <= now)
                        .map(|(_, id)| id.clone()),
                )
                .collect();
            for id in due {
                self.update(&id, now, |job| job.status = Status::Ready);
            }
            if let Some(index) = self.index.get(name) {
                candidates.extend(index.ready.iter().take(max).cloned());
            }
        }
        candidates.sort();
        candidates.truncate(max);
        let until = now + ms(lease);
        candidates
            .into_iter()
            .filter_map(|(_, _, id)| {
                self.update(&id, now, |job| {
                    job.status = Status::Leased { until };
                    job.lease += 1;
                    job.deliveries += 1;
                    Delivery {
                        envelope: job.envelope.clone(),
                        lease: job.lease,
                        deliveries: job.deliveries,
                    }
                })
            })
            .collect()
    }

    /// Every job.
    pub(super) fn iter(&self) -> impl Iterator<Item = &QueuedJob> {
        self.jobs.values()
    }

    /// Removes the jobs `keep` refuses; how many.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&QueuedJob) -> bool) -> u64 {
        let gone: Vec<String> = self
            .jobs
            .values()
            .filter(|j| !keep(j))
            .map(|j| j.envelope.id.clone())
            .collect();
        for id in &gone {
            self.remove(id);
        }
        gone.len() as u64
    }
}
