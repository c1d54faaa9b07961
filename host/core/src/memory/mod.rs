//! The in-memory adapter: every store trait in one process's memory.
//! For tests, `xylem demo`/`bench` with `memory://`, and embedding; it
//! keeps nothing across restarts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::record::{TaskFilter, TaskRecord, TaskState, Transition};
use crate::schedule::Schedule;
use crate::store::{
    Broker, CANCEL_REQUEST_TTL, Cancellation, CanvasStore, ClaimPlan, Completed, Completion,
    DeadFilter, DeadJob, DeadLetters, Delivery, GroupStatus, GroupStore, LockStore, Nack,
    PluginInfo, PluginStore, QueueControl, QueueStats, QuotaStore, REPLAY_DETAIL, RateLimits,
    ResultBackend, RunFilter, ScheduleStore, Settle, Statistics, StoreError, StoreResult,
    TaskRoute, Withdrawn, WorkerRegistry, WorkflowStore, check_batch_ids, fallback_route,
    queued_detail, replay_envelope, replay_transition, running_detail,
};
use crate::time::{Millis, ms, now_ms};
use crate::workflow::Run;
use crate::{Envelope, Progress, TaskSpec};

mod queue;

use queue::{JobQueue, QueuedJob, Status};

#[derive(Debug, Clone)]
struct StoredPlugin {
    bytes: Vec<u8>,
    tasks: Vec<TaskSpec>,
    pushed_at: Millis,
    /// Push order, to break ties between pushes in the same millisecond.
    seq: u64,
    /// Compiled forms by engine id ([`PluginStore::put_compiled`]).
    compiled: HashMap<String, Vec<u8>>,
}

#[derive(Debug, Default)]
struct Group {
    size: u32,
    results: std::collections::BTreeMap<u32, serde_json::Value>,
    claimed: bool,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Canvas definitions by id.
    canvases: HashMap<String, String>,
    /// Schedules by name.
    schedules: std::collections::BTreeMap<String, crate::schedule::Schedule>,
    runs: std::collections::BTreeMap<String, crate::workflow::Run>,
    /// Workers' records: id → (record, dropped at).
    workers: HashMap<String, (crate::presence::WorkerBeat, Millis)>,
    locks: HashMap<String, (String, Millis)>,
    /// Quota counters: key → (used, expires at).
    quotas: HashMap<String, (u64, Millis)>,
    jobs: JobQueue,
    records: HashMap<String, TaskRecord>,
    /// When records expire (see `ResultBackend::expire`).
    record_expiry: HashMap<String, Millis>,
    plugins: HashMap<String, StoredPlugin>,
    routes: HashMap<String, TaskRoute>,
    routes_version: u64,
    push_seq: u64,
    /// Cancel requests: job id → when the request lapses.
    cancel_requests: HashMap<String, Millis>,
    /// Paused queues.
    paused: std::collections::BTreeSet<String>,
    /// Rate limiters: key → (next free slot, forgotten at).
    rate_slots: HashMap<String, (Millis, Millis)>,
}

/// Broker, result backend and plugin store in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    published: Notify,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn dead_matches(job: &QueuedJob, filter: &DeadFilter) -> bool {
    matches!(job.status, Status::Dead { .. })
        && filter
            .queue
            .as_ref()
            .is_none_or(|q| &job.envelope.queue == q)
        && (filter.ids.is_empty() || filter.ids.contains(&job.envelope.id))
}

impl State {
    fn record(&mut self, envelope: &Envelope, now: Millis) {
        self.record_expiry.remove(&envelope.id);
        self.records.insert(
            envelope.id.clone(),
            TaskRecord::from_envelope(
                envelope,
                TaskState::Queued,
                queued_detail(envelope, now),
                now,
            ),
        );
    }

    /// The record of `id`, unless it has expired.
    fn live_record(&mut self, id: &str, now: Millis) -> Option<&mut TaskRecord> {
        if self.record_expiry.get(id).is_some_and(|at| *at <= now) {
            self.record_expiry.remove(id);
            self.records.remove(id);
        }
        self.records.get_mut(id)
    }
}

#[async_trait]
impl Broker for MemoryStore {
    async fn enqueue(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        check_batch_ids(envelopes)?;
        let now = now_ms();
        let mut state = self.lock();
        for envelope in envelopes {
            if state.jobs.contains(&envelope.id) || state.live_record(&envelope.id, now).is_some() {
                return Err(StoreError::Duplicate(envelope.id.clone()));
            }
        }
        for envelope in envelopes {
            state.record(envelope, now);
            state.jobs.insert(envelope, now);
        }
        drop(state);
        self.published.notify_waiters();
        self.published.notify_one();
        Ok(())
    }

    async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        worker: &str,
    ) -> StoreResult<Vec<Delivery>> {
        let now = now_ms();
        let mut state = self.lock();
        let mut claimed = Vec::new();
        // Dropped jobs (already succeeded) free their place: look again.
        while claimed.len() < max {
            let batch = state
                .jobs
                .lease_due(queues, max - claimed.len(), lease, now);
            if batch.is_empty() {
                break;
            }
            for delivery in batch {
                let envelope = &delivery.envelope;
                let current = state.live_record(&envelope.id, now).map(|r| r.state);
                let running = Transition::to(TaskState::Running, envelope.attempt).detail(
                    running_detail(worker, delivery.deliveries, envelope.attempt),
                );
                match ClaimPlan::for_record(current) {
                    ClaimPlan::Drop => {
                        state.jobs.remove(&envelope.id);
                        continue;
                    }
                    ClaimPlan::Recreate => {
                        let record = TaskRecord::from_envelope(
                            envelope,
                            TaskState::Running,
                            running.detail,
                            now,
                        );
                        state.records.insert(envelope.id.clone(), record);
                    }
                    ClaimPlan::Run => {
                        if let Some(record) = state.records.get_mut(&envelope.id) {
                            record.apply(running, now);
                        }
                    }
                }
                claimed.push(delivery);
            }
        }
        Ok(claimed)
    }

    async fn complete(&self, completions: &[Completion]) -> StoreResult<Vec<Completed>> {
        let now = now_ms();
        let mut state = self.lock();
        let mut results = Vec::with_capacity(completions.len());
        let mut wake = false;
        for c in completions {
            let current = state.live_record(&c.id, now).map(|r| r.state);
            let held = state.jobs.held(&c.id, c.lease);
            let plan = c.plan(current, held);
            if plan.record {
                // Claims recreate missing records, so one is there; if the
                // store lost it meanwhile, the queue is still settled.
                if let Some(record) = state.records.get_mut(&c.id) {
                    record.apply(c.transition.clone(), now);
                }
                if let Some(ttl) = c.result_ttl {
                    state.record_expiry.insert(c.id.clone(), now + ms(ttl));
                }
            }
            if plan.settle {
                match &c.settle {
                    Settle::Ack => {
                        state.jobs.remove(&c.id);
                    }
                    Settle::Nack(action) => {
                        wake |= !matches!(action, Nack::DeadLetter { .. });
                        state.jobs.settle(&c.id, action.clone(), now);
                    }
                }
            } else if plan.remove_entry {
                state.jobs.remove(&c.id);
            }
            results.push(plan.result);
        }
        drop(state);
        if wake {
            self.published.notify_one();
        }
        Ok(results)
    }

    async fn extend_many(&self, leases: &[(String, u64)], by: Duration) -> StoreResult<Vec<bool>> {
        let now = now_ms();
        let mut state = self.lock();
        Ok(leases
            .iter()
            .map(|(id, lease)| state.jobs.extend(id, *lease, now + ms(by), now))
            .collect())
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.published.notified()).await;
    }
}

#[async_trait]
impl DeadLetters for MemoryStore {
    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let state = self.lock();
        let mut dead: Vec<DeadJob> = state
            .jobs
            .iter()
            .filter(|j| dead_matches(j, filter))
            .filter_map(|j| match &j.status {
                Status::Dead { reason, at } => Some(DeadJob {
                    envelope: j.envelope.clone(),
                    reason: reason.clone(),
                    dead_at: *at,
                }),
                _ => None,
            })
            .collect();
        dead.sort_by(|a, b| {
            b.dead_at
                .cmp(&a.dead_at)
                .then(b.envelope.id.cmp(&a.envelope.id))
        });
        dead.truncate(limit);
        Ok(dead)
    }

    async fn replay_dead(&self, filter: &DeadFilter, delay: Duration) -> StoreResult<Vec<String>> {
        let now = now_ms();
        let run_at = now + ms(delay);
        let mut state = self.lock();
        let mut replayed = Vec::new();
        let dead: Vec<Envelope> = state
            .jobs
            .iter()
            .filter(|j| dead_matches(j, filter))
            .map(|j| replay_envelope(&j.envelope, run_at))
            .collect();
        for envelope in &dead {
            state
                .jobs
                .revive(&envelope.id, envelope.clone(), run_at, now);
            replayed.push(envelope.clone());
        }
        for envelope in &replayed {
            let queued = replay_transition(envelope);
            // Whether the record outlived its TTL is decided before the TTL
            // is lifted: an expired record is written anew, not resumed.
            let live = state.live_record(&envelope.id, now).is_some();
            state.record_expiry.remove(&envelope.id);
            match state.records.get_mut(&envelope.id).filter(|_| live) {
                Some(record) => record.apply(queued, now),
                None => {
                    let record = TaskRecord::from_envelope(
                        envelope,
                        TaskState::Queued,
                        Some(REPLAY_DETAIL.to_owned()),
                        now,
                    );
                    state.records.insert(envelope.id.clone(), record);
                }
            }
        }
        drop(state);
        self.published.notify_one();
        Ok(replayed.into_iter().map(|e| e.id).collect())
    }

    async fn purge_dead(&self, filter: &DeadFilter) -> StoreResult<u64> {
        let mut state = self.lock();
        Ok(state.jobs.retain(|j| !dead_matches(j, filter)))
    }
}

#[async_trait]
impl Statistics for MemoryStore {
    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let now = now_ms();
        let state = self.lock();
        let mut stats: HashMap<String, QueueStats> = HashMap::new();
        for job in state.jobs.iter() {
            let s = stats
                .entry(job.envelope.queue.clone())
                .or_insert_with(|| QueueStats {
                    queue: job.envelope.queue.clone(),
                    ..QueueStats::default()
                });
            match job.status {
                Status::Ready if job.run_at <= now => s.ready += 1,
                Status::Ready => s.delayed += 1,
                Status::Leased { .. } => s.running += 1,
                Status::Dead { .. } => s.dead += 1,
            }
        }
        let mut stats: Vec<QueueStats> = stats.into_values().collect();
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(stats)
    }
}

#[async_trait]
impl ResultBackend for MemoryStore {
    async fn create(&self, e: &Envelope) -> StoreResult<()> {
        self.lock().record(e, now_ms());
        Ok(())
    }

    async fn transition(&self, id: &str, t: Transition) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        let record = state
            .live_record(id, now)
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        if record.state == TaskState::Succeeded {
            return Ok(false);
        }
        record.apply(t, now);
        Ok(true)
    }

    async fn set_progress(&self, id: &str, progress: &Progress) -> StoreResult<()> {
        if let Some(record) = self.lock().records.get_mut(id) {
            record.progress = Some(progress.clone());
            record.updated_at = now_ms();
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<TaskRecord>> {
        let state = self.lock();
        if state
            .record_expiry
            .get(id)
            .is_some_and(|at| *at <= now_ms())
        {
            return Ok(None);
        }
        Ok(state.records.get(id).cloned())
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        let now = now_ms();
        let state = self.lock();
        let mut records: Vec<TaskRecord> = state
            .records
            .values()
            .filter(|r| state.record_expiry.get(&r.id).is_none_or(|at| *at > now))
            .filter(|r| filter.matches(r))
            .map(|r| TaskRecord {
                log: Vec::new(),
                history: Vec::new(),
                ..r.clone()
            })
            .collect();
        records.sort_by(|a, b| b.enqueued_at.cmp(&a.enqueued_at).then(b.id.cmp(&a.id)));
        records.truncate(filter.effective_limit());
        Ok(records)
    }

    async fn expire(&self, id: &str, ttl: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        // Reclaim what has already expired.
        let gone: Vec<String> = state
            .record_expiry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for old in gone {
            state.record_expiry.remove(&old);
            state.records.remove(&old);
        }
        if !state.records.contains_key(id) {
            return Ok(false);
        }
        state.record_expiry.insert(id.to_owned(), now + ms(ttl));
        Ok(true)
    }
}

#[async_trait]
impl RateLimits for MemoryStore {
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        now: Millis,
        ttl: Duration,
    ) -> StoreResult<Millis> {
        let mut state = self.lock();
        let next = state
            .rate_slots
            .get(key)
            .filter(|(_, forgotten)| *forgotten > now)
            .map_or(now, |(next, _)| *next);
        let slot = next.max(now);
        let following = slot + ms(interval);
        state
            .rate_slots
            .insert(key.to_owned(), (following, following + ms(ttl)));
        Ok(slot)
    }
}

#[async_trait]
impl QueueControl for MemoryStore {
    async fn set_paused(&self, queue: &str, paused: bool) -> StoreResult<bool> {
        let mut state = self.lock();
        Ok(if paused {
            state.paused.insert(queue.to_owned())
        } else {
            state.paused.remove(queue)
        })
    }

    async fn paused_queues(&self) -> StoreResult<Vec<String>> {
        Ok(self.lock().paused.iter().cloned().collect())
    }

    async fn waiting_ids(
        &self,
        queue: &str,
        ready: bool,
        delayed: bool,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let state = self.lock();
        let now = now_ms();
        let mut waiting: Vec<(Millis, &str)> = state
            .jobs
            .iter()
            .filter(|j| j.envelope.queue == queue && j.status == Status::Ready)
            .filter(|j| if j.run_at <= now { ready } else { delayed })
            .map(|j| (j.run_at, j.envelope.id.as_str()))
            .collect();
        waiting.sort_unstable();
        Ok(waiting
            .into_iter()
            .take(limit)
            .map(|(_, id)| id.to_owned())
            .collect())
    }
}

#[async_trait]
impl Cancellation for MemoryStore {
    async fn withdraw(&self, ids: &[String], now: Millis) -> StoreResult<Vec<Withdrawn>> {
        let mut state = self.lock();
        Ok(ids.iter().map(|id| state.jobs.withdraw(id, now)).collect())
    }

    async fn request_cancel(&self, ids: &[String]) -> StoreResult<()> {
        let mut state = self.lock();
        let now = now_ms();
        state.cancel_requests.retain(|_, lapses| *lapses > now);
        let lapses = now + ms(CANCEL_REQUEST_TTL);
        for id in ids {
            state.cancel_requests.insert(id.clone(), lapses);
        }
        Ok(())
    }

    async fn cancel_requested(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let state = self.lock();
        let now = now_ms();
        Ok(ids
            .iter()
            .filter(|id| state.cancel_requests.get(*id).is_some_and(|l| *l > now))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl PluginStore for MemoryStore {
    async fn put_plugin(&self, digest: &str, bytes: &[u8], tasks: &[TaskSpec]) -> StoreResult<()> {
        let mut state = self.lock();
        state.push_seq += 1;
        let seq = state.push_seq;
        state.plugins.insert(
            digest.to_owned(),
            StoredPlugin {
                bytes: bytes.to_vec(),
                tasks: tasks.to_vec(),
                pushed_at: now_ms(),
                seq,
                compiled: HashMap::new(),
            },
        );
        for spec in tasks {
            state.routes.insert(
                spec.name.clone(),
                TaskRoute {
                    task: spec.name.clone(),
                    digest: digest.to_owned(),
                    spec: spec.clone(),
                },
            );
        }
        state.routes_version += 1;
        Ok(())
    }

    async fn plugin_bytes(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.lock().plugins.get(digest).map(|p| p.bytes.clone()))
    }

    async fn put_compiled(&self, digest: &str, engine: &str, artifact: &[u8]) -> StoreResult<()> {
        if let Some(plugin) = self.lock().plugins.get_mut(digest) {
            plugin.compiled.insert(engine.to_owned(), artifact.to_vec());
        }
        Ok(())
    }

    async fn compiled(&self, digest: &str, engine: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .plugins
            .get(digest)
            .and_then(|p| p.compiled.get(engine).cloned()))
    }

    async fn plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        let state = self.lock();
        let mut plugins: Vec<(u64, PluginInfo)> = state
            .plugins
            .iter()
            .map(|(digest, p)| {
                let mut active_tasks: Vec<String> = state
                    .routes
                    .values()
                    .filter(|r| &r.digest == digest)
                    .map(|r| r.task.clone())
                    .collect();
                active_tasks.sort();
                (
                    p.seq,
                    PluginInfo {
                        digest: digest.clone(),
                        size: p.bytes.len() as u64,
                        tasks: p.tasks.clone(),
                        pushed_at: p.pushed_at,
                        active_tasks,
                    },
                )
            })
            .collect();
        plugins.sort_by_key(|p| std::cmp::Reverse(p.0));
        Ok(plugins.into_iter().map(|(_, p)| p).collect())
    }

    async fn routes(&self) -> StoreResult<Vec<TaskRoute>> {
        let mut routes: Vec<TaskRoute> = self.lock().routes.values().cloned().collect();
        routes.sort_by(|a, b| a.task.cmp(&b.task));
        Ok(routes)
    }

    async fn remove_plugin(&self, digest: &str) -> StoreResult<bool> {
        let mut state = self.lock();
        let existed = state.plugins.remove(digest).is_some();
        let orphaned: Vec<String> = state
            .routes
            .values()
            .filter(|r| r.digest == digest)
            .map(|r| r.task.clone())
            .collect();
        let mut newest_first: Vec<(&String, &StoredPlugin)> = state.plugins.iter().collect();
        newest_first.sort_by_key(|(_, p)| std::cmp::Reverse(p.seq));
        let fallbacks: Vec<(String, Option<TaskRoute>)> = orphaned
            .into_iter()
            .map(|task| {
                let versions = newest_first
                    .iter()
                    .map(|(d, p)| (d.as_str(), p.tasks.as_slice()));
                let route = fallback_route(&task, versions);
                (task, route)
            })
            .collect();
        for (task, route) in fallbacks {
            match route {
                Some(route) => state.routes.insert(task, route),
                None => state.routes.remove(&task),
            };
        }
        state.routes_version += 1;
        Ok(existed)
    }

    async fn routes_version(&self) -> StoreResult<u64> {
        Ok(self.lock().routes_version)
    }
}

/// The versioned-document rule (schedules, workflow runs): a write of
/// version `read` creates the document when `read` is 0 and none is
/// `stored`, else replaces it only if `stored` is still `read`.
fn versioned_write_fits(stored: Option<u64>, read: u64) -> bool {
    match stored {
        None => read == 0,
        Some(version) => read != 0 && version == read,
    }
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn put_schedule(&self, schedule: &Schedule) -> StoreResult<Option<u64>> {
        let mut state = self.lock();
        let stored = state.schedules.get(&schedule.name).map(|s| s.version);
        if !versioned_write_fits(stored, schedule.version) {
            return Ok(None);
        }
        let mut written = schedule.clone();
        written.version = schedule.version + 1;
        state.schedules.insert(written.name.clone(), written);
        Ok(Some(schedule.version + 1))
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        Ok(self.lock().schedules.get(name).cloned())
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        Ok(self.lock().schedules.values().cloned().collect())
    }

    async fn remove_schedule(&self, name: &str) -> StoreResult<bool> {
        Ok(self.lock().schedules.remove(name).is_some())
    }

    async fn due_schedules(&self, now: Millis, limit: usize) -> StoreResult<Vec<Schedule>> {
        let mut due: Vec<Schedule> = self
            .lock()
            .schedules
            .values()
            .filter(|s| s.enabled && s.next_run.is_some_and(|at| at <= now))
            .cloned()
            .collect();
        due.sort_by_key(|s| (s.next_run, s.name.clone()));
        due.truncate(limit);
        Ok(due)
    }
}

/// [`WorkflowStore::put_run`] under the store's lock.
fn put_run_in(state: &mut State, run: &Run) -> Option<u64> {
    let stored = state.runs.get(&run.id).map(|r| r.version);
    if !versioned_write_fits(stored, run.version) {
        return None;
    }
    let mut written = run.clone();
    written.version = run.version + 1;
    state.runs.insert(written.id.clone(), written);
    Some(run.version + 1)
}

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn put_run(&self, run: &Run) -> StoreResult<Option<u64>> {
        Ok(put_run_in(&mut self.lock(), run))
    }

    async fn put_runs(&self, runs: &[Run]) -> StoreResult<Vec<Option<u64>>> {
        let mut state = self.lock();
        Ok(runs.iter().map(|run| put_run_in(&mut state, run)).collect())
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        Ok(self.lock().runs.get(id).cloned())
    }

    async fn get_runs(&self, ids: &[String]) -> StoreResult<Vec<Option<Run>>> {
        let state = self.lock();
        Ok(ids.iter().map(|id| state.runs.get(id).cloned()).collect())
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let mut runs: Vec<Run> = self
            .lock()
            .runs
            .values()
            .filter(|r| filter.workflow.as_ref().is_none_or(|w| *w == r.workflow))
            .filter(|r| filter.state.is_none_or(|s| s == r.state))
            .cloned()
            .collect();
        runs.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        runs.truncate(filter.effective_limit());
        Ok(runs)
    }

    async fn due_runs(&self, now: Millis, limit: usize) -> StoreResult<Vec<Run>> {
        let state = self.lock();
        // Ordered by reference; only the runs returned are cloned (many
        // runs may be due at once, and a run is a whole history).
        let mut due: Vec<&Run> = state
            .runs
            .values()
            .filter(|r| r.wake_at.is_some_and(|at| at <= now))
            .collect();
        due.sort_unstable_by(|a, b| (a.wake_at, &a.id).cmp(&(b.wake_at, &b.id)));
        Ok(due.into_iter().take(limit).cloned().collect())
    }
}

#[async_trait]
impl WorkerRegistry for MemoryStore {
    async fn put_worker(
        &self,
        beat: &crate::presence::WorkerBeat,
        keep: Duration,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut state = self.lock();
        state.workers.retain(|_, (_, until)| *until > now);
        state
            .workers
            .insert(beat.id.clone(), (beat.clone(), now + ms(keep)));
        Ok(())
    }

    async fn list_workers(&self) -> StoreResult<Vec<crate::presence::WorkerBeat>> {
        let now = now_ms();
        Ok(self
            .lock()
            .workers
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(beat, _)| beat.clone())
            .collect())
    }
}

#[async_trait]
impl CanvasStore for MemoryStore {
    async fn put_canvas(&self, id: &str, definition: &str) -> StoreResult<bool> {
        let mut state = self.lock();
        if state.canvases.contains_key(id) {
            return Ok(false);
        }
        state.canvases.insert(id.to_owned(), definition.to_owned());
        Ok(true)
    }

    async fn get_canvas(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(self.lock().canvases.get(id).cloned())
    }
}

#[async_trait]
impl GroupStore for MemoryStore {
    async fn create_group(&self, id: &str, size: u32) -> StoreResult<()> {
        self.lock()
            .groups
            .entry(id.to_owned())
            .or_insert_with(|| Group {
                size,
                ..Group::default()
            });
        Ok(())
    }

    async fn complete_member(
        &self,
        id: &str,
        index: u32,
        result: &serde_json::Value,
    ) -> StoreResult<Option<GroupStatus>> {
        let mut state = self.lock();
        let Some(group) = state.groups.get_mut(id) else {
            return Ok(None);
        };
        group.results.entry(index).or_insert_with(|| result.clone());
        Ok(Some(GroupStatus {
            size: group.size,
            done: group.results.len() as u32,
        }))
    }

    async fn group_results(&self, id: &str) -> StoreResult<Option<Vec<serde_json::Value>>> {
        let state = self.lock();
        Ok(state
            .groups
            .get(id)
            .filter(|g| g.results.len() as u32 >= g.size)
            .map(|g| g.results.values().cloned().collect()))
    }

    async fn claim_chord(&self, id: &str) -> StoreResult<bool> {
        let mut state = self.lock();
        Ok(match state.groups.get_mut(id) {
            Some(group) if !group.claimed => {
                group.claimed = true;
                true
            }
            _ => false,
        })
    }
}

#[async_trait]
impl LockStore for MemoryStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        match state.locks.get(name) {
            Some((holder, until)) if *until > now && holder != owner => Ok(false),
            _ => {
                state
                    .locks
                    .insert(name.to_owned(), (owner.to_owned(), now + ms(ttl)));
                Ok(true)
            }
        }
    }

    async fn renew(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        match state.locks.get_mut(name) {
            Some((holder, until)) if *until > now && holder == owner => {
                *until = now + ms(ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, name: &str, owner: &str) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        match state.locks.get(name) {
            Some((holder, until)) if *until > now && holder == owner => {
                state.locks.remove(name);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        let now = now_ms();
        Ok(self
            .lock()
            .locks
            .get(name)
            .filter(|(_, until)| *until > now)
            .map(|(owner, _)| owner.clone()))
    }
}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn take_quota(&self, key: &str, n: u64, limit: u64, ttl: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        let used = match state.quotas.get(key) {
            Some((used, until)) if *until > now => *used,
            _ => 0,
        };
        if used.saturating_add(n) > limit {
            return Ok(false);
        }
        state
            .quotas
            .insert(key.to_owned(), (used + n, now + ms(ttl)));
        Ok(true)
    }

    async fn quota_used(&self, key: &str) -> StoreResult<u64> {
        let now = now_ms();
        Ok(self
            .lock()
            .quotas
            .get(key)
            .filter(|(_, until)| *until > now)
            .map_or(0, |(used, _)| *used))
    }
}
